"""Rogan–Gladen corrected shares, their bootstrap, the conclusion sentence, grouped folds."""
import numpy as np
import pandas as pd
import pytest

from cqa_utils import audit as A
from cqa_utils.audit_shares import corrected_shares, direction_sentence, rogan_gladen, type_differences


def test_rogan_gladen_matches_a_hand_computation():
    # raw 30 % positives, Se 0.8, Sp 0.9: (0.30 + 0.90 - 1) / (0.80 + 0.90 - 1) = 0.20 / 0.70
    assert rogan_gladen(0.30, 0.8, 0.9) == pytest.approx(0.2 / 0.7)
    assert rogan_gladen(0.05, 0.8, 0.9) == 0.0            # below the false-positive floor: clipped
    assert rogan_gladen(0.95, 0.8, 0.9) == 1.0
    assert np.isnan(rogan_gladen(0.5, 0.5, 0.5))           # an uninformative classifier corrects nothing
    assert rogan_gladen(0.4, 1.0, 1.0) == pytest.approx(0.4)  # a perfect one changes nothing


def _toy(seed=0):
    """Labelled records where the classifier has Se = 0.75, Sp = 0.9 on every type, and two
    datasets whose raw shares are known."""
    gold = np.array([1] * 40 + [0] * 60)
    pred = np.array([1] * 30 + [0] * 10 + [1] * 6 + [0] * 54)   # Se 30/40, Sp 54/60
    labelled = pd.DataFrame({**{k: gold for k in A.LABELS}, **{f"pred_{k}": pred for k in A.LABELS}})
    records = pd.DataFrame({"dataset": ["a"] * 50 + ["b"] * 200,
                            **{k: np.r_[np.ones(20), np.zeros(30), np.ones(40), np.zeros(160)].astype(int)
                               for k in A.LABELS}})
    return records, labelled


def test_corrected_shares_per_dataset_and_unweighted_role_mean():
    records, labelled = _toy()
    out = corrected_shares(records, labelled, {"a": "training", "b": "training"}, n_boot=400, seed=1)
    craft = out[out.label == "craft"].set_index("group")
    se, sp = 0.75, 0.9
    assert craft.at["a", "sensitivity"] == pytest.approx(se) and craft.at["a", "specificity"] == pytest.approx(sp)
    assert craft.at["a", "raw"] == pytest.approx(0.4) and craft.at["b", "raw"] == pytest.approx(0.2)
    expect_a, expect_b = (0.4 + sp - 1) / (se + sp - 1), (0.2 + sp - 1) / (se + sp - 1)
    assert craft.at["a", "share"] == pytest.approx(expect_a)
    assert craft.at["b", "share"] == pytest.approx(expect_b)
    # the role mean weights datasets equally, not records (b has 4x the records)
    assert craft.at["mean:training", "share"] == pytest.approx((expect_a + expect_b) / 2)
    for g in ("a", "b", "mean:training"):
        assert craft.at[g, "ci_low"] <= craft.at[g, "share"] <= craft.at[g, "ci_high"]


def test_the_interval_carries_the_classifier_uncertainty_too():
    records, labelled = _toy()
    wide = corrected_shares(records, labelled, {"a": "e", "b": "e"}, n_boot=600, seed=2)
    perfect = labelled.assign(**{f"pred_{k}": labelled[k] for k in A.LABELS})
    exact = corrected_shares(records, perfect, {"a": "e", "b": "e"}, n_boot=600, seed=2)
    width = lambda t: (t.ci_high - t.ci_low)[(t.group == "b") & (t.label == "craft")].item()  # noqa: E731
    assert width(wide) > width(exact)    # an imperfect classifier widens the interval


def test_direction_sentence_is_computed_from_the_intervals():
    records, labelled = _toy()
    records["audience"] = 0                 # craft clearly above audience
    out = corrected_shares(records, labelled, {"a": "training", "b": "training"}, n_boot=300, seed=0)
    sentence = direction_sentence(out, type_differences(out), "training")
    assert "unweighted mean of 2 datasets" in sentence
    assert "craft exceeds audience, the paper's direction" in sentence
    assert "craft vs reality is not resolved" in sentence   # identical types: the CI straddles 0
    assert direction_sentence(out, type_differences(out), "evaluation") == "No evaluation data was audited."


def test_grouped_folds_never_split_a_prompt_shared_between_datasets():
    from sklearn.model_selection import GroupKFold
    prompts = [f"Write a poem about {w}." for w in ["rain", "salt", "snow", "ice", "moss", "fog"]] * 4
    frame = pd.DataFrame({"instruction": [p.upper() if i % 2 else p + "  " for i, p in enumerate(prompts)],
                          "response": "", **{k: [i % 2 for i in range(len(prompts))] for k in A.LABELS}})
    keys = frame.instruction.map(A.prompt_key)
    assert keys.nunique() == 6                        # case, spacing and punctuation fold together
    for train, test in GroupKFold(n_splits=3, shuffle=True, random_state=0).split(frame, groups=keys):
        assert not set(keys.iloc[train]) & set(keys.iloc[test])
    oof = A.cross_val_predict_learned(frame, folds=3, seed=0)
    assert list(oof.index) == list(frame.index)


def test_a_replicate_where_the_classifier_is_uninformative_stays_nan_without_a_warning(recwarn):
    """A weak classifier on few labelled rows: some resamples have Se + Sp <= 1 for every dataset
    of a role; the role mean is NaN there (and ignored by the interval), not a warning."""
    records, _ = _toy()
    gold = np.array([1] * 6 + [0] * 6)
    pred = np.array([1, 1, 1, 1, 0, 0] + [1, 1, 1, 0, 0, 0])          # Se 4/6, Sp 3/6
    labelled = pd.DataFrame({**{k: gold for k in A.LABELS}, **{f"pred_{k}": pred for k in A.LABELS}})
    out = corrected_shares(records, labelled, {"a": "e", "b": "e"}, n_boot=400, seed=3)
    role = out[(out.group == "mean:e") & (out.label == "craft")].iloc[0]
    assert np.isnan(role.boot).any() and not np.isnan(role.boot).all()
    a, b = (out[(out.group == g) & (out.label == "craft")].iloc[0].boot for g in ("a", "b"))
    informative = ~np.isnan(a)                      # one labelled resample per replicate, shared by a and b
    assert (np.isnan(b) == ~informative).all() and (np.isnan(role.boot) == ~informative).all()
    assert np.allclose(role.boot[informative], (a + b)[informative] / 2)
    assert role.ci_low <= role.ci_high
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
