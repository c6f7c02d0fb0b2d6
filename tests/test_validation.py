"""``cqa validate``'s benchmark design rules: each rejects a bad record by file, line and field."""
import pytest
from conftest import PROJECT_ROOT, annotation, write_jsonl

from cqa_utils.data import DataError
from cqa_utils.overlap import content_words, overlap_share, shared_words
from cqa_utils.validation import baseline_metric_check, leakage, validate_data_dir

BRIEF = {"intent": "make patience felt without ever stating it", "audience": "adult readers of quiet fiction",
         "reality": "winter physics: ice forms below zero"}
X = "The ferry nosed out into brown water while gulls kept pace beside the rail, and Ada counted the pilings."
X_DEGRADED = "The ferry flew up above brown water while gulls kept pace beside the rail, and Ada counted the clouds."
FACT_X = ("River ferries carry passengers and cars across wide estuaries on fixed routes, and most of them run "
          "on diesel engines.")


def pair(i: int = 1, **literary) -> list[dict]:
    """A literary item and its factual partner that meet every design rule."""
    lit = {"id": f"lit-{i:02d}", "group": "literary", "lang": "en", "pair_id": f"pair-{i:02d}",
           "context": "Opening of a story.", "constraints": dict(BRIEF), "x": X, "x_degraded": X_DEGRADED,
           "degraded_breaks": "reality", "topics": ["river ferry"], "names": ["Ada"]}
    fact = {"id": f"fact-{i:02d}", "group": "factual", "lang": "en", "pair_id": f"pair-{i:02d}",
            "context": "From a guide to transport.", "topics": ["river ferry"], "names": [],
            "constraints": {"intent": "explain a service plainly", "audience": "visitors new to the region",
                            "reality": "only facts that hold for most countries"}, "x": FACT_X}
    return [lit | literary, fact]


def data_dir(tmp_path, items, annotations=None):
    for folder in ("annotations", "benchmark"):
        (tmp_path / folder).mkdir()
    write_jsonl(tmp_path / "annotations" / "a.jsonl", annotations or [annotation(1)])
    write_jsonl(tmp_path / "benchmark" / "b.jsonl", items)
    return tmp_path


def problems(tmp_path, items, annotations=None) -> list[str]:
    with pytest.raises(DataError) as err:
        validate_data_dir(data_dir(tmp_path, items, annotations))
    return err.value.problems


def test_a_benchmark_that_meets_every_rule_validates(tmp_path):
    report = validate_data_dir(data_dir(tmp_path, pair()))
    entry = report[str(tmp_path / "benchmark" / "b.jsonl")]
    assert entry["records"] == 2 and entry["baseline_metric_check"] == 0.5 and entry["exempt"] is None


def test_the_design_rules_ignore_extra_fields(tmp_path):
    ann = annotation(1, cast=["Ada"])  # the items' character, outside the annotation's names: no reuse
    items = [item | {"draft": ann["passage"]} for item in pair()]  # an annotation's passage, outside x: no leak
    assert validate_data_dir(data_dir(tmp_path, items, [ann]))


def test_constraints_that_restate_x_are_refused_naming_the_shared_words(tmp_path):
    found = problems(tmp_path, pair(constraints=dict(BRIEF, reality="a river ferry among gulls")))
    assert any(p.startswith(f"{tmp_path}/benchmark/b.jsonl:1: constraints: y repeats") and "'gull'" in p
               for p in found), found


def test_a_name_or_topic_shared_with_an_annotation_names_both_records(tmp_path):
    ann = annotation(1, names=["Ada"], topics=["River ferries"])
    found = problems(tmp_path, pair(), [ann])
    assert f"{tmp_path}/benchmark/b.jsonl:1: names: 'Ada' is also a name in annotation t-001" in found
    assert any(p.startswith(f"{tmp_path}/benchmark/b.jsonl:2: topics: 'river ferry' is annotation t-001")
               for p in found), found  # plural and case differ: tags are compared stemmed


def test_a_degradation_that_word_matching_could_spot_is_refused(tmp_path):
    more_brief_words = X_DEGRADED.replace("the clouds", "patience, quiet winter ice and zero")
    found = problems(tmp_path, pair(x_degraded=more_brief_words))
    assert any(":1: x_degraded: shares +" in p for p in found), found


def test_a_degradation_of_another_length_is_refused(tmp_path):
    found = problems(tmp_path, pair(x_degraded=X_DEGRADED + " Then it sank, slowly, into the brown river."))
    assert any(":1: x_degraded: 27 words vs 19 in x" in p for p in found), found


def test_file_level_rules_name_the_file(tmp_path):
    # x now shares one brief word more than x_degraded: allowed per item, but then the overlap baseline
    # favours every intact text, and the literary group's overlap is above the factual one's
    found = problems(tmp_path, pair(x=X.replace("brown water", "winter water")))
    where = f"{tmp_path}/benchmark/b.jsonl: (file): "
    assert any(p.startswith(where + "the word-overlap baseline favours the intact text in 100%") for p in found), found
    assert any(p.startswith(where + "mean overlap literary 0.091 vs factual 0.000") for p in found), found


def test_a_factual_partner_of_another_length_is_refused(tmp_path):
    lit, fact = pair()
    found = problems(tmp_path, [lit, fact | {"x": FACT_X + " " + FACT_X}])
    assert any(":2: x: 40 words vs 19 in literary partner lit-01" in p for p in found), found


def test_a_manifest_exempts_a_file_from_the_design_rules_only_with_a_reason(tmp_path):
    restating = pair(constraints=dict(BRIEF, reality="a river ferry among gulls"))
    root = data_dir(tmp_path, restating)
    (root / "benchmark" / "manifest.yaml").write_text("files:\n  b.jsonl:\n    exempt_from_design_rules: true\n")
    with pytest.raises(ValueError, match="manifest.yaml: files.b.jsonl: needs a 'reason'"):
        validate_data_dir(root)
    (root / "benchmark" / "manifest.yaml").write_text(
        "files:\n  b.jsonl:\n    exempt_from_design_rules: true\n    reason: kept for comparison\n")
    assert validate_data_dir(root)[str(root / "benchmark" / "b.jsonl")]["exempt"] == "kept for comparison"


def test_leakage_check_finds_a_shared_8_gram_after_normalization():
    from cqa_utils.data import Annotation, BenchmarkItem, Constraints, CotStep, Judgment

    c = Constraints("a", "b", "c")
    ann = Annotation("a1", "en", "poetry", "", c, "The river, slow and brown, carried the bridge's shadow all day.",
                     (CotStep("craft", "t"),), Judgment("works", "s"))
    leaky = BenchmarkItem("b1", "factual", "en", "", c, "Locals said THE RIVER slow and brown carried the bridge's shadow.")
    clean = BenchmarkItem("b2", "factual", "en", "", c, "The river was slow; the bridge was old.")
    problems = leakage([ann], [leaky, clean])
    assert len(problems) == 1 and "b1: x: shares" in problems[0] and "a1" in problems[0]


def test_leakage_covers_contexts_and_constraints_too():
    from cqa_utils.data import Annotation, BenchmarkItem, Constraints, CotStep, Judgment

    ann = Annotation("a", "en", "poetry", "A keeper winds the clockwork weights every four hours at night.",
                     Constraints("i", "a", "r"), "p", (CotStep("craft", "c"),), Judgment("works", "s"))
    item = BenchmarkItem("b", "literary", "en", "ctx", Constraints(
        "i", "a", "the keeper winds the clockwork weights every four hours, always"), "x")
    assert leakage([ann], [item]) == [
        "benchmark item b: constraints: shares 1 8-gram(s) with annotation a, e.g. "
        "'keeper winds the clockwork weights every four hours'"]


def test_overlap_counts_stems_once_and_ignores_stop_words():
    assert content_words("The keepers were keeping a keeper's log") == {"keeper", "keep", "log"}
    assert shared_words("Keepers trimmed the wicks in 1820.", "a keeper, 1820") == ["1820", "keeper"]
    assert overlap_share("Keepers trimmed the wicks in 1820.", "a keeper, 1820") == pytest.approx(2 / 4)
    assert overlap_share("the and of", "anything") == 0.0  # no content words at all


def test_baseline_metric_check_counts_ties_half():
    from cqa_utils.data import BenchmarkItem, Constraints

    y = Constraints("ice", "winter", "zero")
    items = [BenchmarkItem("a", "literary", "en", "", y, "ice and winter", "ice only", "reality"),
             BenchmarkItem("b", "literary", "en", "", y, "ice only", "ice only", "reality")]
    assert baseline_metric_check(items) == (0.75, 1, 1, 2)


def test_shipped_data_meets_every_rule():
    report = validate_data_dir(PROJECT_ROOT / "data")
    v2 = report[str(PROJECT_ROOT / "data" / "benchmark" / "benchmark_v2.jsonl")]
    assert v2["records"] >= 96 and v2["exempt"] is None
    assert 0.40 <= v2["baseline_metric_check"] <= 0.60
