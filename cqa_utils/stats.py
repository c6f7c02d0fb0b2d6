"""Paired statistics for ΔI: does CoT fine-tuning raise ΔI for literary text only?

Driven by notebook 04 (ΔI statistics) on the frame notebook 03 writes to
``results/<run>/03_logprobs/scores.csv``; functions are pure and return frames or dicts.
Units: ΔI = log P(x|y) − log P(x) in nats, either summed over x's tokens (measure
``"sum"``, column ``delta_i``) or per token (measure ``"mean"``, column ``delta_i_mean``).
Δ(ΔI) = ΔI(epoch k) − ΔI(epoch 0) of the same item, variant ``"x"``.

Degenerate input (n < 2, all-zero differences, zero spread) gives NaN statistics and a
``note`` saying why instead of an exception, so a smoke run on 2 items still yields a
table. Malformed input (missing columns, duplicated rows, no base row) raises ValueError.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

#: The paper's epoch-5 results (one-sided Wilcoxon on Δ(ΔI), Cohen's d), for comparison.
PAPER_EPOCH5 = {
    "literary": {"n": 20, "p_one_sided": 0.041, "d": 0.50},
    "factual": {"p_one_sided": 0.689, "d": -0.12},
}
MEASURE_COLUMNS = {"sum": "delta_i", "mean": "delta_i_mean"}
REQUIRED_COLUMNS = ("item_id", "group", "variant", "epoch", "delta_i", "delta_i_mean")
STATS_COLUMNS = ["group", "epoch", "measure", "n", "n_zero", "mean", "median", "sd",
                 "w_plus", "p_one_sided", "p_two_sided", "wilcoxon_method", "d_z",
                 "hedges_g", "ci_low", "ci_high", "p_holm", "note"]
EXACT_MAX_N = 50  # same threshold as scipy's method="auto"
NAN = float("nan")


def _value_column(scores: pd.DataFrame, measure: str) -> str:
    """Check the frame has notebook 03's columns; return the ΔI column for `measure`."""
    if measure not in MEASURE_COLUMNS:
        raise ValueError(f"measure={measure!r}; accepted: {sorted(MEASURE_COLUMNS)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"scores frame lacks column(s) {missing}; expected at least "
                         f"{list(REQUIRED_COLUMNS)} (03_logprobs/scores.csv)")
    return MEASURE_COLUMNS[measure]


def _as_diffs(diffs) -> np.ndarray:
    d = np.asarray(diffs, dtype=float).ravel()
    if not np.all(np.isfinite(d)):
        raise ValueError(f"differences must be finite; got {d[~np.isfinite(d)][:5].tolist()}")
    return d


def _degenerate_reason(d: np.ndarray) -> str:
    """Why no test can be run on `d` ('' when one can)."""
    if d.size < 2:
        return f"n={d.size} < 2"
    if np.all(d == 0):
        return "all differences are zero"
    return ""


def paired_differences(scores: pd.DataFrame, measure: str = "sum",
                       variant: str = "x") -> pd.DataFrame:
    """Δ(ΔI) per item for every epoch k ≥ 1: ΔI(epoch k) − ΔI(epoch 0), same item.

    Items are keyed by (group, item_id), so a literary and a factual item may share a
    pair id. An item not scored at some epoch k simply has no row for k.

    Returns:
        DataFrame[item_id, group, epoch, diff], diff in nats (per token if measure="mean"),
        sorted by group, epoch, item_id.
    """
    col = _value_column(scores, measure)
    rows = scores.loc[scores["variant"] == variant, ["item_id", "group", "epoch", col]]
    rows = rows.astype({"epoch": int})
    bad = rows[rows[col].isna()]
    if len(bad):
        raise ValueError(f"{col} is missing for (item {bad.item_id.iloc[0]!r}, "
                         f"epoch {bad.epoch.iloc[0]})")
    bad = rows[rows.duplicated(["group", "item_id", "epoch"], keep=False)]
    if len(bad):
        raise ValueError(f"duplicated rows for (item {bad.item_id.iloc[0]!r}, epoch "
                         f"{bad.epoch.iloc[0]}) in group {bad.group.iloc[0]!r}, variant "
                         f"{variant!r}; expected one row per item, variant and epoch")
    wide = rows.pivot(index=["group", "item_id"], columns="epoch", values=col)
    base = wide[0] if 0 in wide.columns else pd.Series(NAN, index=wide.index)
    if base.isna().any():
        group, item = base.index[base.isna()][0]
        raise ValueError(f"missing base row (item {item!r}, epoch 0) in group {group!r}, "
                         f"variant {variant!r}; {int(base.isna().sum())} item(s) lack one")
    diffs = wide.drop(columns=0, errors="ignore").sub(base, axis=0).reset_index()
    long = diffs.melt(id_vars=["group", "item_id"], var_name="epoch", value_name="diff")
    long = long.dropna(subset=["diff"]).astype({"epoch": int})
    long = long.sort_values(["group", "epoch", "item_id"]).reset_index(drop=True)
    return long[["item_id", "group", "epoch", "diff"]]


class WilcoxonTest(NamedTuple):
    """Result of a Wilcoxon signed-rank test on paired differences."""
    w_plus: float   # sum of the ranks of |d| over positive d (zeros dropped first)
    p: float
    method: str     # "exact" | "normal-cc" (normal approx., continuity-corrected) | "n/a"
    n_used: int     # non-zero differences that were ranked
    n_zero: int     # zero differences dropped
    note: str = ""


def _wilcoxon(diffs, alternative: str) -> WilcoxonTest:
    """Wilcoxon signed-rank with the method chosen explicitly (so it can be reported).

    Zeros are dropped before ranking (zero_method="wilcox", Wilcoxon's own convention: a
    zero says nothing about direction). With no ties among the remaining |d| and
    n ≤ 50 the exact null distribution is used (as scipy's method="auto" does); with ties
    the exact distribution is invalid and the normal approximation with continuity
    correction and tie-corrected variance is used at every n (scipy's "auto" would switch
    to a sign-flip permutation for n ≤ 13; we keep one documented rule instead).
    """
    from scipy import stats

    d = _as_diffs(diffs)
    nonzero = d[d != 0]
    n_zero = int(d.size - nonzero.size)
    reason = _degenerate_reason(d)
    if reason:
        return WilcoxonTest(NAN, NAN, "n/a", int(nonzero.size), n_zero, reason)
    ties = np.unique(np.abs(nonzero)).size < nonzero.size
    exact = not ties and nonzero.size <= EXACT_MAX_N
    res = stats.wilcoxon(nonzero, zero_method="wilcox", correction=True,
                         alternative=alternative, method="exact" if exact else "asymptotic")
    ranks = stats.rankdata(np.abs(nonzero))
    notes = [f"{n_zero} zero difference(s) dropped"] if n_zero else []
    if ties:
        notes.append("ties in |diff|: normal approximation")
    return WilcoxonTest(float(ranks[nonzero > 0].sum()), float(res.pvalue),
                        "exact" if exact else "normal-cc", int(nonzero.size), n_zero,
                        "; ".join(notes))


def wilcoxon_one_sided(diffs) -> WilcoxonTest:
    """One-sided Wilcoxon signed-rank test of H1: Δ(ΔI) tends to be > 0 (the paper's test)."""
    return _wilcoxon(diffs, "greater")


def wilcoxon_two_sided(diffs) -> WilcoxonTest:
    """Two-sided Wilcoxon signed-rank test of H1: Δ(ΔI) is shifted from 0 either way."""
    return _wilcoxon(diffs, "two-sided")


def cohens_dz(diffs) -> float:
    """Cohen's d_z for paired data: mean(d) / sd(d, ddof=1); NaN if n < 2 or sd = 0."""
    d = _as_diffs(diffs)
    sd = d.std(ddof=1) if d.size > 1 else 0.0
    return float(d.mean() / sd) if sd > 0 else NAN


def hedges_correction(dz: float, n: int) -> float:
    """Small-sample bias correction of d_z: g = J·d_z, J = 1 − 3/(4·df − 1), df = n − 1.

    For a paired design the sd comes from n differences, so df = n − 1 (not 2n − 2).
    J ≈ 0.96 at n = 20. NaN for n < 3, where the approximation breaks down.
    """
    if n < 3 or not math.isfinite(dz):
        return NAN
    return float((1.0 - 3.0 / (4.0 * (n - 1) - 1.0)) * dz)


def bootstrap_ci_mean(diffs, n_boot: int = 10000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(Δ(ΔI)), in the diffs' unit (nats).

    Percentile because it assumes no shape for the sampling distribution and is what a
    reader can check by hand; BCa's acceleration estimate is itself noisy at n ≈ 20.
    Expect slightly under-nominal coverage at small n. Same seed ⇒ same interval.
    """
    d = _as_diffs(diffs)
    if d.size < 2:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)  # [n_boot]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values (monotone in p, capped at 1).

    Sorted ascending, p_(i) is scaled by (m − i + 1), then a running maximum keeps the
    order. NaN p-values are left NaN and not counted in m. Written here because
    statsmodels is not a dependency of this project.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, NAN)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m:
        order = np.argsort(p[ok], kind="stable")
        scaled = (m - np.arange(m)) * p[ok][order]
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
        out[ok] = adjusted
    return out


def _summary_row(d: np.ndarray, n_boot: int, seed: int, level: float) -> dict:
    one, two = wilcoxon_one_sided(d), wilcoxon_two_sided(d)
    dz = cohens_dz(d)
    low, high = bootstrap_ci_mean(d, n_boot=n_boot, seed=seed, level=level)
    return {"n": int(d.size), "n_zero": one.n_zero, "mean": float(d.mean()),
            "median": float(np.median(d)), "sd": float(d.std(ddof=1)) if d.size > 1 else NAN,
            "w_plus": one.w_plus, "p_one_sided": one.p, "p_two_sided": two.p,
            "wilcoxon_method": one.method, "d_z": dz,
            "hedges_g": hedges_correction(dz, d.size), "ci_low": low, "ci_high": high,
            "note": one.note}


def stats_table(scores: pd.DataFrame, n_boot: int = 10000, seed: int = 0,
                level: float = 0.95) -> pd.DataFrame:
    """One row per (group, epoch ≥ 1, measure ∈ {sum, mean}) of the tests on Δ(ΔI).

    p_holm adjusts p_one_sided over all epochs within each group × measure, so reporting
    the best epoch (the paper's epoch 5) is paid for. Each row's bootstrap uses `seed`.
    Columns: STATS_COLUMNS (mean, median, sd, ci_* in nats or nats/token). Sorted by
    group, measure, epoch.
    """
    rows = []
    for measure in MEASURE_COLUMNS:
        diffs = paired_differences(scores, measure)
        for (group, epoch), sub in diffs.groupby(["group", "epoch"], sort=True):
            row = _summary_row(sub["diff"].to_numpy(), n_boot, seed, level)
            rows.append({"group": group, "epoch": int(epoch), "measure": measure, **row})
    table = pd.DataFrame(rows, columns=STATS_COLUMNS)
    if len(table):
        table["p_holm"] = table.groupby(["group", "measure"])["p_one_sided"].transform(holm)
    return table.sort_values(["group", "measure", "epoch"]).reset_index(drop=True)


def selectivity_test(scores: pd.DataFrame, epoch: int, measure: str = "sum",
                     n_perm: int = 10000, seed: int = 0) -> dict:
    """Direct test that literary Δ(ΔI) exceeds factual Δ(ΔI) at one epoch (one-sided).

    Reports a two-sample permutation test on mean(literary) − mean(factual) (exact when
    n_perm covers every split) and a Mann–Whitney U test. The two groups are independent
    samples even when their items share a pair id: they are different texts with
    different constraints, and the pairing of the benchmark matches only their design.
    """
    from scipy import stats

    diffs = paired_differences(scores, measure)
    at = diffs[diffs["epoch"] == epoch]
    lit = at.loc[at["group"] == "literary", "diff"].to_numpy()
    fac = at.loc[at["group"] == "factual", "diff"].to_numpy()
    out = {"epoch": int(epoch), "measure": measure, "n_literary": int(lit.size),
           "n_factual": int(fac.size), "mean_literary": lit.mean() if lit.size else NAN,
           "mean_factual": fac.mean() if fac.size else NAN, "mean_difference": NAN,
           "p_permutation": NAN, "u_statistic": NAN, "p_mannwhitney": NAN, "note": ""}
    if lit.size < 2 or fac.size < 2:
        out["note"] = f"n_literary={lit.size}, n_factual={fac.size}: need ≥ 2 each"
        return out
    out["mean_difference"] = float(lit.mean() - fac.mean())
    if np.ptp(np.concatenate([lit, fac])) == 0:
        out["note"] = "all differences are identical"
        return out
    perm = stats.permutation_test(
        (lit, fac), lambda a, b, axis: a.mean(axis=axis) - b.mean(axis=axis),
        permutation_type="independent", vectorized=True, n_resamples=n_perm,
        alternative="greater", rng=seed)
    mwu = stats.mannwhitneyu(lit, fac, alternative="greater")
    out.update(p_permutation=float(perm.pvalue), u_statistic=float(mwu.statistic),
               p_mannwhitney=float(mwu.pvalue))
    return out


def selectivity_table(scores: pd.DataFrame, n_perm: int = 10000,
                      seed: int = 0) -> pd.DataFrame:
    """selectivity_test for every epoch ≥ 1 and both measures; sorted by measure, epoch."""
    epochs = sorted(int(e) for e in scores["epoch"].unique() if int(e) >= 1)
    rows = [selectivity_test(scores, e, m, n_perm=n_perm, seed=seed)
            for m in MEASURE_COLUMNS for e in epochs]
    return pd.DataFrame(rows)


def power_paired_t(d: float, n: int, alpha: float = 0.05,
                   alternative: str = "greater") -> float:
    """Power of a paired t-test at effect size d_z with n pairs (noncentral t, df = n − 1).

    Wilcoxon's asymptotic relative efficiency against t is 3/π ≈ 0.955 under normality,
    so this t-power is a close upper guide to the paper's Wilcoxon test.
    Example: power_paired_t(0.5, 20) ≈ 0.695.
    """
    from scipy import stats

    if n < 2:
        raise ValueError(f"n={n}: a paired t-test needs n ≥ 2")
    df, ncp = n - 1, d * math.sqrt(n)
    if alternative == "greater":
        return float(stats.nct.sf(stats.t.ppf(1 - alpha, df), df, ncp))
    if alternative == "less":
        return float(stats.nct.cdf(stats.t.ppf(alpha, df), df, ncp))
    if alternative == "two-sided":
        crit = stats.t.ppf(1 - alpha / 2, df)
        return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))
    raise ValueError(f"alternative={alternative!r}; accepted: greater, less, two-sided")


def power_table(d: float = 0.5, ns=(10, 20, 27, 30, 40, 50, 80, 100), alpha: float = 0.05,
                alternative: str = "greater") -> pd.DataFrame:
    """power_paired_t over several n: DataFrame[d, n, alpha, alternative, power].

    The default ns include 27, the smallest n reaching 80 % power at d = 0.5 (0.812);
    the paper's n = 20 gives 0.695.
    """
    return pd.DataFrame([{"d": d, "n": int(n), "alpha": alpha, "alternative": alternative,
                          "power": power_paired_t(d, n, alpha, alternative)} for n in ns])


def metric_check(scores: pd.DataFrame, checkpoint_epoch: int = 0,
                 measure: str = "sum") -> dict:
    """Does ΔI prefer the original literary text over its degraded variant?

    For literary items scored with both variants at the epoch: k = #items with
    ΔI(x) > ΔI(x_degraded) out of n non-tied items, and a one-sided exact sign test
    (binomtest, p = 0.5, alternative "greater"). Ties are excluded and counted.
    """
    from scipy import stats

    col = _value_column(scores, measure)
    rows = scores[(scores["group"] == "literary") & (scores["epoch"] == checkpoint_epoch)]
    dup = rows.duplicated(["item_id", "variant"], keep=False)
    if dup.any():
        bad = rows.loc[dup].iloc[0]
        raise ValueError(f"duplicated rows for (item {bad.item_id!r}, variant "
                         f"{bad.variant!r}) at epoch {checkpoint_epoch}")
    wide = rows.pivot(index="item_id", columns="variant", values=col)
    wide = wide.reindex(columns=["x", "x_degraded"])  # absent variant → NaN column
    both = wide.dropna(subset=["x", "x_degraded"])
    gap = (both["x"] - both["x_degraded"]).to_numpy()
    k, ties = int((gap > 0).sum()), int((gap == 0).sum())
    n = int(gap.size - ties)
    p = float(stats.binomtest(k, n, 0.5, alternative="greater").pvalue) if n else NAN
    return {"epoch": int(checkpoint_epoch), "measure": measure, "n_items": int(gap.size),
            "n_incomplete": int(len(wide) - len(both)), "k": k, "n": n, "n_ties": ties,
            "share": k / n if n else NAN, "p_sign_test": p,
            "note": "" if n else "no literary item with both variants and a non-tied ΔI"}


def _jsonable(obj):
    """Plain Python types only: numpy scalars → Python, NaN/inf → None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def stats_report(scores: pd.DataFrame, n_boot: int = 10000, n_perm: int = 10000,
                 seed: int = 0, power_d: float = 0.5,
                 power_ns=(10, 20, 27, 30, 40, 50, 80, 100)) -> dict:
    """Everything notebook 04 saves as stats.json, JSON-serializable (NaN → None)."""
    return _jsonable({
        "stats_table": stats_table(scores, n_boot=n_boot, seed=seed).to_dict("records"),
        "selectivity": selectivity_table(scores, n_perm=n_perm, seed=seed).to_dict("records"),
        "power": power_table(power_d, power_ns).to_dict("records"),
        "metric_check": metric_check(scores),
        "paper_epoch5": PAPER_EPOCH5,
        "settings": {"n_boot": n_boot, "n_perm": n_perm, "seed": seed},
    })
