"""Tests for the audit: loaders (shipped, local, ShareGPT), creative slice, classifiers, labels, agreement."""
import json
import math

import pandas as pd
import pytest

from cqa_utils import audit as A
from cqa_utils import audit_labels as L
from cqa_utils import audit_sources as S
from cqa_utils.audit_registry import ROLES, SOURCES
from cqa_utils.sharegpt import INSTALL, PACKAGE

SHARED = S.default_local_root()
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared datasets not found at {SHARED} (see DESIGN.md, Data)")

# Record counts stated in each dataset's PROVENANCE.md (main file of the registry entry).
PROVENANCE_COUNTS = {
    "self_instruct_seed_tasks": 175, "self_instruct_user_oriented": 252, "alpaca_eval": 805,
    "vicuna_bench": 80, "mt_bench": 80, "koala_test_set": 180, "wizardlm_testset": 218,
    "lima": 1029, "oasst_prompt_lottery_en": 250, "eqbench_creative_writing": 19,
    "writingbench_length_subset": 222, "hanna_story_eval": 576,
}


@pytest.fixture(scope="module")
def taxonomy():
    return A.load_taxonomy()


needs_sharegpt = pytest.mark.skipif(
    __import__("importlib").util.find_spec(PACKAGE) is None, reason=f"ShareGPT not installed: {INSTALL}")


@pytest.fixture(scope="module")
def frames():
    """Every source as the audit reads it by default: the shipped copy (+ ShareGPT's package)."""
    if __import__("importlib").util.find_spec(PACKAGE) is None:
        pytest.skip(f"ShareGPT not installed: {INSTALL}")
    return {n: S.load_source(n) for n in SOURCES}


@pytest.fixture(scope="module")
def labels(frames):
    """The adjudicated hand labels with their records' text, at the headline bar."""
    sample = L.load_sample()
    return L.attach_text(L.final_labels(L.load_labels(sample=sample), sample), frames)


@needs_shared
@pytest.mark.parametrize("name", sorted(PROVENANCE_COUNTS))
def test_loader_matches_provenance_count_with_unique_ids(name):
    df = S.load_source(name, "local", SHARED)
    assert list(df.columns) == ["dataset", "record_id", "instruction", "response", "category",
                                "rubric"]
    assert len(df) == PROVENANCE_COUNTS[name]
    assert df.record_id.is_unique
    assert (df.instruction.str.len() > 0).all()


@needs_shared
def test_joined_responses_are_present_where_provenance_says():
    assert (S.load_source("vicuna_bench", "local", SHARED).response != "").all()
    assert (S.load_source("oasst_prompt_lottery_en", "local", SHARED).response != "").all()
    mt = S.load_source("mt_bench", "local", SHARED)
    assert (mt.response != "").sum() == 30  # 30 GPT-4 reference answers (PROVENANCE)


def test_registry_covers_every_dataset_of_the_brief_and_tags_its_role():
    assert set(SOURCES) == set(PROVENANCE_COUNTS) | {"sharegpt"}
    assert {e["role"] for e in SOURCES.values()} == set(ROLES)
    training = {n for n, e in SOURCES.items() if e["role"] == "training"}
    assert training == {"lima", "self_instruct_seed_tasks", "oasst_prompt_lottery_en", "sharegpt"}
    assert all(isinstance(e["noncommercial"], bool) and e["licence"] for e in SOURCES.values())


def test_the_shipped_copy_is_self_describing_and_never_holds_sharegpt():
    manifest = S.shipped_manifest()["datasets"]
    assert "sharegpt" not in manifest                       # unclear licence: read at run time only
    assert set(manifest) == set(PROVENANCE_COUNTS)
    for name, info in manifest.items():
        assert info["n_records"] == PROVENANCE_COUNTS[name]
        assert (S.SHIPPED_ROOT / "provenance" / f"{name}.md").is_file()
        assert info["noncommercial"] == SOURCES[name]["noncommercial"]
        df = S.load_source(name)                             # the default source: shipped
        assert df.attrs["n_records"] == PROVENANCE_COUNTS[name] and len(df) == info["shipped_records"]
        assert len(S.creative_slice(df)) == info["creative_records"]


@needs_shared
def test_the_shipped_copy_is_the_local_records_and_rebuilds_byte_identically(tmp_path):
    sample = L.load_sample()
    keep = {d: set(g.record_id) for d, g in sample.groupby("dataset")}
    S.pack_records(keep, SHARED, tmp_path)
    for name, info in S.shipped_manifest()["datasets"].items():
        assert (tmp_path / info["file"]).read_bytes() == (S.SHIPPED_ROOT / info["file"]).read_bytes(), name
        local = S.load_source(name, "local", SHARED).set_index("record_id")
        shipped = S.load_source(name).set_index("record_id")
        pd.testing.assert_frame_equal(local.loc[shipped.index, shipped.columns], shipped, check_dtype=False)


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    folder = tmp_path / "koala_test_set"
    folder.mkdir()
    (folder / "koala_test_set.jsonl").write_text(
        '{"id": "k0", "prompt": "fine"}\n{"id": "k1", "prompt": broken}\n')
    with pytest.raises(ValueError, match=r"koala_test_set\.jsonl:2: \(line\): malformed JSON"):
        S.load_source("koala_test_set", "local", tmp_path)


def test_missing_file_names_path_and_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"koala_test_set\.jsonl.*local_root="):
        S.load_source("koala_test_set", "local", tmp_path)
    with pytest.raises(FileNotFoundError, match="shipped audit records are missing.*cqa audit-pack"):
        S.load_source("koala_test_set", shipped_root=tmp_path)


def test_unknown_source_and_missing_hub_copy_are_clear_errors():
    with pytest.raises(ValueError, match="valid:"):
        S.load_source("alpaca")
    with pytest.raises(ValueError, match="no hub copy"):
        S.load_source("koala_test_set", source="hub")
    with pytest.raises(ValueError, match="'shipped', 'local' or 'hub'"):
        S.load_source("koala_test_set", source="disk")


def test_creative_slice_uses_category_then_regex():
    df = pd.DataFrame([
        ("vicuna_bench", "1", "Write a travel blog post", "writing"),
        ("vicuna_bench", "2", "Write a poem about tax law", "generic"),  # category decides
        ("hanna_story_eval", "3", "The Little Black Box", "Llama-7b"),
        ("other", "4", "Write a haiku about rain", ""),
        ("other", "5", "Tell me a story about a dragon", ""),
        ("other", "6", "Plot a histogram with matplotlib", ""),
        ("other", "7", "who does lady gaga play in american horror story", ""),
    ], columns=["dataset", "record_id", "instruction", "category"])
    got = S.creative_slice(df).set_index("record_id").slice_rule.to_dict()
    assert got == {"1": "category:writing", "3": "dataset:all", "4": "regex:haiku",
                   "5": "regex:story"}


def test_slice_sizes_count_per_dataset():
    df = pd.DataFrame({"dataset": ["a", "a", "b"], "record_id": ["1", "2", "3"],
                       "instruction": ["Write a sonnet", "What is 2+2?", "Sum a list"],
                       "category": ["", "", ""]})
    sizes = S.slice_sizes(df).set_index("dataset")
    assert sizes.loc["a", "n"] == 2 and sizes.loc["a", "n_creative"] == 1
    assert sizes.loc["b", "n_creative"] == 0


@pytest.mark.parametrize("label,instruction,cue,level", [
    ("craft", "Write a sonnet about the sea.", "fixed_form:sonnet", 1),
    ("craft", "Tell it in the style of Raymond Carver.", "style_voice:in the style of", 2),
    ("audience", "Write a bedtime poem for my daughter.", "named_reader:for my daughter", 1),
    ("audience", "Write an engaging opening for a blog post.", "reader_effect:engaging", 2),
    ("reality", "Write a story set in 1920s Paris.", "setting:set in", 1),
    ("reality", "Is it scientifically plausible that a dragon could fly?", "plausibility:", 2),
    ("reality", "What if the Roman Empire had never fallen?", "counterfactual:what if", 2),
])
def test_rule_classifier_fires_records_the_cue_and_its_level(taxonomy, label, instruction, cue, level):
    df = pd.DataFrame({"instruction": [instruction], "response": [""]})
    taught, named = A.classify_rules(df, taxonomy), A.classify_rules(df, taxonomy, bar=1)
    assert taught.loc[0, f"{label}_level"] == level
    assert cue in taught.loc[0, f"{label}_cues"]
    assert (taught.loc[0, label], named.loc[0, label]) == (int(level == 2), 1)


def test_the_same_kind_of_fact_sits_at_the_same_level_for_every_type(taxonomy):
    """The v2 symmetry: a genre alone, a reader alone and a setting alone are all level 1."""
    df = pd.DataFrame({"instruction": ["Write a horror story.", "Write a story for my son.",
                                       "Write a story set on Mars."], "response": ""})
    out = A.classify_rules(df, taxonomy)
    assert [out.loc[0, "craft_level"], out.loc[1, "audience_level"], out.loc[2, "reality_level"]] == [1, 1, 1]


def test_rule_classifier_is_silent_on_plain_questions_and_respects_scope(taxonomy):
    df = pd.DataFrame({"instruction": ["What is 2 + 2?"], "response": ["4, a haiku of sums"]})
    out = A.classify_rules(df, taxonomy, bar=1)
    assert out.loc[0, ["craft", "audience", "reality"]].tolist() == [0, 0, 0]  # haiku cue is
    assert out.loc[0, "craft_cues"] == ""  # instruction-scoped: the response cannot fire it


def test_a_level_one_cue_must_read_the_instruction_only(tmp_path):
    tax = {"labels": {k: {"definition": "d", "cues": [{"id": "c1", "level": 1, "scope": "any",
                                                       "pattern": "x"}]} for k in A.LABELS}}
    path = tmp_path / "tax.yaml"
    path.write_text(json.dumps(tax))
    with pytest.raises(ValueError, match=r"craft\.c1: a level-1 \(named\) cue reads the instruction only"):
        A.load_taxonomy(path)


def test_taxonomy_bad_pattern_names_label_and_cue(tmp_path):
    bad = {"labels": {k: {"definition": "d", "cues": [{"id": "c1", "pattern": "("}]}
                      for k in A.LABELS}}
    path = tmp_path / "tax.yaml"
    path.write_text(json.dumps(bad))  # JSON is valid YAML
    with pytest.raises(ValueError, match=r"craft\.c1: bad pattern"):
        A.load_taxonomy(path)


def _textbook_wilson(k, n, z=1.959963984540054):
    p = k / n
    d = 1 + z * z / n
    c = p + z * z / (2 * n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (c - h) / d, (c + h) / d


@pytest.mark.parametrize("k,n,expected", [
    (0, 10, (0.0, 0.2775)),       # published Wilson 95% interval for 0/10
    (5, 10, (0.2366, 0.7634)),    # and for 5/10
    (13, 40, None),
])
def test_wilson_interval_matches_textbook_formula(k, n, expected):
    lo, hi = A.wilson_interval(k, n)
    tlo, thi = _textbook_wilson(k, n)
    assert lo == pytest.approx(max(0.0, tlo), abs=1e-12)
    assert hi == pytest.approx(thi, abs=1e-12)
    if expected:
        assert (lo, hi) == pytest.approx(expected, abs=1e-4)
    assert math.isnan(A.wilson_interval(0, 0)[0])


def test_agreement_equals_sklearn_on_a_toy_case():
    from sklearn.metrics import cohen_kappa_score, f1_score, precision_score, recall_score
    gold = pd.DataFrame({"craft": [1, 1, 0, 0, 1, 0], "audience": [0, 1, 0, 1, 1, 0],
                         "reality": [0, 0, 0, 1, 0, 1]})
    pred = pd.DataFrame({"craft": [1, 0, 0, 1, 1, 0], "audience": [0, 1, 1, 1, 0, 0],
                         "reality": [0, 0, 0, 1, 1, 1]})
    got = A.agreement(gold, pred).set_index("label")
    for name in A.LABELS:
        g, p = gold[name], pred[name]
        assert got.loc[name, "precision"] == pytest.approx(precision_score(g, p))
        assert got.loc[name, "recall"] == pytest.approx(recall_score(g, p))
        assert got.loc[name, "f1"] == pytest.approx(f1_score(g, p))
        assert got.loc[name, "kappa"] == pytest.approx(cohen_kappa_score(g, p))
        assert got.loc[name, "n"] == 6


def test_type_shares_give_share_and_interval_per_group():
    df = pd.DataFrame({"dataset": ["a"] * 4 + ["b"] * 2, "craft": [1, 1, 1, 0, 0, 0],
                       "audience": [0, 0, 0, 1, 0, 0], "reality": [0] * 6})
    got = A.type_shares(df).set_index(["dataset", "label"])
    assert got.loc[("a", "craft"), ["n", "k", "share"]].tolist() == [4, 3, 0.75]
    lo, hi = A.wilson_interval(3, 4)
    assert got.loc[("a", "craft"), "ci_low"] == pytest.approx(lo)
    assert got.loc[("b", "craft"), "ci_high"] == pytest.approx(A.wilson_interval(0, 2)[1])


def test_every_label_resolves_to_a_real_record_and_both_labellers_labelled_all(labels):
    raw = L.load_labels()
    assert set(raw.labeller) == {"A", "B", L.FINAL}
    assert raw.groupby("labeller").size().nunique() == 1          # every labeller saw every item
    sample = L.load_sample()
    assert set(sample.dataset) == set(SOURCES)
    per_dataset = sample[sample.slice_rule != ""].groupby("dataset").size()
    assert (per_dataset >= 7).all(), per_dataset
    assert len(labels) == len(sample) and labels.instruction.notna().all()
    # nothing from ShareGPT is committed: its rows carry a hash, no excerpt
    assert (sample[sample.dataset == "sharegpt"].instruction_excerpt == "").all()


@needs_shared
@needs_sharegpt
def test_labelled_sample_is_the_seeded_draw():
    drawn = S.draw_label_sample(S.load_all("local", SHARED), seed=0)
    sample = L.load_sample()
    assert sorted(zip(drawn.dataset, drawn.record_id, drawn.slice_rule)) == \
        sorted(zip(sample.dataset, sample.record_id, sample.slice_rule))


def _labels_file(tmp_path, rows):
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("change,message", [
    (dict(craft=3), r"labels\.jsonl:1: field 'craft' must be a level in \[0, 1, 2\], got 3"),
    (dict(item="r999"), r"labels\.jsonl:1: item 'r999' is not in the label sample"),
    (dict(labeller="C"), r"labels\.jsonl:1: labeller 'C' is not registered"),
])
def test_a_bad_label_line_names_file_line_and_field(tmp_path, change, message):
    sample = pd.DataFrame({"item": ["r001"], "dataset": ["d"], "record_id": ["1"]})
    base = dict(item="r001", labeller=L.FINAL, craft=2, audience=0, reality=1, rationale="", labelled_at="2026-12-02")
    who = {"A": {}, L.FINAL: {}}
    with pytest.raises(ValueError, match=message):
        L.load_labels(_labels_file(tmp_path, [dict(base, **change)]), sample, who)
    with pytest.raises(ValueError, match=r"labels\.jsonl:2: item 'r001' labelled twice by 'adjudicated' \(line 1\)"):
        L.load_labels(_labels_file(tmp_path, [base, base]), sample, who)
    with pytest.raises(ValueError, match=r"1 item\(s\) without a 'adjudicated' label"):
        L.load_labels(_labels_file(tmp_path, [dict(base, labeller="A")]), sample, who)


def test_labeller_agreement_matches_sklearn():
    from sklearn.metrics import cohen_kappa_score
    a = [2, 2, 0, 1, 0, 2, 1, 0, 0, 2]
    b = [2, 1, 0, 1, 0, 2, 2, 0, 1, 2]
    rows = [dict(item=f"r{i}", labeller=who, craft=x, audience=x, reality=y)
            for i, (x, y) in enumerate(zip(a, b)) for who, x, y in (("A", x, x), ("B", y, y))]
    got = L.labeller_agreement(pd.DataFrame(rows)).set_index("label").loc["craft"]
    assert got.exact == pytest.approx(0.7)
    assert got.kappa_taught == pytest.approx(cohen_kappa_score([v == 2 for v in a], [v == 2 for v in b]))
    assert got.kappa_weighted == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"))
    assert got.kappa_named == pytest.approx(cohen_kappa_score([v >= 1 for v in a], [v >= 1 for v in b]))


def test_cross_validated_learned_classifier_returns_per_label_metrics(labels):
    oof = A.cross_val_predict_learned(labels, folds=3, seed=0)  # 3 folds: faster, same check
    assert list(oof.index) == list(labels.index)
    assert set(oof[list(A.LABELS)].stack().unique()) <= {0, 1}
    table = A.agreement(labels, oof)
    assert list(table.label) == list(A.LABELS)
    assert table[["precision", "recall", "f1"]].apply(lambda c: c.between(0, 1)).all().all()


def test_learned_classifier_refuses_labels_without_text():
    bare = pd.DataFrame({"craft": [1], "audience": [0], "reality": [0]})
    with pytest.raises(ValueError, match="attach_text"):
        A.classify_learned(bare, bare)


def test_rule_classifier_runs_on_annotation_records(tmp_path, taxonomy):
    from conftest import annotation, write_jsonl

    from cqa_utils.data import load_annotations

    records = load_annotations(write_jsonl(tmp_path / "ann.jsonl", [annotation(1), annotation(2)]))
    frame = A.annotation_frame(records)
    assert list(frame.record_id) == ["t-001", "t-002"]
    assert "Small physical signs hold the wait." in frame.response[0] and "The kettle ticks" in frame.instruction[0]
    out = A.classify_annotations(records, taxonomy)
    assert list(out.dataset.unique()) == ["cqa_annotations"] and len(out) == 2
    assert set(out[list(A.LABELS)].stack().unique()) <= {0, 1}


@needs_sharegpt
def test_the_audit_runs_with_nothing_beside_the_clone(tmp_path):
    """A clone anywhere: no ../shared/datasets at all -- the shipped copy is enough."""
    from cqa_utils.config import load_config
    from cqa_utils.stages.data_audit import run_data_audit
    empty = tmp_path / "no-shared-datasets"
    empty.mkdir()
    cfg = load_config("smoke", {"run.name": "no-shared", "run.results_dir": str(tmp_path / "results"),
                                "audit.local_root": str(empty), "audit.n_boot": 200})
    assert cfg.audit.source == "shipped"
    outputs = run_data_audit(cfg)
    read = json.loads(outputs["sources_read"].read_text())
    assert {r["source"] for n, r in read.items() if n != "sharegpt"} == {"shipped"}
    conclusion = json.loads(outputs["conclusion"].read_text())
    assert set(conclusion) == {"training", "evaluation"} and "corrected for classifier error" in conclusion["training"]
    shares = pd.read_csv(outputs["shares"])
    assert {"mean:training", "mean:evaluation"} <= set(shares.group) and shares.share.between(0, 1).all()
