"""One function per figure; each takes data frames (never paths) and returns a Figure.

Driven by notebook 05 (figures) through :func:`cqa_utils.stages.figures.run_figures`, which
saves every figure with :func:`save_fig` as PNG (300 dpi) and PDF under
``results/<run>/05_figures/``. Styling lives in :func:`set_style` only; literary and
factual keep the same colours in every figure. Units: ΔI and Δ(ΔI) in nats (summed over
the text's tokens) or nats/token (measure "mean"); log-probs in nats.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .data import GROUPS
from .runs import atomic_path
from .controls import delta_column

GROUP_COLOURS = {"literary": "#D55E00", "factual": "#0072B2"}  # Okabe–Ito, colour-blind safe
LABEL_COLOURS = {"craft": "#009E73", "audience": "#E69F00", "reality": "#56B4E9"}
UNITS = {"sum": "nats", "mean": "nats/token"}


def set_style() -> None:
    """The one place styling is set: seaborn whitegrid, paper context, fixed palette."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", palette=list(GROUP_COLOURS.values()),
                  rc={"figure.dpi": 110, "axes.titlesize": 10, "axes.labelsize": 9,
                      "legend.fontsize": 8, "legend.frameon": False})


def styled_pyplot():
    """pyplot with the style applied; imported late so `import cqa_utils` stays fast."""
    import matplotlib.pyplot as plt

    set_style()
    return plt


# No creation date and no library version in the files: the same figure gives the same
# bytes, so regenerating figures/ leaves git clean when the data did not change.
STABLE_METADATA = {"png": {"Software": None},
                   "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}


def save_fig(fig, name: str, out_dir: Path | str) -> list[Path]:
    """Write ``<name>.png`` (300 dpi) and ``<name>.pdf`` atomically, byte-identical for identical figures.

    Returns both paths.
    """
    paths = []
    for ext in ("png", "pdf"):
        path = Path(out_dir) / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=300, bbox_inches="tight", pad_inches=0.05,
                        metadata=STABLE_METADATA[ext])
        paths.append(path)
    return paths


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; expected {list(columns)}")


def epoch_check(frame: pd.DataFrame, epoch: int, what: str) -> None:
    have = sorted(int(e) for e in frame["epoch"].unique())
    if int(epoch) not in have:
        raise ValueError(f"epoch={epoch} is not in {what}; epochs there: {have}")


def ordered_groups(frame: pd.DataFrame) -> list[str]:
    present = list(pd.unique(frame["group"]))
    return [g for g in GROUPS if g in present] + [g for g in present if g not in GROUPS]


def fig_training_loss(log: pd.DataFrame):
    """Training loss per logged step, mean loss per epoch (markers), learning rate (twin axis).

    Args:
        log: 02_finetune/train_log.csv (step, epoch, loss, lr, ...); ``epoch`` is the
            trainer's fractional epoch, so step rows with epoch in (k−1, k] belong to k.
    """
    plt = styled_pyplot()
    require_columns(log, ["step", "epoch", "loss", "lr"], "train_log")
    log = log.sort_values("step")
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    ax.plot(log["step"], log["loss"], color="0.55", linewidth=1, label="loss per step")
    epoch_of = np.maximum(np.ceil(log["epoch"].to_numpy(float) - 1e-9), 1).astype(int)
    per_epoch = log.assign(k=epoch_of).groupby("k").agg(step=("step", "mean"), loss=("loss", "mean"))
    ax.plot(per_epoch["step"], per_epoch["loss"], "o-", color="black", markersize=5,
            label="mean loss per epoch")
    for k, row in per_epoch.iterrows():
        ax.annotate(f"epoch {k}", (row["step"], row["loss"]), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize=7)
    ax.set(xlabel="optimizer step", ylabel="training loss (nats/token)",
           title="QLoRA fine-tuning: training loss and learning rate")
    twin = ax.twinx()
    twin.plot(log["step"], log["lr"], color="#CC79A7", linestyle="--", linewidth=1, label="learning rate")
    twin.set_ylabel("learning rate", color="#CC79A7")
    twin.grid(False)
    twin.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper right")
    fig.tight_layout()
    return fig


def fig_training_lengths(lengths: pd.DataFrame):
    """Histogram of tokens per training example: the masked prompt vs the trained target.

    Args:
        lengths: 02_finetune/lengths.csv (id, prompt_tokens, target_tokens, total_tokens).
    """
    import seaborn as sns

    plt = styled_pyplot()
    require_columns(lengths, ["id", "prompt_tokens", "target_tokens"], "lengths")
    long = lengths.melt(id_vars="id", value_vars=["prompt_tokens", "target_tokens"], var_name="part",
                        value_name="tokens")
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    sns.histplot(long, x="tokens", hue="part", bins=20, ax=ax)
    ax.set(xlabel="tokens per example", ylabel="examples",
           title="Training examples: prompt (masked) vs target (trained)")
    fig.tight_layout()
    return fig


def fig_paired_delta_i(scores: pd.DataFrame, epoch: int, measure: str = "sum"):
    """Slopegraph: ΔI of each item (variant x) at epoch 0 and at `epoch`, one panel per group."""
    plt = styled_pyplot()
    col = delta_column("full", measure)
    require_columns(scores, ["item_id", "group", "variant", "epoch", col], "scores")
    epoch_check(scores, epoch, "scores")
    rows = scores[(scores["variant"] == "x") & scores["epoch"].isin([0, epoch])]
    groups = ordered_groups(rows)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups) + 0.4, 3.6), squeeze=False)
    for ax, group in zip(axes[0], groups):
        wide = rows[rows["group"] == group].pivot(index="item_id", columns="epoch", values=col)
        wide = wide.reindex(columns=[0, epoch]).dropna()
        for item, (a, b) in wide.iterrows():
            ax.plot([0, 1], [a, b], "o-", markersize=3, linewidth=1, alpha=0.8,
                    color=GROUP_COLOURS.get(group, "C0") if b > a else "0.6")
        ax.plot([0, 1], wide.mean().to_numpy(), "s-", color="black", linewidth=2.2, markersize=5,
                label="mean")
        ax.set_xticks([0, 1], ["base\n(epoch 0)", f"fine-tuned\n(epoch {epoch})"])
        ax.set(xlim=(-0.3, 1.3), ylabel=f"ΔI = log P(x|y) − log P(x) ({UNITS[measure]})",
               title=f"{group}: ΔI rose for {int((wide[epoch] > wide[0]).sum())}/{len(wide)} items")
        ax.legend(loc="best")
    fig.suptitle(f"ΔI per item before and after fine-tuning (epoch {epoch})", fontsize=10)
    fig.tight_layout()
    return fig


def fig_delta_delta_by_epoch(stats_table: pd.DataFrame, measure: str = "sum", kind: str = "full"):
    """Mean Δ(ΔI) per epoch with bootstrap CI bands per group; epoch 0 is 0 by definition.

    Markers: filled with * = one-sided Wilcoxon p_holm < 0.05; open = only the
    unadjusted p < 0.05; small dot = neither.
    """
    from matplotlib.lines import Line2D

    plt = styled_pyplot()
    require_columns(stats_table, ["group", "epoch", "measure", "mean", "ci_low", "ci_high",
                           "p_one_sided", "p_holm"], "stats_table")
    table = stats_table[(stats_table["measure"] == measure) & (stats_table.get("kind", "full") == kind)]
    table = table.sort_values("epoch")
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    ax.axhline(0, color="0.3", linewidth=0.8)
    for i, group in enumerate(ordered_groups(table)):
        sub, colour = table[table["group"] == group], GROUP_COLOURS.get(group, f"C{i}")
        x = np.r_[0, sub["epoch"].to_numpy(float)] + (i - 0.5) * 0.06
        mean = np.r_[0, sub["mean"].to_numpy(float)]
        ax.fill_between(x, np.r_[0, sub["ci_low"]], np.r_[0, sub["ci_high"]], color=colour, alpha=0.18,
                        linewidth=0)
        ax.plot(x, mean, "-", color=colour, linewidth=1.6, label=group)
        holm = sub["p_holm"].to_numpy(float) < 0.05
        raw = (sub["p_one_sided"].to_numpy(float) < 0.05) & ~holm
        xs, ms = x[1:], mean[1:]
        ax.plot(xs[~holm & ~raw], ms[~holm & ~raw], "o", color=colour, markersize=3.5)
        ax.plot(xs[raw], ms[raw], "o", mfc="white", mec=colour, mew=1.5, markersize=7)
        ax.plot(xs[holm], ms[holm], "o", color=colour, markersize=7)
        for xv, yv in zip(xs[holm], ms[holm]):
            ax.annotate("*", (xv, yv), textcoords="offset points", xytext=(0, 5), ha="center",
                        fontsize=12, color=colour)
    ax.set(xticks=sorted({0, *table["epoch"].astype(int)}), xlabel="fine-tuning epoch",
           ylabel=f"mean Δ(ΔI) vs base ({UNITS[measure]})",
           title="Δ(ΔI) by epoch (one-sided Wilcoxon; bands: bootstrap 95 % CI)")
    keys = [Line2D([], [], marker="o", ls="", color="0.3", markersize=7, label="* Holm p < 0.05"),
            Line2D([], [], marker="o", ls="", mfc="white", mec="0.3", mew=1.5, markersize=7,
                   label="unadjusted p < 0.05 only")]
    ax.legend(handles=ax.get_legend_handles_labels()[0] + keys, loc="best")
    fig.tight_layout()
    return fig


def dz_interval(d: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Approximate CI of d_z: d ± z·sqrt(1/n + d²/(2n)) (large-sample normal approx.)."""
    if not (n and n >= 2 and math.isfinite(d)):
        return math.nan, math.nan
    half = z * math.sqrt(1 / n + d * d / (2 * n))
    return d - half, d + half


def _p(p) -> str:
    """p-value for a label: 3 decimals, '< 0.001' below that, 'n/a' when missing."""
    if p is None or not math.isfinite(float(p)):
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def fig_effect_sizes(stats_table: pd.DataFrame, paper: dict, epoch: int, measure: str = "sum", kind: str = "full"):
    """Forest plot: our d_z (with approx. 95 % CI) and Hedges g at `epoch` next to the paper's d.

    The CI of d_z is the large-sample approximation d ± 1.96·sqrt(1/n + d²/(2n)), not
    an exact noncentral-t interval; at n ≈ 20 it is close enough to compare with the
    paper. The paper reports no n for the factual group, so its point has no CI.
    Args: paper = stats.PAPER_EPOCH5 (or stats.json's "paper_epoch5").
    """
    plt = styled_pyplot()
    require_columns(stats_table, ["group", "epoch", "measure", "n", "d_z", "hedges_g", "p_one_sided"],
             "stats_table")
    table = stats_table[(stats_table["measure"] == measure) & (stats_table["epoch"] == epoch)
                        & (stats_table.get("kind", "full") == kind)]
    groups = [g for g in GROUPS if g in set(table["group"]) or g in paper]
    groups += [g for g in ordered_groups(table) if g not in groups]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.8 * len(groups)))
    ticks, names = [], []

    def row(y, d, n, name, colour, note, **style):
        lo, hi = dz_interval(d, n or 0)
        if math.isfinite(d):
            ax.errorbar([d], [y], xerr=[[d - lo], [hi - d]] if math.isfinite(lo) else None,
                        color=colour, capsize=3, markersize=6, **style)
        ax.annotate(note, (1.02, y), xycoords=("axes fraction", "data"), va="center", fontsize=7)
        ticks.append(y), names.append(name)

    for i, group in enumerate(groups):
        colour, y0, ours = GROUP_COLOURS.get(group, f"C{i}"), -2.0 * i, table[table["group"] == group]
        if len(ours):
            r = ours.iloc[0]
            d, g, n = float(r["d_z"]), float(r["hedges_g"]), int(r["n"])
            row(y0, d, n, f"{group}\nours (epoch {epoch})", colour, fmt="o",
                note=f"d_z={d:.2f}, g={g:.2f}, {_p(r['p_one_sided'])}, n={n}")
            ax.plot([g], [y0], "^", color="black", markersize=5, mfc="white")
        if group in paper:
            ref = paper[group]
            row(y0 - 0.8, float(ref["d"]), ref.get("n"), f"{group}\npaper", colour, fmt="D",
                mfc="white", mew=1.5, note=f"d={ref['d']:.2f}, {_p(ref.get('p_one_sided'))}, "
                + (f"n={ref['n']}" if ref.get("n") else "n not reported"))
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.set_yticks(ticks, names)
    ax.set(ylim=(min(ticks, default=0) - 0.6, 0.6), title=f"Effect sizes: ours at epoch {epoch} vs the paper",
           xlabel="effect size of Δ(ΔI) (Cohen's d, unitless; ○ d_z ± approx. 95 % CI, △ Hedges g)")
    fig.tight_layout()
    return fig


def fig_metric_check(scores: pd.DataFrame, epoch: int = 0, measure: str = "sum"):
    """ΔI of intact x vs its degraded rewrite, literary items at `epoch`; above y = x: intact wins."""
    from .analysis import metric_check

    plt = styled_pyplot()
    col = delta_column("full", measure)
    epoch_check(scores, epoch, "scores")
    check = metric_check(scores, epoch, measure)
    rows = scores[(scores["group"] == "literary") & (scores["epoch"] == epoch)]
    wide = rows.pivot(index="item_id", columns="variant", values=col)
    wide = wide.reindex(columns=["x", "x_degraded"]).dropna()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.scatter(wide["x_degraded"], wide["x"], color=GROUP_COLOURS["literary"], s=22, zorder=3)
    values = wide.to_numpy().ravel()
    lo, hi = (values.min(), values.max()) if values.size else (0.0, 1.0)
    pad = 0.08 * (hi - lo) or 1.0
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="0.4", linewidth=0.9, label="y = x")
    ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), aspect="equal",
           xlabel=f"ΔI of degraded x ({UNITS[measure]})", ylabel=f"ΔI of intact x ({UNITS[measure]})")
    if not values.size:
        ax.text(0.5, 0.5, "no literary item with both variants", transform=ax.transAxes, ha="center")
    ax.legend(loc="upper left")
    p = check["p_sign_test"]
    ax.set_title(f"Metric check (epoch {epoch}): intact > degraded for {check['k']}/{check['n']} items"
                 + (f"\nsign test p = {p:.3g}" if p is not None and math.isfinite(p) else ""))
    fig.tight_layout()
    return fig
