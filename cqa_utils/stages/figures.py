"""Stage 05: every figure of the study, from the files of stages 01–04 (notebook 05).

Reads ``01_data_audit/shares.csv``, ``02_finetune/train_log.csv``,
``03_logprobs/scores.csv`` + ``tokens.parquet`` and ``04_stats/stats.csv`` + ``stats.json``;
writes ``results/<run>/05_figures/fig_<a..k>_*.png`` (300 dpi) and ``.pdf`` (h–j, the
controls, only when stage 03 scored them; k, across models, when this run and the runs
published in ``reference/`` hold more than one model).
``cqa report`` copies the reference run's figures into the project's ``figures/`` folder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from .. import audit_plots, control_plots, model_plots, plots, token_plots
from ..config import Config
from ..publish import REFERENCE_DIR
from ..report import published_model_reports
from ..run_lock import locked
from ..runs import open_stage, stage_outputs


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
    """The frames every figure needs, read from the named outputs of stages 01–04."""
    import pandas as pd

    audit, finetune, logprobs, stats = (stage_outputs(cfg, s) for s in ("01", "02", "03", "04"))
    report = json.loads(stats["report"].read_text(encoding="utf-8"))
    return {"shares": pd.read_csv(audit["shares"]),
            "shares_hand_labels": pd.read_csv(audit["shares_hand_labels"]),
            "shares_annotations": pd.read_csv(audit["shares_annotations"]),
            "log": pd.read_csv(finetune["train_log"]),
            "scores": pd.read_csv(logprobs["scores"], dtype={"item_id": str}),
            "tokens": pd.read_parquet(logprobs["tokens"]),
            "stats": pd.read_csv(stats["stats"]),
            "paper": report["paper_epoch5"],
            "models": model_reports(report)}


def model_reports(report: dict) -> list[dict]:
    """This run's stage 04 report, then those of the single-model runs published in reference/
    (one per model and run name: a published copy of this run is not drawn twice)."""
    seen = {(report["run"]["model"], report["run"]["name"])}
    reports = [report]
    for other in published_model_reports(REFERENCE_DIR):
        key = (other["run"]["model"], other["run"]["name"])
        if key not in seen:
            seen.add(key)
            reports.append(other)
    return reports


def build_figures(inputs: dict, epoch: int) -> Iterator[tuple[str, object]]:
    """(name, Figure) for figures a–k, built one at a time so each can be saved and closed."""
    scores = inputs["scores"]
    yield "fig_a_audit_shares", audit_plots.fig_audit_shares(
        inputs["shares"], inputs["shares_hand_labels"], inputs["shares_annotations"])
    yield "fig_b_training_loss", plots.fig_training_loss(inputs["log"])
    yield "fig_c_paired_delta_i", plots.fig_paired_delta_i(scores, epoch)
    yield "fig_d_delta_delta_by_epoch", plots.fig_delta_delta_by_epoch(inputs["stats"], measure="sum")
    yield "fig_e_effect_sizes", plots.fig_effect_sizes(inputs["stats"], inputs["paper"], epoch)
    yield "fig_f_token_surprise", token_plots.fig_token_surprise(inputs["tokens"], token_plots.pick_items(scores, epoch), epoch)
    yield "fig_g_metric_check", plots.fig_metric_check(scores, epoch=0)
    if "delta_i_specific" in scores and scores["delta_i_specific"].notna().any():
        yield "fig_h_raw_vs_specific", control_plots.fig_raw_vs_specific(scores)
        yield "fig_i_slot_delta_delta", control_plots.fig_slot_delta_delta(inputs["stats"], epoch)
    if "overlap" in scores:
        yield "fig_j_overlap_vs_delta_i", control_plots.fig_overlap_vs_delta_i(scores, epoch=0)
    if len(model_plots.models_in(inputs["models"])) > 1:
        yield "fig_k_across_models", model_plots.fig_across_models(inputs["models"])


@locked
def run_figures(cfg: Config, force: bool = False) -> dict[str, Path]:
    """Build figures a–k from stages 01–04 and save PNG + PDF in 05_figures; returns files by name."""
    import matplotlib.pyplot as plt

    inputs = load_inputs(cfg)  # fails, naming the missing stage, before this stage is opened
    stage = open_stage(cfg, "05", force)
    if stage.skipped:
        return stage.outputs()
    epoch = figure_epoch(inputs["scores"], cfg.stats.headline_epoch)
    outputs = {}
    for name, fig in build_figures(inputs, epoch):
        try:
            outputs |= {path.name: path for path in plots.save_fig(fig, name, stage.path)}
        finally:
            plt.close(fig)
    print(f"[{stage.path.name}] {len(outputs)} files (epoch {epoch}) in {stage.path}")
    return stage.finish(outputs, {"epoch": epoch})
