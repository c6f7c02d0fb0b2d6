"""Figure (a): what public alignment data teaches, corrected for classifier error.

Drawn by stage 01 (notebook 01) and notebook 05 from ``01_data_audit/shares.csv``,
``shares_hand_labels.csv`` and ``shares_annotations.csv``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .plots import LABEL_COLOURS, require_columns, styled_pyplot

SHARE_COLUMNS = ["group", "role", "label", "n", "share", "ci_low", "ci_high"]


def _ordered_groups(shares: pd.DataFrame) -> list[str]:
    """Datasets by role (training first), each role's mean after its datasets."""
    groups = []
    for role in ("training", "evaluation"):
        members = [g for g in pd.unique(shares.group[shares.role == role]) if not g.startswith("mean:")]
        groups += members + ([f"mean:{role}"] if f"mean:{role}" in set(shares.group) else [])
    return groups


def fig_audit_shares(shares: pd.DataFrame, hand: pd.DataFrame | None = None,
                     ours: pd.DataFrame | None = None, bar: str = "taught"):
    """Corrected share of creative records teaching each type, per dataset and per role.

    Args:
        shares: 01_data_audit/shares.csv (Rogan–Gladen shares, bootstrap 95 % CIs).
        hand: shares_hand_labels.csv, drawn as black markers beside each bar (the
            adjudicated hand labels of that dataset's labelled records).
        ours: shares_annotations.csv (our CoT annotations, rule classifier, Wilson CIs),
            drawn hatched in a separate panel on the right.
        bar: "taught" (the headline) or "named" (the sensitivity bar).
    """
    plt = styled_pyplot()
    require_columns(shares, SHARE_COLUMNS, "shares")
    shares = shares[shares.bar == bar] if "bar" in shares else shares
    groups = _ordered_groups(shares)
    labels = [lab for lab in LABEL_COLOURS if lab in set(shares.label)]
    widths = [max(4.0, 0.75 * len(groups)), 1.2] if ours is not None else [max(4.0, 0.75 * len(groups))]
    fig, axes = plt.subplots(1, len(widths), figsize=(sum(widths) + 1.8, 3.8), sharey=True,
                             gridspec_kw={"width_ratios": widths}, squeeze=False)
    ax, width = axes[0][0], 0.8 / max(len(labels), 1)
    if hand is not None:
        hand = hand[hand.bar == bar] if "bar" in hand else hand
    for j, label in enumerate(labels):
        rows = shares[shares.label == label].set_index("group").reindex(groups)
        x = np.arange(len(groups)) + (j - (len(labels) - 1) / 2) * width
        share = 100 * rows.share.to_numpy(float)
        err = 100 * np.vstack([rows.share - rows.ci_low, rows.ci_high - rows.share])
        bars = ax.bar(x, share, width, color=LABEL_COLOURS[label], label=f"{label} (corrected)",
                      edgecolor="white", linewidth=0.5)
        ax.errorbar(x, share, yerr=np.clip(err, 0, None), fmt="none", ecolor="0.2", elinewidth=0.8, capsize=2)
        for b, g in zip(bars, groups):
            if g.startswith("mean:"):
                b.set(edgecolor="0.1", linewidth=1.2)
        if hand is not None:
            h = hand[hand.label == label].set_index("group").reindex(groups)
            ax.plot(x, 100 * h.share.to_numpy(float), "D", color="0.1", markersize=3,
                    label="adjudicated hand labels" if j == 0 else None)
    n = shares.groupby("group")["n"].first()
    ax.set_xticks(np.arange(len(groups)), [f"{g.replace('mean:', 'MEAN ')}\nn={n[g]}" for g in groups],
                  rotation=35, ha="right", fontsize=6.5)
    for k in range(1, len(groups)):
        if groups[k - 1].startswith("mean:"):
            ax.axvline(k - 0.5, color="0.4", linestyle="--", linewidth=0.8)
    ax.set(ylim=(0, 105), ylabel=f"creative records that teach the type (%, bar: {bar})",
           title="Public alignment data, corrected for classifier error (Rogan–Gladen, bootstrap 95 % CI)")
    if ours is not None:
        ax2 = axes[0][1]
        for j, label in enumerate(labels):
            r = ours[ours.label == label]
            x = np.array([(j - (len(labels) - 1) / 2) * width])
            ax2.bar(x, 100 * r.share.to_numpy(float), width, color=LABEL_COLOURS[label], hatch="///",
                    edgecolor="0.25")
            ax2.errorbar(x, 100 * r.share.to_numpy(float),
                         yerr=100 * np.vstack([r.share - r.ci_low, r.ci_high - r.share]).clip(0),
                         fmt="none", ecolor="0.2", elinewidth=0.8, capsize=2)
        ax2.set_xticks([0], [f"ours (CoT)\nn={int(ours.n.iloc[0])}"], fontsize=6.5)
        ax2.set_title("our annotations\n(rule classifier, raw)", fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=7)
    return fig
