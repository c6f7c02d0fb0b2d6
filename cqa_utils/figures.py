"""Stage 05: every figure of the study, from the files of stages 01–04 (notebook 05).

Reads ``01_data_audit/shares.csv``, ``02_finetune/train_log.csv``,
``03_logprobs/scores.csv`` + ``tokens.parquet`` and ``04_stats/stats.csv`` + ``stats.json``;
writes ``results/<run>/05_figures/fig_<a..g>_*.png`` (300 dpi) and ``.pdf``.
:func:`copy_reference_figures` copies them into the project's ``figures/`` folder
(``make reproduce``).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .config import PROJECT_ROOT, Config
from .runs import atomic_path, open_stage, require_done

FIGURE_NAMES = ("fig_a_audit_shares", "fig_b_training_loss", "fig_c_paired_delta_i",
                "fig_d_delta_delta_by_epoch", "fig_e_effect_sizes", "fig_f_token_surprise",
                "fig_g_metric_check")


def figure_epoch(scores, wanted: int) -> int:
    """The epoch the single-epoch figures show: `wanted` if scored, else the closest below.

    With every epoch scored this is min(wanted, last epoch); if none ≤ wanted was
    scored, the first fine-tuned epoch. Raises if only the base (epoch 0) was scored.
    """
    epochs = sorted(int(e) for e in scores["epoch"].unique() if int(e) >= 1)
    if not epochs:
        raise ValueError("scores.csv holds only epoch 0 (the base model); figures need at "
                         "least one fine-tuned epoch: re-run stage 03 after stage 02")
    below = [e for e in epochs if e <= wanted]
    return below[-1] if below else epochs[0]


def load_inputs(cfg: Config) -> dict:
    """The frames every figure needs, read from the finished stages 01–04."""
    import pandas as pd

    audit, finetune, logprobs, stats = (require_done(cfg, s) for s in ("01", "02", "03", "04"))
    report = json.loads((stats / "stats.json").read_text(encoding="utf-8"))
    return {"shares": pd.read_csv(audit / "shares.csv"),
            "log": pd.read_csv(finetune / "train_log.csv"),
            "scores": pd.read_csv(logprobs / "scores.csv", dtype={"item_id": str}),
            "tokens": pd.read_parquet(logprobs / "tokens.parquet"),
            "stats": pd.read_csv(stats / "stats.csv"),
            "paper": report["paper_epoch5"]}


def figure_builders(inputs: dict, epoch: int) -> dict:
    """{name: () -> Figure} for figures a–g on load_inputs' frames (built one at a time)."""
    from . import plots

    scores = inputs["scores"]
    items = plots.pick_items(scores, epoch, k=2) or list(
        scores.loc[scores["variant"] == "x", "item_id"].drop_duplicates()[:2])
    builders = (
        lambda: plots.fig_audit_shares(inputs["shares"]),
        lambda: plots.fig_training_loss(inputs["log"]),
        lambda: plots.fig_paired_delta_i(scores, epoch),
        lambda: plots.fig_delta_delta_by_epoch(inputs["stats"], measure="sum"),
        lambda: plots.fig_effect_sizes(inputs["stats"], inputs["paper"], epoch),
        lambda: plots.fig_token_surprise(inputs["tokens"], items, epoch),
        lambda: plots.fig_metric_check(scores, epoch=0),
    )
    return dict(zip(FIGURE_NAMES, builders))


def run_figures(cfg: Config, force: bool = False) -> list[Path]:
    """Build figures a–g from stages 01–04, save PNG + PDF in 05_figures; returns the files."""
    import matplotlib.pyplot as plt

    from .plots import save_fig

    for needed in ("01", "02", "03", "04"):
        require_done(cfg, needed)
    stage = open_stage(cfg, "05", force)
    if stage.skipped:
        return stage.outputs()
    inputs = load_inputs(cfg)
    epoch = figure_epoch(inputs["scores"], cfg.stats.headline_epoch)
    paths = []
    for name, build in figure_builders(inputs, epoch).items():
        fig = build()
        try:
            paths += save_fig(fig, name, stage.path)
        finally:
            plt.close(fig)
    print(f"[{stage.path.name}] {len(paths)} files (epoch {epoch}) in {stage.path}")
    return stage.finish(paths, {"epoch": epoch, "figures": list(FIGURE_NAMES)})


def copy_reference_figures(cfg: Config, dest: Path | str | None = None) -> list[Path]:
    """Copy the PNG and PDF files of a finished 05 stage into ``dest`` (default: figures/)."""
    source = require_done(cfg, "05")
    dest = Path(dest) if dest is not None else PROJECT_ROOT / "figures"
    copied = []
    for path in sorted(source.iterdir()):
        if path.suffix in (".png", ".pdf") and path.stem in FIGURE_NAMES:
            with atomic_path(dest / path.name) as tmp:
                shutil.copyfile(path, tmp)
            copied.append(dest / path.name)
    return copied
