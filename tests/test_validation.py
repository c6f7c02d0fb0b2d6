"""``cqa validate``: what it takes (data folder, one file, a folder of files) and the benchmark design rules,
each rejecting a bad record by file, line and field."""
import shutil

import pytest
from conftest import PROJECT_ROOT, annotation, benchmark_item, write_jsonl

from cqa_utils.data import DataError
from cqa_utils.overlap import content_words, overlap_share, shared_words
from cqa_utils.cli import main as cqa
from cqa_utils.validation import baseline_metric_check, leakage, validate_path

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
        validate_path(data_dir(tmp_path, items, annotations))
    return err.value.problems


def test_a_benchmark_that_meets_every_rule_validates(tmp_path):
    report = validate_path(data_dir(tmp_path, pair()))
    entry = report[str(tmp_path / "benchmark" / "b.jsonl")]
    assert entry["records"] == 2 and entry["baseline_metric_check"] == 0.5 and entry["exempt"] is None


def test_the_design_rules_ignore_extra_fields(tmp_path):
    ann = annotation(1, cast=["Ada"])  # the items' character, outside the annotation's names: no reuse
    items = [item | {"draft": ann["passage"]} for item in pair()]  # an annotation's passage, outside x: no leak
    assert validate_path(data_dir(tmp_path, items, [ann]))


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
        validate_path(root)
    (root / "benchmark" / "manifest.yaml").write_text(
        "files:\n  b.jsonl:\n    exempt_from_design_rules: true\n    reason: kept for comparison\n")
    assert validate_path(root)[str(root / "benchmark" / "b.jsonl")]["exempt"] == "kept for comparison"


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
    report = validate_path(PROJECT_ROOT / "data")
    v2 = report[str(PROJECT_ROOT / "data" / "benchmark" / "benchmark_v2.jsonl")]
    assert v2["records"] >= 96 and v2["exempt"] is None
    assert 0.40 <= v2["baseline_metric_check"] <= 0.60


V2 = PROJECT_ROOT / "data" / "benchmark" / "benchmark_v2.jsonl"  # 96 items


def test_a_single_benchmark_file_is_told_by_its_fields_and_checked_against_the_design_rules(tmp_path, capsys):
    mine = shutil.copy(V2, tmp_path / "my_items.jsonl")  # a folder name that says nothing
    entry = validate_path(mine)[str(mine)]
    assert (entry["kind"], entry["records"], entry["exempt"]) == ("benchmark", 96, None)
    assert cqa(["validate", str(mine)]) == 0
    out = capsys.readouterr().out
    assert f"ok    96 records  {mine}  (benchmark)" in out
    assert "leakage and no-reuse not checked: no annotation file was given" in out
    write_jsonl(mine, pair(constraints=dict(BRIEF, reality="a river ferry among gulls")))
    with pytest.raises(DataError, match=r"my_items.jsonl:1: constraints: y repeats"):
        validate_path(mine)


def test_a_single_annotations_file_is_told_by_its_fields(tmp_path, capsys):
    mine = write_jsonl(tmp_path / "mine.jsonl", [annotation(1), annotation(2, benchmark_note="x")])
    assert validate_path(mine) == {str(mine): {"kind": "annotations", "records": 2}}
    assert cqa(["validate", str(mine)]) == 0
    assert "no benchmark file was given" in capsys.readouterr().out
    write_jsonl(mine, [annotation(1), annotation(2, genre="opera")])
    with pytest.raises(DataError, match=r"mine.jsonl:2: genre: 'opera' is not one of"):
        validate_path(mine)


def test_a_flat_folder_validates_each_file_by_its_kind_and_checks_leakage_between_them(tmp_path):
    ann = annotation(1)
    write_jsonl(tmp_path / "notes.jsonl", [ann])
    write_jsonl(tmp_path / "items.jsonl", pair())
    report = validate_path(tmp_path)
    assert {name: entry["kind"] for name, entry in report.items()} == {
        str(tmp_path / "items.jsonl"): "benchmark", str(tmp_path / "notes.jsonl"): "annotations"}
    lit, fact = pair()
    write_jsonl(tmp_path / "items.jsonl", [lit, fact | {"context": "Quoted: " + ann["passage"]}])
    with pytest.raises(DataError, match=r"benchmark item fact-01: context: shares \d+ 8-gram"):
        validate_path(tmp_path)


def test_a_folder_without_jsonl_files_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no \*.jsonl file in it, nor in its annotations/ or benchmark/"):
        validate_path(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        validate_path(tmp_path / "absent.jsonl")


def test_a_file_whose_kind_cannot_be_told_names_the_file_and_the_kind_flag(tmp_path, capsys):
    shared_only = {k: v for k, v in benchmark_item(1).items() if k not in ("group", "x", "x_degraded", "degraded_breaks")}
    path = write_jsonl(tmp_path / "mine.jsonl", [shared_only])
    assert cqa(["validate", str(path)]) == 1
    assert (f"{path}: (file): cannot tell whether it holds annotations or benchmark items: no record has an "
            "annotation's fields (genre, passage, cot, judgment) or a benchmark item's (group, x); "
            "state it with --kind annotations or --kind benchmark") in capsys.readouterr().err
    assert cqa(["validate", str(path), "--kind", "benchmark"]) == 1  # now checked as a benchmark: what is missing
    err = capsys.readouterr().err
    assert f"{path}:1: group: missing required field" in err and f"{path}:1: x: missing required field" in err
    assert "2 problem(s)" in err


def test_a_file_with_both_kinds_of_record_is_refused_as_undecidable(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [annotation(1), benchmark_item(1)])
    with pytest.raises(DataError, match=r"mixed.jsonl: \(file\): cannot tell .*annotation fields \(genre, passage, "
                                        r"cot, judgment\) and benchmark fields \(group, x\) alike"):
        validate_path(path)
    with pytest.raises(DataError, match=r"mixed.jsonl:2: passage: missing required field"):  # stated: decided
        validate_path(path, kind="annotations")


def test_a_folder_name_decides_the_kind_and_a_stated_kind_may_not_contradict_it(tmp_path):
    (tmp_path / "benchmark").mkdir()
    path = write_jsonl(tmp_path / "benchmark" / "b.jsonl", pair())
    assert validate_path(path)[str(path)]["kind"] == "benchmark"
    with pytest.raises(DataError, match=r"b.jsonl: \(file\): stated kind 'annotations' contradicts its folder benchmark/"):
        validate_path(path, kind="annotations")


def test_a_single_exempt_benchmark_file_keeps_its_exemption_from_the_manifest_beside_it():
    v1 = PROJECT_ROOT / "data" / "benchmark" / "benchmark_v1.jsonl"
    assert validate_path(v1)[str(v1)]["exempt"]
