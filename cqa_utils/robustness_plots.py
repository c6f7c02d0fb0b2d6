"""Figures of a grid of runs (notebook 06): arms against seeds. Same conventions as
:mod:`cqa_utils.plots`: each function takes the frames of :mod:`cqa_utils.robustness` and
returns a Figure; Δ(ΔI) in nats summed over x's tokens; literary and factual keep their colours.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .plots import GROUP_COLOURS, ordered_groups, require_columns, styled_pyplot
from .robustness import ARM, CONTROL

KIND_TITLES = {"full": "raw ΔI (delta_i)", "specific": "item-specific ΔI"}


def _kinds(frame: pd.DataFrame) -> list[str]:
    return [k for k in KIND_TITLES if k in set(frame["kind"])]


def fig_arm_deltas(per_seed: pd.DataFrame, arms: pd.DataFrame):
    """Δ(ΔI) per arm × group, one panel per kind: every seed's mean as a point, the seed-averaged mean ± CI as a bar."""
    plt = styled_pyplot()
    require_columns(per_seed, ["kind", "arm", "group", "seed", "mean"], "per_seed")
    require_columns(arms, ["kind", "arm", "group", "mean", "ci_low", "ci_high"], "arm summaries")
    kinds, groups = _kinds(arms), ordered_groups(arms)
    names = list(pd.unique(arms["arm"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.4 * len(kinds), 3.4), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for i, group in enumerate(groups):
            colour = GROUP_COLOURS.get(group, "0.5")
            offset = (i - (len(groups) - 1) / 2) * 0.36
            summary = arms[(arms["kind"] == kind) & (arms["group"] == group)].set_index("arm").reindex(names)
            x = np.arange(len(names)) + offset
            err = np.vstack([summary["mean"] - summary["ci_low"], summary["ci_high"] - summary["mean"]])
            ax.bar(x, summary["mean"], width=0.34, yerr=err, color=colour, alpha=0.35, capsize=2, label=group)
            seeds = per_seed[(per_seed["kind"] == kind) & (per_seed["group"] == group)]
            ax.scatter(offset + seeds["arm"].map({a: j for j, a in enumerate(names)}), seeds["mean"], s=14,
                       color=colour, edgecolor="white", linewidth=0.5, zorder=3)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_xticks(np.arange(len(names)), names, rotation=20)
        ax.set(title=KIND_TITLES[kind], ylabel="Δ(ΔI) at the headline epoch (nats)")
    axes[0][0].legend(loc="upper right")
    fig.suptitle("What each arm changed: bars = mean over items of the seed average (95% CI), points = one seed",
                 fontsize=9)
    fig.tight_layout()
    return fig


def fig_arm_contrast(contrasts: pd.DataFrame, tests: pd.DataFrame):
    """Per-item cot − shuffled_cot Δ(ΔI) (seed-averaged), per group and kind, with the Hodges–Lehmann estimate and CI."""
    plt = styled_pyplot()
    require_columns(contrasts, ["kind", "group", "item_id", "contrast"], "item contrasts")
    require_columns(tests, ["kind", "group", "hl", "hl_ci_low", "hl_ci_high", "p_one_sided"], "contrast tests")
    kinds, groups = _kinds(contrasts), ordered_groups(contrasts)
    if not kinds:  # a grid still running: one of the two arms has no finished run yet
        fig, ax = plt.subplots(figsize=(4.5, 2.0))
        ax.text(0.5, 0.5, f"no contrast yet: the grid has no finished run\nof both {ARM} and {CONTROL}",
                ha="center", va="center", fontsize=9)
        ax.set_axis_off()
        return fig
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 3.4), sharey=True, squeeze=False)
    jitter = np.random.default_rng(0)
    for ax, kind in zip(axes[0], kinds):
        for i, group in enumerate(groups):
            items = contrasts[(contrasts["kind"] == kind) & (contrasts["group"] == group)]
            colour = GROUP_COLOURS.get(group, "0.5")
            ax.scatter(i + jitter.uniform(-0.12, 0.12, len(items)), items["contrast"], s=12, color=colour, alpha=0.7)
            row = tests[(tests["kind"] == kind) & (tests["group"] == group)]
            if len(row):
                r = row.iloc[0]
                ax.errorbar(i + 0.28, r["hl"], yerr=[[r["hl"] - r["hl_ci_low"]], [r["hl_ci_high"] - r["hl"]]],
                            fmt="D", color="0.15", markersize=4, capsize=3)
                ax.annotate(f"p = {r['p_one_sided']:.2g}", (i + 0.34, r["hl"]), fontsize=7, va="center")
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_xlim(-0.5, len(groups) - 0.1)
        ax.set(title=KIND_TITLES[kind], ylabel=f"{ARM} − {CONTROL} Δ(ΔI) per item (nats)")
    fig.suptitle("The arm contrast per item (seed-averaged); diamond = Hodges–Lehmann estimate, 95% CI", fontsize=9)
    fig.tight_layout()
    return fig


def fig_seed_spread(per_seed: pd.DataFrame):
    """One-sided p (log scale) and d_z of every seed, per arm × group; columns = ΔI kinds."""
    plt = styled_pyplot()
    require_columns(per_seed, ["kind", "arm", "group", "seed", "p_one_sided", "d_z"], "per_seed")
    kinds, groups = _kinds(per_seed), ordered_groups(per_seed)
    names = list(pd.unique(per_seed["arm"]))
    fig, axes = plt.subplots(2, len(kinds), figsize=(3.4 * len(kinds), 5.2), sharex=True, squeeze=False)
    for col, kind in enumerate(kinds):
        for i, group in enumerate(groups):
            sub = per_seed[(per_seed["kind"] == kind) & (per_seed["group"] == group)]
            x = sub["arm"].map({a: j for j, a in enumerate(names)}) + (i - (len(groups) - 1) / 2) * 0.3
            for row, column in enumerate(("p_one_sided", "d_z")):
                axes[row][col].scatter(x, sub[column], s=16, color=GROUP_COLOURS.get(group, "0.5"), label=group)
        axes[0][col].axhline(0.05, color="0.3", linewidth=0.8, linestyle="--")
        axes[0][col].set(yscale="log", title=KIND_TITLES[kind], ylabel="one-sided Wilcoxon p per seed")
        axes[1][col].axhline(0, color="0.3", linewidth=0.8)
        axes[1][col].set(ylabel="d_z per seed")
        axes[1][col].set_xticks(np.arange(len(names)), names, rotation=20)
    axes[0][0].legend(loc="lower right")
    fig.suptitle("How much reseeding alone moves the test (dashed: p = 0.05)", fontsize=9)
    fig.tight_layout()
    return fig
