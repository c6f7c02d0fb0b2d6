"""The controls that say what ΔI measures, scored by stage 03 and tested by stage 04.

ΔI = log P(x | y) − log P(x) could be large for reasons other than x fitting its own
constraints: y may repeat x's words (word priming), or any constraint-shaped text after
the template's header may help (format familiarity, which training on the same template
would raise for every x). Each control isolates one of these:

* ``specific`` — log P(x | own y) − mean over K other items' y of log P(x | y_k): the part
  of ΔI that belongs to x's own constraints; template and constraint format cancel out;
* ``intent`` / ``audience`` / ``reality`` — log P(x | one slot of y) − log P(x): ΔI per slot;
* the word-overlap baseline (:mod:`cqa_utils.overlap`), model-free, saved with the scores.

Column names: ``delta_i`` (the full ΔI) and ``delta_i_<kind>`` for the others, each
summed over x's tokens in nats, with a ``_mean`` twin in nats per token.
"""
from __future__ import annotations

import random

from .data import CONSTRAINT_TYPES, BenchmarkItem

KINDS = ("full", "specific", *CONSTRAINT_TYPES)
MEASURES = ("sum", "mean")


def delta_column(kind: str = "full", measure: str = "sum") -> str:
    """The scores.csv column of a ΔI kind and measure, e.g. ("specific", "mean") → delta_i_specific_mean."""
    if kind not in KINDS:
        raise ValueError(f"ΔI kind {kind!r}; accepted: {list(KINDS)}")
    if measure not in MEASURES:
        raise ValueError(f"measure={measure!r}; accepted: {list(MEASURES)}")
    return ("delta_i" if kind == "full" else f"delta_i_{kind}") + ("_mean" if measure == "mean" else "")


def mismatched_partners(items: list[BenchmarkItem], k: int, seed: int) -> dict[str, tuple[str, ...]]:
    """For each item, K other items of its group whose constraints it is also scored under.

    Drawn per item from ``random.Random(f"{seed}:{item id}")``, so the choice depends on the
    seed and the item only (not on file order); never the item itself; fewer than K when
    the group is smaller than K + 1.
    """
    by_group: dict[str, list[str]] = {}
    for item in items:
        by_group.setdefault(item.group, []).append(item.id)
    partners = {}
    for item in items:
        others = sorted(other for other in by_group[item.group] if other != item.id)
        partners[item.id] = tuple(random.Random(f"{seed}:{item.id}").sample(others, min(k, len(others))))
    return partners


def control_values(logp: dict[str, float], n_tokens: int) -> dict[str, float]:
    """The ΔI of every kind scored, from the summed log-probs (nats) of one text by condition.

    ``logp`` holds ``cond`` and ``uncond``, and optionally ``mismatch:<id>`` and
    ``slot:<type>`` entries; kinds whose conditions are absent are left out.
    Example: {"cond": -10, "uncond": -14, "mismatch:b": -13, "mismatch:c": -11} gives
    delta_i = 4, delta_i_specific = -10 − (−12) = 2 (and the per-token twins).
    """
    values = {"full": logp["cond"] - logp["uncond"]}
    mismatched = [v for name, v in logp.items() if name.startswith("mismatch:")]
    if mismatched:
        values["specific"] = logp["cond"] - sum(mismatched) / len(mismatched)
    for slot in CONSTRAINT_TYPES:
        if f"slot:{slot}" in logp:
            values[slot] = logp[f"slot:{slot}"] - logp["uncond"]
    out = {}
    for kind, value in values.items():
        out[delta_column(kind, "sum")] = value
        out[delta_column(kind, "mean")] = value / n_tokens
    return out


def _variant_wide(scores, column: str, epoch: int = 0):
    """Literary items at one epoch with one column per variant (x, x_degraded) of ``column``."""
    rows = scores[(scores["group"] == "literary") & (scores["epoch"] == epoch)]
    wide = rows.pivot_table(index="item_id", columns="variant", values=column, aggfunc="first")
    return wide.reindex(columns=["x", "x_degraded"]).dropna()


def baseline_metric_check(scores) -> dict:
    """The metric check done by word overlap alone: does y share more words with x than with x_degraded?

    Model-free (the ``y_words`` column of scores.csv). share = (ahead + tied / 2) / n, so
    0.5 is chance; a share near the model's would mean the model's check is word matching.
    """
    if "y_words" not in scores.columns:
        return {"n": 0, "note": "scores carry no overlap columns"}
    wide = _variant_wide(scores, "y_words")
    gap = (wide["x"] - wide["x_degraded"]).to_numpy()
    ahead, tied, n = int((gap > 0).sum()), int((gap == 0).sum()), int(gap.size)
    return {"n": n, "ahead": ahead, "tied": tied, "behind": n - ahead - tied,
            "share": (ahead + tied / 2) / n if n else float("nan"), "note": ""}


def baseline_blind_items(scores) -> list[str]:
    """Literary items where the overlap baseline does not favour the intact text (x ≤ x_degraded)."""
    if "y_words" not in scores.columns:
        return []
    wide = _variant_wide(scores, "y_words")
    return sorted(wide.index[wide["x"] <= wide["x_degraded"]])


def overlap_regression(scores, kind: str = "full", measure: str = "sum"):
    """ΔI of x regressed on its word overlap with y, per group and epoch: slope, R², p, n.

    A large R² says ΔI tracks how many of x's words y gives away, i.e. word priming.
    """
    import pandas as pd
    from scipy import stats

    column = delta_column(kind, measure)
    rows = []
    if "overlap" not in scores.columns or column not in scores.columns:
        return pd.DataFrame(rows)
    x_rows = scores[(scores["variant"] == "x")].dropna(subset=[column, "overlap"])
    for (group, epoch), sub in x_rows.groupby(["group", "epoch"], sort=True):
        row = {"kind": kind, "measure": measure, "group": group, "epoch": int(epoch), "n": len(sub),
               "slope": float("nan"), "intercept": float("nan"), "r2": float("nan"), "p": float("nan")}
        if len(sub) >= 3 and sub["overlap"].nunique() > 1:
            fit = stats.linregress(sub["overlap"], sub[column])
            row.update(slope=fit.slope, intercept=fit.intercept, r2=fit.rvalue ** 2, p=fit.pvalue)
        rows.append(row)
    return pd.DataFrame(rows)
