"""The ΔI analyses of stage 04, on the scores.csv frame of stage 03 (notebook 04).

Δ(ΔI) = ΔI(epoch k) − ΔI(epoch 0) of the same item, variant ``"x"``, for every ΔI kind
scored (:data:`cqa_utils.controls.KINDS`: the full ΔI, the item-specific ΔI and one per
slot) and measure (``sum``: nats over x's tokens; ``mean``: nats per token). The tests
themselves are in :mod:`cqa_utils.stats`; the model-free overlap analyses in
:mod:`cqa_utils.controls`. One pre-declared primary endpoint (kind, measure, headline
epoch; literary group) is marked ``role = primary``; every other row is exploratory.
Malformed input (missing columns, duplicated rows, no base row) raises ValueError.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .controls import KINDS, MEASURES, delta_column
from .stats import (bootstrap_ci_mean, cohens_dz, hedges_correction, hodges_lehmann, holm, tost_paired,
                    wilcoxon_one_sided, wilcoxon_two_sided)

#: The paper's epoch-5 results (one-sided Wilcoxon on Δ(ΔI), Cohen's d), for comparison.
PAPER_EPOCH5 = {
    "literary": {"n": 20, "p_one_sided": 0.041, "d": 0.50},
    "factual": {"p_one_sided": 0.689, "d": -0.12},
}
REQUIRED_COLUMNS = ("item_id", "group", "variant", "epoch", "delta_i", "delta_i_mean")
STATS_COLUMNS = ["group", "kind", "epoch", "measure", "role", "n", "n_zero", "mean", "median", "sd", "w_plus",
                 "p_one_sided", "p_two_sided", "wilcoxon_method", "d_z", "hedges_g", "ci_low", "ci_high",
                 "hl", "hl_ci_low", "hl_ci_high", "tost_margin", "p_tost", "p_holm", "note"]
NAN = float("nan")


@dataclass(frozen=True)
class Primary:
    """The one pre-declared endpoint: literary Δ(ΔI) of this kind and measure at this epoch."""

    kind: str = "specific"
    measure: str = "sum"
    epoch: int = 5
    group: str = "literary"


def _value_column(scores: pd.DataFrame, measure: str, kind: str) -> str:
    missing = [c for c in REQUIRED_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"scores frame lacks column(s) {missing}; expected at least "
                         f"{list(REQUIRED_COLUMNS)} (03_logprobs/scores.csv)")
    col = delta_column(kind, measure)
    if col not in scores.columns:
        raise ValueError(f"scores frame has no {col!r} column: the {kind!r} control was not scored")
    return col


def kinds_scored(scores: pd.DataFrame) -> list[str]:
    """The ΔI kinds with values in the frame (the controls can be switched off)."""
    return [k for k in KINDS if delta_column(k) in scores.columns and scores[delta_column(k)].notna().any()]


def paired_differences(scores: pd.DataFrame, measure: str = "sum", variant: str = "x",
                       kind: str = "full") -> pd.DataFrame:
    """Δ(ΔI) per item for every epoch k ≥ 1 at which the kind was scored: ΔI(k) − ΔI(0), same item.

    Items are keyed by (group, item_id). Epochs where a control was not scored at all
    (its column empty there) are left out; a value missing for some items only is an error.

    Returns:
        DataFrame[item_id, group, epoch, diff], diff in nats (per token if measure="mean"),
        sorted by group, epoch, item_id.
    """
    col = _value_column(scores, measure, kind)
    rows = scores.loc[scores["variant"] == variant, ["item_id", "group", "epoch", col]].astype({"epoch": int})
    scored = rows.groupby("epoch")[col].transform(lambda v: v.notna().any())
    rows = rows[scored]
    bad = rows[rows[col].isna()]
    if len(bad):
        raise ValueError(f"{col} is missing for (item {bad.item_id.iloc[0]!r}, epoch {bad.epoch.iloc[0]})")
    bad = rows[rows.duplicated(["group", "item_id", "epoch"], keep=False)]
    if len(bad):
        raise ValueError(f"duplicated rows for (item {bad.item_id.iloc[0]!r}, epoch "
                         f"{bad.epoch.iloc[0]}) in group {bad.group.iloc[0]!r}, variant "
                         f"{variant!r}; expected one row per item, variant and epoch")
    columns = ["item_id", "group", "epoch", "diff"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    wide = rows.pivot(index=["group", "item_id"], columns="epoch", values=col)
    base = wide[0] if 0 in wide.columns else pd.Series(NAN, index=wide.index)
    if base.isna().any():
        group, item = base.index[base.isna()][0]
        raise ValueError(f"missing base row (item {item!r}, epoch 0) in group {group!r}, "
                         f"variant {variant!r}; {int(base.isna().sum())} item(s) lack one")
    diffs = wide.drop(columns=0, errors="ignore").sub(base, axis=0).reset_index()
    long = diffs.melt(id_vars=["group", "item_id"], var_name="epoch", value_name="diff")
    long = long.dropna(subset=["diff"]).astype({"epoch": int})
    return long.sort_values(["group", "epoch", "item_id"]).reset_index(drop=True)[columns]


def summary_row(d: np.ndarray, n_boot: int, seed: int, level: float, equivalence_dz: float) -> dict:
    """Every statistic of one set of paired differences (one row of stats.csv)."""
    one, two = wilcoxon_one_sided(d), wilcoxon_two_sided(d)
    dz = cohens_dz(d)
    low, high = bootstrap_ci_mean(d, n_boot=n_boot, seed=seed, level=level)
    hl, hl_low, hl_high = hodges_lehmann(d, level) if d.size else (NAN, NAN, NAN)
    sd = float(d.std(ddof=1)) if d.size > 1 else NAN
    tost = tost_paired(d, equivalence_dz * sd) if math.isfinite(sd) else {"margin": NAN, "p_tost": NAN}
    return {"n": int(d.size), "n_zero": one.n_zero, "mean": float(d.mean()) if d.size else NAN,
            "median": float(np.median(d)) if d.size else NAN, "sd": sd,
            "w_plus": one.w_plus, "p_one_sided": one.p, "p_two_sided": two.p,
            "wilcoxon_method": one.method, "d_z": dz,
            "hedges_g": hedges_correction(dz, d.size), "ci_low": low, "ci_high": high,
            "hl": hl, "hl_ci_low": hl_low, "hl_ci_high": hl_high,
            "tost_margin": tost["margin"], "p_tost": tost["p_tost"], "note": one.note}


def stats_table(scores: pd.DataFrame, n_boot: int = 10000, seed: int = 0, level: float = 0.95,
                equivalence_dz: float = 0.3, primary: Primary = Primary()) -> pd.DataFrame:
    """One row per (group, kind, epoch ≥ 1, measure) of the tests on Δ(ΔI).

    p_holm adjusts p_one_sided over all epochs within each group × kind × measure, so
    reporting the best epoch is paid for. p_tost tests equivalence to zero within
    ±equivalence_dz·sd (small effect), to read a non-significant row as "no effect" only
    when it is. Columns: STATS_COLUMNS (mean, median, sd, ci_*, hl* in nats or nats/token).
    """
    rows = []
    for kind in kinds_scored(scores):
        for measure in MEASURES:
            diffs = paired_differences(scores, measure, kind=kind)
            for (group, epoch), sub in diffs.groupby(["group", "epoch"], sort=True):
                is_primary = (group, kind, measure, int(epoch)) == (primary.group, primary.kind, primary.measure,
                                                                     primary.epoch)
                row = summary_row(sub["diff"].to_numpy(float), n_boot, seed, level, equivalence_dz)
                rows.append({"group": group, "kind": kind, "epoch": int(epoch), "measure": measure,
                             "role": "primary" if is_primary else "exploratory", **row})
    table = pd.DataFrame(rows, columns=STATS_COLUMNS)
    if len(table):
        table["p_holm"] = table.groupby(["group", "kind", "measure"])["p_one_sided"].transform(holm)
    order = {k: i for i, k in enumerate(KINDS)}
    return table.sort_values(["group", "kind", "measure", "epoch"], key=lambda c: c.map(order) if c.name == "kind"
                             else c).reset_index(drop=True)


def selectivity_test(scores: pd.DataFrame, epoch: int, measure: str = "sum", n_perm: int = 10000,
                     seed: int = 0, kind: str = "full") -> dict:
    """Unpaired test that literary Δ(ΔI) exceeds factual Δ(ΔI) at one epoch (one-sided).

    A two-sample permutation test on mean(literary) − mean(factual) and a Mann–Whitney U
    test; :func:`paired_selectivity` uses the benchmark's topic pairs instead.
    """
    from scipy import stats

    diffs = paired_differences(scores, measure, kind=kind)
    at = diffs[diffs["epoch"] == epoch]
    lit = at.loc[at["group"] == "literary", "diff"].to_numpy(float)
    fac = at.loc[at["group"] == "factual", "diff"].to_numpy(float)
    out = {"kind": kind, "epoch": int(epoch), "measure": measure, "n_literary": int(lit.size),
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


def paired_selectivity(scores: pd.DataFrame, epoch: int, measure: str = "sum", kind: str = "full",
                       level: float = 0.95) -> dict:
    """Literary minus factual Δ(ΔI) per topic pair (``pair_id``), tested one-sided > 0.

    Pairing removes what the two texts of a pair share (topic, length band); measure
    ``mean`` (per token) is the scale-free version. Returns n pairs, mean, HL estimate
    and CI, d_z and the one-sided Wilcoxon p.
    """
    out = {"kind": kind, "epoch": int(epoch), "measure": measure, "n_pairs": 0, "mean": NAN, "hl": NAN,
           "hl_ci_low": NAN, "hl_ci_high": NAN, "d_z": NAN, "p_one_sided": NAN, "note": ""}
    if "pair_id" not in scores.columns or scores["pair_id"].isna().all():
        return out | {"note": "scores carry no pair_id"}
    diffs = paired_differences(scores, measure, kind=kind)
    at = diffs[diffs["epoch"] == epoch]
    pairs = scores.loc[scores["variant"] == "x", ["group", "item_id", "pair_id"]].drop_duplicates()
    at = at.merge(pairs, on=["group", "item_id"]).dropna(subset=["pair_id"])
    wide = at.pivot_table(index="pair_id", columns="group", values="diff", aggfunc="first")
    if not {"literary", "factual"} <= set(wide.columns):
        return out | {"note": "needs both groups"}
    d = (wide["literary"] - wide["factual"]).dropna().to_numpy(float)
    if d.size < 2:
        return out | {"n_pairs": int(d.size), "note": f"{d.size} complete pair(s)"}
    hl, low, high = hodges_lehmann(d, level)
    test = wilcoxon_one_sided(d)
    return out | {"n_pairs": int(d.size), "mean": float(d.mean()), "hl": hl, "hl_ci_low": low, "hl_ci_high": high,
                  "d_z": cohens_dz(d), "p_one_sided": test.p, "note": test.note}


def selectivity_tables(scores: pd.DataFrame, n_perm: int = 10000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(unpaired, paired) selectivity for every kind, epoch ≥ 1 and measure scored."""
    unpaired, paired = [], []
    for kind in kinds_scored(scores):
        epochs = sorted(paired_differences(scores, kind=kind)["epoch"].unique())
        for measure in MEASURES:
            for epoch in epochs:
                unpaired.append(selectivity_test(scores, epoch, measure, n_perm=n_perm, seed=seed, kind=kind))
                paired.append(paired_selectivity(scores, epoch, measure, kind=kind))
    return pd.DataFrame(unpaired), pd.DataFrame(paired)


def metric_check(scores: pd.DataFrame, checkpoint_epoch: int = 0, measure: str = "sum", kind: str = "full",
                 items=None) -> dict:
    """Does ΔI prefer the original literary text over its degraded variant?

    For literary items scored with both variants at the epoch (or only ``items``): k =
    #items with ΔI(x) > ΔI(x_degraded) out of n non-tied items, and a one-sided exact sign
    test (binomtest, p = 0.5, alternative "greater"). Ties are excluded and counted.
    """
    from scipy import stats

    col = _value_column(scores, measure, kind)
    rows = scores[(scores["group"] == "literary") & (scores["epoch"] == checkpoint_epoch)]
    if items is not None:
        rows = rows[rows["item_id"].isin(list(items))]
    dup = rows.duplicated(["item_id", "variant"], keep=False)
    if dup.any():
        bad = rows.loc[dup].iloc[0]
        raise ValueError(f"duplicated rows for (item {bad.item_id!r}, variant "
                         f"{bad.variant!r}) at epoch {checkpoint_epoch}")
    wide = rows.pivot(index="item_id", columns="variant", values=col).reindex(columns=["x", "x_degraded"])
    both = wide.dropna(subset=["x", "x_degraded"])
    gap = (both["x"] - both["x_degraded"]).to_numpy()
    k, ties = int((gap > 0).sum()), int((gap == 0).sum())
    n = int(gap.size - ties)
    p = float(stats.binomtest(k, n, 0.5, alternative="greater").pvalue) if n else NAN
    return {"epoch": int(checkpoint_epoch), "measure": measure, "kind": kind, "n_items": int(gap.size),
            "n_incomplete": int(len(wide) - len(both)), "k": k, "n": n, "n_ties": ties,
            "share": k / n if n else NAN, "p_sign_test": p,
            "note": "" if n else "no literary item with both variants and a non-tied ΔI"}


def jsonable(obj):
    """Plain Python types only: numpy scalars → Python, NaN/inf → None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def stats_report(scores: pd.DataFrame, n_boot: int = 10000, n_perm: int = 10000, seed: int = 0,
                 equivalence_dz: float = 0.3, primary: Primary = Primary(), power_d: float = 0.5,
                 power_ns=(10, 20, 27, 30, 40, 50, 80, 100)) -> dict:
    """Everything notebook 04 saves as stats.json, JSON-serializable (NaN → None)."""
    from .controls import baseline_blind_items, baseline_metric_check, overlap_regression
    from .stats import power_table

    table = stats_table(scores, n_boot=n_boot, seed=seed, equivalence_dz=equivalence_dz, primary=primary)
    unpaired, paired = selectivity_tables(scores, n_perm=n_perm, seed=seed)
    blind = baseline_blind_items(scores)
    kinds = kinds_scored(scores)
    regression = pd.concat([overlap_regression(scores, k) for k in kinds if k in ("full", "specific")],
                           ignore_index=True) if kinds else pd.DataFrame()
    primary_rows = table[table["role"] == "primary"]
    return jsonable({
        "primary": {"declared": primary.__dict__,
                    "row": primary_rows.iloc[0].to_dict() if len(primary_rows) else None},
        "stats_table": table.to_dict("records"),
        "selectivity": unpaired.to_dict("records"),
        "paired_selectivity": paired.to_dict("records"),
        "power": power_table(power_d, power_ns).to_dict("records"),
        "metric_check": metric_check(scores),
        "metric_check_specific": metric_check(scores, kind="specific") if "specific" in kinds else None,
        "baseline_metric_check": baseline_metric_check(scores),
        "metric_check_where_baseline_blind": metric_check(scores, items=blind) | {"items": blind},
        "overlap_regression": regression.to_dict("records"),
        "paper_epoch5": PAPER_EPOCH5,
        "settings": {"n_boot": n_boot, "n_perm": n_perm, "seed": seed, "equivalence_dz": equivalence_dz},
    })
