"""Notebook 03's explorer: pick an item, a checkpoint and a condition; see where its tokens moved.

It reads only what stage 03 writes (``scores.csv`` and ``tokens.parquet``; ``cqa score
--out`` writes the same two files), so it opens any finished run. In JupyterLab it is a
small ipywidgets app around :func:`cqa_utils.token_plots.fig_token_surprise` and the item's
ΔI; in a batch run (:func:`cqa_utils.frontend.interactive_notebook` is false) nobody can
use a widget, so it shows the static figure of the default choice, which the executed
notebook and its HTML page keep.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .frontend import interactive_notebook
from .token_plots import CONDITION_LABELS, fig_token_surprise, pick_items

CONDITION_OPTIONS = [("with y: log P(x_t | y)", "cond"), ("without y: log P(x_t)", "uncond")]


def load_token_data(folder: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores, tokens) from a stage 03 folder (``results/<run>/03_logprobs/``) or a ``cqa score`` output."""
    folder = Path(folder)
    for name in ("scores.csv", "tokens.parquet"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing; is {folder} a finished stage 03 "
                                    "(results/<run>/03_logprobs/) or a cqa score --out folder?")
    return pd.read_csv(folder / "scores.csv"), pd.read_parquet(folder / "tokens.parquet")


def trained_epochs(tokens: pd.DataFrame) -> list[int]:
    """Epochs with an adapter in tokens.parquet: the checkpoints a change from the base can be shown for."""
    epochs = sorted(int(e) for e in tokens["epoch"].unique() if e > 0)
    if not epochs:
        raise ValueError("tokens.parquet holds only the base model (epoch 0): there is no fine-tuning change to show")
    return epochs


def item_options(scores: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, item id) of every scored item, literary first, as the item dropdown lists them."""
    items = scores.loc[scores["variant"] == "x", ["item_id", "group"]].drop_duplicates("item_id")
    items = items.assign(later=items["group"] != "literary").sort_values(["later", "item_id"])
    return [(f"{row.item_id} ({row.group})", row.item_id) for row in items.itertuples()]


def delta_i_summary(scores: pd.DataFrame, item_id: str, epoch: int, condition: str = "cond") -> str:
    """Two lines: the item's ΔI on the base model and at ``epoch`` and Δ(ΔI), in nats; then Δ(ΔI) split into
    the change of log P(x|y) and of log P(x), naming the one the figure colours (its panel's Σ change)."""
    rows = scores[(scores["item_id"] == item_id) & (scores["variant"] == "x")].set_index("epoch")
    missing = [e for e in (0, epoch) if e not in rows.index]
    if missing:
        raise ValueError(f"scores.csv has no row for item {item_id!r} at epoch(s) {missing}")
    base, tuned = float(rows.loc[0, "delta_i"]), float(rows.loc[epoch, "delta_i"])
    change = {c: float(rows.loc[epoch, f"logp_{c}"] - rows.loc[0, f"logp_{c}"]) for c in CONDITION_LABELS}
    shown = CONDITION_LABELS[condition].replace("x_t", "x")
    return (f"{item_id} ({rows.loc[0, 'group']}, {int(rows.loc[0, 'n_tokens'])} tokens): "
            f"ΔI = log P(x|y) − log P(x) = {base:+.2f} nats on the base model, {tuned:+.2f} at epoch {epoch}; "
            f"Δ(ΔI) = {tuned - base:+.2f} nats\n"
            f"Δ(ΔI) = change in log P(x|y) {change['cond']:+.2f} − change in log P(x) {change['uncond']:+.2f} "
            f"(epoch {epoch} − base); the figure colours each token's change in {shown}: its Σ change is "
            f"{change[condition]:+.2f} nats, not Δ(ΔI)")


def token_view(scores: pd.DataFrame, tokens: pd.DataFrame, item_id: str, epoch: int, condition: str = "cond"):
    """(ΔI sentence, per-token figure) for one choice; the figure is closed to pyplot (display it)."""
    import matplotlib.pyplot as plt

    fig = fig_token_surprise(tokens, item_id, epoch, condition=condition)
    plt.close(fig)  # shown where the caller displays it, not again by the inline backend
    return delta_i_summary(scores, item_id, epoch, condition), fig


def token_explorer(scores: pd.DataFrame, tokens: pd.DataFrame, item_id: str | None = None,
                   epoch: int | None = None, condition: str = "cond"):
    """The explorer widget in an interactive notebook; elsewhere, print the ΔI sentence and return the figure.

    Defaults: the last trained epoch, and the literary item whose ΔI rose most by then.
    """
    if condition not in CONDITION_LABELS:
        raise ValueError(f"condition={condition!r}; accepted: {sorted(CONDITION_LABELS)}")
    epochs = trained_epochs(tokens)
    epoch = epochs[-1] if epoch is None else epoch
    item_id = item_id or pick_items(scores, epoch, k=1)[0]
    if not interactive_notebook():
        summary, fig = token_view(scores, tokens, item_id, epoch, condition)
        print(summary)
        return fig
    return _widget(scores, tokens, item_id, epoch, condition, epochs)


def _widget(scores, tokens, item_id: str, epoch: int, condition: str, epochs: list[int]):
    import ipywidgets as widgets
    from IPython.display import display

    label = {"description_width": "initial"}  # the default width cuts "checkpoint" short
    controls = {
        "item_id": widgets.Dropdown(options=item_options(scores), value=item_id, description="item", style=label),
        "epoch": widgets.Dropdown(options=[(f"epoch-{e}", e) for e in epochs], value=epoch,
                                  description="checkpoint", style=label),
        # each button as wide as its label: the default fixed width cut "with y: log P(x_t | y)" to "with y: log…"
        "condition": widgets.ToggleButtons(options=CONDITION_OPTIONS, value=condition, description="condition",
                                           style=label | {"button_width": "auto"}),
    }

    def show(item_id: str, epoch: int, condition: str) -> None:
        summary, fig = token_view(scores, tokens, item_id, epoch, condition)
        print(summary)
        display(fig)

    view = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox([controls["item_id"], controls["epoch"]]), controls["condition"], view])
