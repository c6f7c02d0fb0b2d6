"""Paired tests, effect sizes, intervals and corrections on arrays of differences.

Pure functions on a 1-d array of paired differences (Δ(ΔI) per item, in nats or
nats/token); :mod:`cqa_utils.analysis` applies them to the score frames of stage 03 for
notebook 04. Degenerate input (n < 2, all-zero differences, zero spread) gives NaN and a
note instead of an exception, so a smoke run on 2 items still yields a table.
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
EXACT_MAX_N = 50  # same threshold as scipy's method="auto"
NAN = float("nan")


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
    order. NaN p-values are left NaN and not counted in m. Written out (statsmodels'
    multipletests does the same) so the step-down rule can be read beside its use.
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


def hodges_lehmann(diffs, level: float = 0.95) -> tuple[float, float, float]:
    """Hodges–Lehmann estimate of the shift (median of the Walsh averages) and its CI.

    The CI is the distribution-free one that inverts the exact two-sided Wilcoxon
    signed-rank test: the c-th smallest and c-th largest Walsh averages, c the largest
    count with P(W+ < c) ≤ (1 − level)/2 (Hollander & Wolfe; no ties assumed). Written
    here because neither scipy nor statsmodels offers it.
    Returns (estimate, low, high) in the diffs' unit; NaN when n < 2, CI NaN when n is
    too small for the level (n < 6 at 95 %).
    """
    d = _as_diffs(diffs)
    if d.size < 2:
        return NAN, NAN, NAN
    i, j = np.triu_indices(d.size)
    walsh = np.sort((d[i] + d[j]) / 2.0)  # [n (n + 1) / 2]
    estimate = float(np.median(walsh))
    counts = _signed_rank_counts(d.size)  # [M + 1]: sign assignments per value of W+
    below = np.concatenate([[0.0], np.cumsum(counts)]) / counts.sum()  # below[c] = P(W+ < c)
    c = int(np.searchsorted(below, (1.0 - level) / 2.0, side="right")) - 1
    if c < 1:
        return estimate, NAN, NAN
    return estimate, float(walsh[c - 1]), float(walsh[walsh.size - c])


def _signed_rank_counts(n: int) -> np.ndarray:
    """Number of sign assignments giving each W+ = 0 … n(n+1)/2 (dynamic programming)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return counts


def tost_paired(diffs, margin: float) -> dict:
    """Two one-sided t-tests (TOST) that the mean difference lies within ±margin.

    p = max of the two one-sided p-values; p < α reads as "equivalent to no effect within
    the margin". ``margin`` in the diffs' unit (callers pass a standardized bound times sd).
    Returns {"margin", "p_lower", "p_upper", "p_tost"}; NaN when n < 2 or sd = 0.
    """
    from scipy import stats

    d = _as_diffs(diffs)
    out = {"margin": float(margin), "p_lower": NAN, "p_upper": NAN, "p_tost": NAN}
    if d.size < 2 or d.std(ddof=1) == 0 or not margin > 0:
        return out
    lower = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, margin, alternative="less").pvalue
    return out | {"p_lower": float(lower), "p_upper": float(upper), "p_tost": float(max(lower, upper))}


def headline_epoch(requested: int, epochs) -> int:
    """The configured headline epoch, or the last trained one if the run is shorter."""
    return min(int(requested), max(int(e) for e in epochs))


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


