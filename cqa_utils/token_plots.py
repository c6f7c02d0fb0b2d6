"""Figure f: where fine-tuning moved the probabilities, token by token (notebook 05).

Split from :mod:`cqa_utils.plots` (same conventions: frames in, Figure out). Also picks the
items to show and reduces the per-token frame of stage 03 (tokens.parquet) to changes.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .plots import epoch_check, require_columns, styled_pyplot

TOKEN_CMAP = "RdBu"  # blue: more likely after fine-tuning; red: less likely
CONDITION_LABELS = {"cond": "log P(x_t | y)", "uncond": "log P(x_t)"}  # the conditions tokens.parquet keeps


def token_changes(tokens: pd.DataFrame, item_id: str, epoch: int, variant: str = "x",
                  condition: str = "cond") -> pd.DataFrame:
    """Per-token log-prob of one item at `epoch` minus at the base (epoch 0).

    Returns:
        DataFrame[position, text, base, tuned, change], one row per token of x; base,
        tuned = log P(x_t | prefix) in nats; change = tuned − base (nats).
    """
    require_columns(tokens, ["epoch", "item_id", "variant", "condition", "position", "text", "logprob"], "tokens")
    rows = tokens[(tokens["item_id"] == item_id) & (tokens["variant"] == variant)
                  & (tokens["condition"] == condition)]
    if rows.empty:
        raise ValueError(f"no tokens for item {item_id!r}, variant {variant!r}, condition "
                         f"{condition!r}; items there: {sorted(tokens['item_id'].unique())[:10]}")
    epoch_check(rows, epoch, f"tokens of item {item_id!r}")
    epoch_check(rows, 0, f"tokens of item {item_id!r}")
    if rows.duplicated(["epoch", "position"]).any():
        raise ValueError(f"duplicated (epoch, position) rows for item {item_id!r}; "
                         "is the item_id shared by two groups?")
    base, tuned = (rows[rows["epoch"] == e].set_index("position") for e in (0, epoch))
    out = pd.DataFrame({"text": base["text"], "base": base["logprob"], "tuned": tuned["logprob"]})
    out = out.dropna().rename_axis("position").reset_index()
    out["change"] = out["tuned"] - out["base"]
    return out[["position", "text", "base", "tuned", "change"]]


def pick_items(scores: pd.DataFrame, epoch: int, k: int = 2, group: str = "literary") -> list[str]:
    """Items of `group` with the largest (first ⌈k/2⌉) and smallest (last ⌊k/2⌋) Δ(ΔI) at `epoch`.

    Without any item of `group`, the first k items of the scores (so figure f always has text).
    """
    from .analysis import paired_differences

    diffs = paired_differences(scores, "sum")
    diffs = diffs[(diffs["group"] == group) & (diffs["epoch"] == epoch)].sort_values("diff", ascending=False)
    ids = diffs["item_id"].tolist()
    if not ids:
        return list(scores.loc[scores["variant"] == "x", "item_id"].drop_duplicates()[:k])
    return ids if len(ids) <= k else ids[: math.ceil(k / 2)] + ids[len(ids) - k // 2:]


def _wrap(texts: Sequence[str], width: int) -> list[tuple[int, int, str]]:
    """(line, column, shown text) for each token, wrapping at `width` characters."""
    placed, line, col = [], 0, 0
    for text in texts:
        newline = "\n" in text
        shown = str(text).replace("\n", "↵").replace("\t", " ") or "∅"
        if col and col + len(shown) > width:
            line, col = line + 1, 0
        placed.append((line, col, shown))
        col += len(shown)
        if newline:
            line, col = line + 1, 0
    return placed


def fig_token_surprise(tokens: pd.DataFrame, item_id: str | Sequence[str], epoch: int,
                       variant: str = "x", width: int = 92, condition: str = "cond"):
    """The text of x, each token coloured by its change in log P(x_t | y) after fine-tuning.

    item_id may be one id or several (e.g. pick_items' output): one panel each, one
    shared colour scale symmetric around 0 (blue: more likely after fine-tuning).
    condition "uncond" shows the change in log P(x_t) instead (no constraint block).
    """
    if condition not in CONDITION_LABELS:
        raise ValueError(f"condition={condition!r}; tokens.parquet holds {sorted(CONDITION_LABELS)}")
    from matplotlib.colors import Normalize

    plt = styled_pyplot()
    ids = [item_id] if isinstance(item_id, str) else list(item_id)
    if not ids:
        raise ValueError("fig_token_surprise needs at least one item_id")
    changes = [token_changes(tokens, i, epoch, variant, condition) for i in ids]
    layouts = [_wrap(c["text"].tolist(), width) for c in changes]
    lines = [max((p[0] for p in lay), default=0) + 1 for lay in layouts]
    size = np.abs(np.concatenate([c["change"].to_numpy(float) for c in changes]))
    limit = max(float(np.quantile(size, 0.98)), 1e-3)  # a few outliers do not wash out the rest
    norm, cmap = Normalize(-limit, limit), plt.get_cmap(TOKEN_CMAP)
    fontsize, char_pt, line_pt = 7.5, 7.5 * 0.602, 7.5 * 1.75  # DejaVu Sans Mono: 0.602 em/char
    heights = [n * line_pt / 72 + 0.3 for n in lines]  # inches; + room for the panel title
    fig = plt.figure(figsize=(width * char_pt / 72 + 0.5, sum(heights) + 0.35 * len(ids) + 1.0))
    grid = fig.add_gridspec(len(ids) + 1, 1, height_ratios=heights + [0.3])
    groups = tokens.drop_duplicates("item_id").set_index("item_id")["group"] if "group" in tokens else {}
    for k, (item, change, layout) in enumerate(zip(ids, changes, layouts)):
        ax = fig.add_subplot(grid[k])
        ax.set_axis_off()
        for (line, col, shown), value in zip(layout, change["change"]):
            ax.annotate(shown, (0, 1), xycoords="axes fraction", textcoords="offset points",
                        xytext=(col * char_pt, -line * line_pt), ha="left", va="top",
                        family="DejaVu Sans Mono", fontsize=fontsize,
                        color="white" if abs(norm(value) - 0.5) > 0.35 else "black",
                        bbox=dict(boxstyle="square,pad=0.05", fc=cmap(norm(value)), ec="none"))
        ax.set_title(f"{item} ({groups.get(item, '?')}): Σ change = {change['change'].sum():+.2f} nats "
                     f"over {len(change)} tokens", loc="left", fontsize=8)
    cax = fig.add_subplot(grid[-1])
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal",
                 extend="both" if size.max() > limit else "neither",
                 label=f"{CONDITION_LABELS[condition]}: epoch − base (nats)")
    fig.suptitle(f"Per-token change in {CONDITION_LABELS[condition]} after fine-tuning (epoch {epoch} − base)",
                 fontsize=10)
    fig.tight_layout()
    return fig
