"""Tests for cqa_utils.audit: loaders, creative slice, classifiers, agreement, shares."""
import json
import math

import pandas as pd
import pytest

from cqa_utils import audit as A
from cqa_utils import audit_sources as S

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


@pytest.fixture(scope="module")
def labels():
    if not SHARED.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED}")
    return A.attach_text(A.load_labels(), local_root=SHARED)


@needs_shared
@pytest.mark.parametrize("name", sorted(PROVENANCE_COUNTS))
def test_loader_matches_provenance_count_with_unique_ids(name):
    df = S.load_source(name, local_root=SHARED)
    assert list(df.columns) == ["dataset", "record_id", "instruction", "response", "category",
                                "rubric"]
    assert len(df) == PROVENANCE_COUNTS[name]
    assert df.record_id.is_unique
    assert (df.instruction.str.len() > 0).all()


@needs_shared
def test_joined_responses_are_present_where_provenance_says():
    assert (S.load_source("vicuna_bench", local_root=SHARED).response != "").all()
    assert (S.load_source("oasst_prompt_lottery_en", local_root=SHARED).response != "").all()
    mt = S.load_source("mt_bench", local_root=SHARED)
    assert (mt.response != "").sum() == 30  # 30 GPT-4 reference answers (PROVENANCE)


def test_registry_covers_every_dataset_of_the_brief():
    assert set(S.SOURCES) == set(PROVENANCE_COUNTS)


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    folder = tmp_path / "koala_test_set"
    folder.mkdir()
    (folder / "koala_test_set.jsonl").write_text(
        '{"id": "k0", "prompt": "fine"}\n{"id": "k1", "prompt": broken}\n')
    with pytest.raises(ValueError, match=r"koala_test_set\.jsonl:2: \(line\): malformed JSON"):
        S.load_source("koala_test_set", local_root=tmp_path)


def test_missing_file_names_path_and_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"koala_test_set\.jsonl.*local_root="):
        S.load_source("koala_test_set", local_root=tmp_path)


def test_unknown_source_and_missing_hub_copy_are_clear_errors():
    with pytest.raises(ValueError, match="valid:"):
        S.load_source("alpaca")
    with pytest.raises(ValueError, match="no hub copy"):
        S.load_source("koala_test_set", source="hub")


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


@pytest.mark.parametrize("label,instruction,cue", [
    ("craft", "Write a sonnet about the sea.", "fixed_form:sonnet"),
    ("craft", "Tell it in the style of Raymond Carver.", "style_voice:in the style of"),
    ("audience", "Write a bedtime poem for my daughter.", "named_reader:for my daughter"),
    ("audience", "Write an engaging opening for a blog post.", "reader_effect:engaging"),
    ("reality", "Is it scientifically plausible that a dragon could fly?", "plausibility:"),
    ("reality", "What if the Roman Empire had never fallen?", "counterfactual:what if"),
])
def test_rule_classifier_fires_and_records_the_cue(taxonomy, label, instruction, cue):
    df = pd.DataFrame({"instruction": [instruction], "response": [""]})
    out = A.classify_rules(df, taxonomy)
    assert out.loc[0, label] == 1
    assert cue in out.loc[0, f"{label}_cues"]


def test_rule_classifier_is_silent_on_plain_questions_and_respects_scope(taxonomy):
    df = pd.DataFrame({"instruction": ["What is 2 + 2?"], "response": ["4, a haiku of sums"]})
    out = A.classify_rules(df, taxonomy)
    assert out.loc[0, ["craft", "audience", "reality"]].tolist() == [0, 0, 0]  # haiku cue is
    assert out.loc[0, "craft_cues"] == ""  # instruction-scoped: the response cannot fire it


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


@needs_shared
def test_every_label_resolves_to_a_real_record(labels):
    raw = A.load_labels()
    assert len(raw) >= 210
    assert not raw.duplicated(["dataset", "record_id"]).any()
    assert set(raw.dataset) == set(S.SOURCES)
    per_dataset = raw[raw.slice_rule != ""].groupby("dataset").size()
    pool = S.creative_slice(S.load_all(local_root=SHARED)).groupby("dataset").size()
    for name, n in per_dataset.items():
        assert n >= min(10, pool[name]), f"{name}: {n} creative labels of {pool[name]}"
    assert len(labels) == len(raw) and labels.instruction.notna().all()


@needs_shared
def test_labelled_sample_is_the_seeded_draw():
    drawn = S.draw_label_sample(S.load_all(local_root=SHARED), seed=0)
    raw = A.load_labels()
    assert list(zip(drawn.dataset, drawn.record_id)) == list(zip(raw.dataset, raw.record_id))
    assert list(drawn.slice_rule) == list(raw.slice_rule)


@needs_shared
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
