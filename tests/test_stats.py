"""Tests for cqa_utils.stats on synthetic score frames (fast, no model needed)."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cqa_utils import analysis, stats


def make_scores(n_items=20, epochs=(0, 1, 2, 3), literary_shift=0.5, seed=0):
    """A frame shaped like 03_logprobs/scores.csv; literary ΔI rises by `literary_shift`
    nats per epoch, factual ΔI does not. Both groups use the pair ids p00, p01, …"""
    rng = np.random.default_rng(seed)
    rows = []
    for group, shift in (("literary", literary_shift), ("factual", 0.0)):
        for i in range(n_items):
            for variant, level in (("x", 5.0), ("x_degraded", 3.0)):
                n_tokens = int(rng.integers(50, 150))
                logp_uncond = -rng.uniform(100, 200)
                for epoch in epochs:
                    delta_i = rng.normal(level, 1.0) + shift * epoch
                    rows.append({
                        "item_id": f"p{i:02d}", "group": group, "variant": variant,
                        "checkpoint": "base" if epoch == 0 else f"epoch-{epoch}",
                        "epoch": epoch, "n_tokens": n_tokens,
                        "logp_cond": logp_uncond + delta_i, "logp_uncond": logp_uncond,
                        "delta_i": delta_i, "delta_i_mean": delta_i / n_tokens})
    return pd.DataFrame(rows)


def tiny_scores(delta_i, item_id="a", group="literary", variant="x", n_tokens=10):
    """Rows of one item: delta_i[k] at epoch k."""
    return pd.DataFrame([{"item_id": item_id, "group": group, "variant": variant,
                          "checkpoint": f"epoch-{k}", "epoch": k, "n_tokens": n_tokens,
                          "logp_cond": v, "logp_uncond": 0.0, "delta_i": v,
                          "delta_i_mean": v / n_tokens} for k, v in enumerate(delta_i)])


# paired_differences ---------------------------------------------------------------

def test_paired_differences_is_epoch_k_minus_epoch_0_per_item():
    scores = pd.concat([tiny_scores([1.0, 3.0, 0.5], "a"), tiny_scores([2.0, 2.0, 6.0], "b"),
                        tiny_scores([9.0, 9.0, 9.0], "a", variant="x_degraded")])
    diffs = analysis.paired_differences(scores)
    assert list(diffs.columns) == ["item_id", "group", "epoch", "diff"]
    got = {(r.item_id, r.epoch): r.diff for r in diffs.itertuples()}
    assert got == {("a", 1): 2.0, ("b", 1): 0.0, ("a", 2): -0.5, ("b", 2): 4.0}
    per_token = analysis.paired_differences(scores, measure="mean")
    assert per_token["diff"].tolist() == pytest.approx([0.2, 0.0, -0.05, 0.4])


def test_paired_differences_keeps_groups_apart_when_pair_ids_are_shared():
    diffs = analysis.paired_differences(make_scores(n_items=3))
    assert len(diffs) == 2 * 3 * 3  # groups × items × epochs ≥ 1
    assert set(diffs.loc[diffs["item_id"] == "p00", "group"]) == {"literary", "factual"}


def test_paired_differences_names_the_item_missing_its_base_row():
    scores = make_scores(n_items=5)
    drop = (scores.item_id == "p03") & (scores.group == "factual") & (scores.epoch == 0)
    with pytest.raises(ValueError, match=r"item 'p03', epoch 0.*'factual'"):
        analysis.paired_differences(scores[~drop])


def test_paired_differences_rejects_duplicated_rows():
    scores = tiny_scores([1.0, 2.0])
    with pytest.raises(ValueError, match=r"duplicated rows for \(item 'a', epoch 1\)"):
        analysis.paired_differences(pd.concat([scores, scores.iloc[[1]]]))


def test_unknown_measure_is_an_error_listing_the_accepted_ones():
    with pytest.raises(ValueError, match="accepted"):
        analysis.paired_differences(tiny_scores([1.0, 2.0]), measure="median")


# Wilcoxon -------------------------------------------------------------------------

def test_wilcoxon_matches_scipy_directly():
    diffs = np.random.default_rng(1).normal(0.3, 1.0, size=20)
    one, two = stats.wilcoxon_one_sided(diffs), stats.wilcoxon_two_sided(diffs)
    assert one.method == two.method == "exact"
    assert one.p == pytest.approx(sps.wilcoxon(diffs, alternative="greater").pvalue, abs=1e-15)
    assert two.p == pytest.approx(sps.wilcoxon(diffs).pvalue, abs=1e-15)


def test_wilcoxon_exact_hand_case_all_positive_gives_one_over_two_to_the_n():
    one = stats.wilcoxon_one_sided([1, 2, 3, 4, 5])
    assert one.w_plus == 15 and one.method == "exact"
    assert one.p == pytest.approx(1 / 32)  # only the all-plus sign pattern reaches W+ = 15
    assert stats.wilcoxon_two_sided([1, 2, 3, 4, 5]).p == pytest.approx(2 / 32)


def test_wilcoxon_drops_zeros_and_uses_continuity_corrected_normal_for_ties():
    res = stats.wilcoxon_one_sided([0, 1, 1, 2, 3, -1])
    # by hand: nonzero |d| = 1,1,2,3,1 → ranks 2,2,4,5,2; W+ = 13, n = 5
    # mean n(n+1)/4 = 7.5; var n(n+1)(2n+1)/24 − Σ(t³−t)/48 = 13.75 − 24/48 = 13.25
    z = (13 - 7.5 - 0.5) / math.sqrt(13.25)
    assert (res.w_plus, res.n_used, res.n_zero, res.method) == (13, 5, 1, "normal-cc")
    assert res.p == pytest.approx(sps.norm.sf(z), rel=1e-12)
    assert "zero" in res.note and "ties" in res.note


@pytest.mark.parametrize("diffs, reason",
                         [([0.7], "n=1 < 2"), ([0, 0, 0], "all differences are zero")])
def test_degenerate_input_gives_nan_statistics_with_a_reason(diffs, reason):
    res = stats.wilcoxon_one_sided(diffs)
    assert math.isnan(res.p) and res.method == "n/a" and res.note == reason
    assert math.isnan(stats.cohens_dz(diffs))
    assert all(math.isnan(v) for v in stats.bootstrap_ci_mean(diffs[:1]))


# effect sizes and CI ----------------------------------------------------------------

def test_cohens_dz_and_hedges_g_on_a_hand_case():
    dz = stats.cohens_dz([1, 2, 3, 4, 5])  # mean 3, sd √2.5
    assert dz == pytest.approx(3 / math.sqrt(2.5))
    # J = 1 − 3/(4·df − 1) with df = n − 1 = 4 → 1 − 3/15 = 0.8
    assert stats.hedges_correction(dz, 5) == pytest.approx(0.8 * dz)
    assert math.isnan(stats.hedges_correction(dz, 2))


def test_bootstrap_ci_contains_the_mean_and_is_reproducible_with_the_seed():
    diffs = np.random.default_rng(2).normal(0.5, 1.0, size=20)
    low, high = stats.bootstrap_ci_mean(diffs, seed=7)
    assert low < diffs.mean() < high
    assert stats.bootstrap_ci_mean(diffs, seed=7) == (low, high)
    assert stats.bootstrap_ci_mean(diffs, seed=8) != (low, high)


def test_bootstrap_ci_narrows_with_n():
    rng = np.random.default_rng(3)
    small, large = rng.normal(0.5, 1.0, size=20), rng.normal(0.5, 1.0, size=500)
    width = lambda d: np.subtract(*stats.bootstrap_ci_mean(d)[::-1])  # noqa: E731
    assert width(large) < 0.5 * width(small)


# Holm --------------------------------------------------------------------------------

def test_holm_matches_a_hand_computation():
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_is_monotone_capped_at_one_and_skips_nan():
    p = np.random.default_rng(4).uniform(0, 0.6, size=12)
    adjusted = stats.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1.0) and adjusted.max() == 1.0
    with_nan = stats.holm([0.01, float("nan"), 0.04])
    assert math.isnan(with_nan[1]) and with_nan[[0, 2]] == pytest.approx([0.02, 0.04])


# power --------------------------------------------------------------------------------

def test_power_at_the_papers_design_is_about_seventy_percent():
    power = stats.power_paired_t(0.5, 20)
    assert 0.69 <= power <= 0.70
    rng = np.random.default_rng(5)  # independent check: simulate one-sided paired t-tests
    draws = rng.normal(0.5, 1.0, size=(20000, 20))
    t = draws.mean(axis=1) / (draws.std(axis=1, ddof=1) / math.sqrt(20))
    assert np.mean(t > sps.t.ppf(0.95, 19)) == pytest.approx(power, abs=0.02)


def test_power_increases_with_n_and_two_sided_is_lower():
    table = stats.power_table(0.5, ns=(10, 20, 27, 40, 80))
    assert table["power"].is_monotonic_increasing
    assert table.loc[table.n == 27, "power"].item() >= 0.8 > stats.power_paired_t(0.5, 26)
    assert stats.power_paired_t(0.5, 20, alternative="two-sided") < stats.power_paired_t(0.5, 20)


# selectivity ---------------------------------------------------------------------------

def test_selectivity_gives_small_p_when_literary_clearly_exceeds_factual():
    res = analysis.selectivity_test(make_scores(literary_shift=1.0), epoch=3, n_perm=2000)
    assert res["mean_difference"] > 2.0
    assert res["p_permutation"] < 0.01 and res["p_mannwhitney"] < 0.01


def test_selectivity_gives_large_p_for_identical_distributions():
    literary = make_scores(n_items=15, literary_shift=0.3)
    literary = literary[literary.group == "literary"]
    scores = pd.concat([literary, literary.assign(group="factual")])  # same Δ(ΔI) in both
    res = analysis.selectivity_test(scores, epoch=2, n_perm=2000)
    assert res["mean_difference"] == 0.0
    assert res["p_permutation"] > 0.3 and res["p_mannwhitney"] > 0.3
    unpaired, paired = analysis.selectivity_tables(scores, n_perm=500)
    assert len(unpaired) == 2 * 3 and set(unpaired["measure"]) == {"sum", "mean"}
    assert list(paired["note"].unique()) == ["scores carry no pair_id"]  # these synthetic scores have none


# metric check ---------------------------------------------------------------------------

def test_metric_check_counts_wins_ties_and_matches_binomtest():
    gaps = [1.0] * 7 + [-1.0] * 2 + [0.0]  # 7 wins, 2 losses, 1 tie
    frames = [tiny_scores([5.0 + g], f"i{j}") for j, g in enumerate(gaps)]
    frames += [tiny_scores([5.0], f"i{j}", variant="x_degraded") for j in range(len(gaps))]
    frames += [tiny_scores([5.0], "only-x"), tiny_scores([0.0], "f", group="factual")]
    res = analysis.metric_check(pd.concat(frames))
    counts = (res["k"], res["n"], res["n_ties"], res["n_items"], res["n_incomplete"])
    assert counts == (7, 9, 1, 10, 1)
    assert res["share"] == pytest.approx(7 / 9)
    assert res["p_sign_test"] == pytest.approx(sps.binomtest(7, 9, alternative="greater").pvalue)


# stats_table and report -------------------------------------------------------------------

def test_stats_table_has_one_row_per_group_epoch_measure_and_the_documented_columns():
    table = analysis.stats_table(make_scores(), n_boot=1000)
    assert len(table) == 2 * 3 * 2
    assert set(analysis.STATS_COLUMNS) <= set(table.columns)
    assert list(table[["group", "measure", "epoch"]].itertuples(index=False)) == sorted(
        table[["group", "measure", "epoch"]].itertuples(index=False))
    assert (table["p_holm"] >= table["p_one_sided"]).all()


def test_stats_table_row_recomputed_by_hand_from_the_scores_frame():
    scores = make_scores()
    row = analysis.stats_table(scores, n_boot=1000, seed=3).query(
        "group == 'literary' and measure == 'sum' and epoch == 2").iloc[0]
    lit = scores[(scores.group == "literary") & (scores.variant == "x")]
    wide = lit.pivot(index="item_id", columns="epoch", values="delta_i")
    d = (wide[2] - wide[0]).to_numpy()
    assert row["n"] == 20 and row["mean"] == pytest.approx(d.mean())
    assert row["median"] == pytest.approx(np.median(d))
    assert row["p_one_sided"] == pytest.approx(sps.wilcoxon(d, alternative="greater").pvalue)
    assert row["p_two_sided"] == pytest.approx(sps.wilcoxon(d).pvalue)
    assert row["d_z"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert row["hedges_g"] == pytest.approx(row["d_z"] * (1 - 3 / (4 * 19 - 1)))
    assert (row["ci_low"], row["ci_high"]) == stats.bootstrap_ci_mean(d, n_boot=1000, seed=3)
    p_epochs = [sps.wilcoxon((wide[k] - wide[0]).to_numpy(), alternative="greater").pvalue
                for k in (1, 2, 3)]
    assert row["p_holm"] == pytest.approx(stats.holm(p_epochs)[1])


def test_stats_report_is_json_serializable_and_carries_the_paper_numbers():
    scores = pd.concat([make_scores(n_items=6, epochs=(0, 1)), tiny_scores([1.0, 1.0], "z")])
    report = analysis.stats_report(scores, n_boot=200, n_perm=200)
    text = json.dumps(report, allow_nan=False)  # NaN would raise here
    assert json.loads(text)["paper_epoch5"] == analysis.PAPER_EPOCH5
    assert {"stats_table", "selectivity", "power", "metric_check"} <= set(report)
    assert report["metric_check"]["n_items"] == 6


def test_stats_table_on_a_two_item_smoke_run_gives_nan_with_a_reason_instead_of_crashing():
    scores = pd.concat([tiny_scores([1.0, 1.0], "a"), tiny_scores([2.0, 2.0], "b")])
    table = analysis.stats_table(scores, n_boot=100)
    assert table["p_one_sided"].isna().all() and table["p_holm"].isna().all()
    assert (table["note"] == "all differences are zero").all()
    report = analysis.stats_report(scores, n_boot=100, n_perm=100)
    assert report["stats_table"][0]["p_one_sided"] is None


# Hodges–Lehmann and TOST ------------------------------------------------------------------

def test_hodges_lehmann_is_the_median_of_walsh_averages_and_its_ci_inverts_the_exact_wilcoxon():
    d = np.random.default_rng(1).normal(0.5, 1.0, 20)
    estimate, low, high = stats.hodges_lehmann(d)
    walsh = [(d[i] + d[j]) / 2 for i in range(20) for j in range(i, 20)]
    assert estimate == pytest.approx(np.median(walsh))
    for bound, inside_sign in ((low, 1), (high, -1)):  # just inside the CI p ≥ .05, just outside p < .05
        assert sps.wilcoxon(d - (bound + inside_sign * 1e-6), method="exact").pvalue >= 0.05
        assert sps.wilcoxon(d - (bound - inside_sign * 1e-6), method="exact").pvalue < 0.05
    assert all(math.isnan(v) for v in stats.hodges_lehmann([1.0])) and math.isnan(stats.hodges_lehmann([1, 2, 3])[1])


def test_tost_is_the_larger_of_two_one_sided_t_tests():
    d = np.random.default_rng(2).normal(0.05, 1.0, 40)
    res = stats.tost_paired(d, 0.3)
    t_low = (d.mean() + 0.3) / (d.std(ddof=1) / math.sqrt(40))
    t_high = (d.mean() - 0.3) / (d.std(ddof=1) / math.sqrt(40))
    assert res["p_lower"] == pytest.approx(sps.t.sf(t_low, 39)) and res["p_upper"] == pytest.approx(sps.t.cdf(t_high, 39))
    assert res["p_tost"] == max(res["p_lower"], res["p_upper"])
    assert stats.tost_paired(d + 2.0, 0.3)["p_tost"] > 0.5  # a real shift is not "equivalent"
