"""Figures of the ΔI controls (notebook 05, figures h–j): what ΔI is left once word overlap
and the constraint format are taken out. Same conventions as :mod:`cqa_utils.plots`:
each function takes frames and returns a Figure; units are nats (summed over x's tokens).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .controls import delta_column
from .data import CONSTRAINT_TYPES
from .plots import GROUP_COLOURS, ordered_groups, require_columns, styled_pyplot


def fig_raw_vs_specific(scores: pd.DataFrame):
    """Mean full ΔI beside mean item-specific ΔI per group and checkpoint (variant x, ±1 s.e.).

    If the full ΔI were only the template and constraint format, the specific bars would be ~0.
    """
    plt = styled_pyplot()
    require_columns(scores, ["group", "variant", "epoch", "delta_i", "delta_i_specific"], "scores")
    rows = scores[(scores["variant"] == "x") & scores["delta_i_specific"].notna()]
    epochs = sorted(rows["epoch"].unique())
    groups = ordered_groups(rows)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.4), sharey=True, squeeze=False)
    for ax, group in zip(axes[0], groups):
        sub = rows[rows["group"] == group]
        for offset, (column, label, alpha) in enumerate((("delta_i", "full ΔI", 0.45),
                                                         ("delta_i_specific", "specific ΔI", 1.0))):
            stats = sub.groupby("epoch")[column].agg(["mean", "sem"]).reindex(epochs)
            x = np.arange(len(epochs)) + (offset - 0.5) * 0.38
            ax.bar(x, stats["mean"], width=0.36, yerr=stats["sem"], color=GROUP_COLOURS.get(group, "0.5"),
                   alpha=alpha, label=label, capsize=2)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_xticks(np.arange(len(epochs)), [f"epoch {e}" if e else "base" for e in epochs])
        ax.set(title=group, ylabel="ΔI (nats)")
        ax.legend(loc="upper left")
    fig.suptitle("Full ΔI vs the part that belongs to x's own constraints", fontsize=10)
    fig.tight_layout()
    return fig


def fig_slot_delta_delta(stats_table: pd.DataFrame, epoch: int, measure: str = "sum"):
    """Mean Δ(ΔI) at one epoch per slot (intent, audience, reality alone) and for the full y, per group."""
    plt = styled_pyplot()
    require_columns(stats_table, ["group", "kind", "epoch", "measure", "mean", "ci_low", "ci_high"], "stats_table")
    kinds = ["full", "specific", *CONSTRAINT_TYPES]
    table = stats_table[(stats_table["epoch"] == epoch) & (stats_table["measure"] == measure)
                        & stats_table["kind"].isin(kinds)]
    groups = ordered_groups(table)
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    for i, group in enumerate(groups):
        sub = table[table["group"] == group].set_index("kind").reindex(kinds)
        x = np.arange(len(kinds)) + (i - (len(groups) - 1) / 2) * 0.38
        err = np.vstack([sub["mean"] - sub["ci_low"], sub["ci_high"] - sub["mean"]])
        ax.bar(x, sub["mean"], width=0.36, yerr=err, color=GROUP_COLOURS.get(group, "0.5"), label=group, capsize=2)
    ax.axhline(0, color="0.3", linewidth=0.8)
    ax.set_xticks(np.arange(len(kinds)), ["full y", "specific", "intent only", "audience only", "reality only"])
    ax.set(ylabel=f"Δ(ΔI) at epoch {epoch} (nats)", title="What fine-tuning changed, per constraint slot")
    ax.legend()
    fig.tight_layout()
    return fig


def fig_overlap_vs_delta_i(scores: pd.DataFrame, epoch: int = 0, kind: str = "full"):
    """ΔI of each text against the share of its content words that y repeats, per group, with the fit."""
    plt = styled_pyplot()
    column = delta_column(kind)
    require_columns(scores, ["group", "variant", "epoch", "overlap", column], "scores")
    rows = scores[(scores["epoch"] == epoch) & (scores["variant"] == "x")].dropna(subset=[column, "overlap"])
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for group in ordered_groups(rows):
        sub = rows[rows["group"] == group]
        colour = GROUP_COLOURS.get(group, "0.5")
        ax.scatter(sub["overlap"], sub[column], s=14, color=colour, alpha=0.8, label=group)
        if len(sub) >= 3 and sub["overlap"].nunique() > 1:
            slope, intercept = np.polyfit(sub["overlap"], sub[column], 1)
            grid = np.linspace(sub["overlap"].min(), sub["overlap"].max(), 20)
            ax.plot(grid, intercept + slope * grid, color=colour, linewidth=1)
    ax.axhline(0, color="0.3", linewidth=0.8)
    name = "ΔI" if kind == "full" else f"{kind} ΔI"
    ax.set(xlabel="share of x's content words that occur in y", ylabel=f"{name} (nats)",
           title=f"Word overlap vs {name}, {'base model' if epoch == 0 else f'epoch {epoch}'}")
    ax.legend()
    fig.tight_layout()
    return fig
