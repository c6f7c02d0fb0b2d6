"""Stage 01: how much public alignment data teaches craft, audience and reality (notebook 01).

Reads the public datasets (local copies under ``audit.local_root`` or the hub), the
taxonomy and hand labels in ``data/audit/`` and the project's annotations. Writes
``results/<run>/01_data_audit/``: ``slice_sizes.csv``, ``predictions.csv`` (every creative
record with its labels and the cues that fired), ``agreement.csv`` (both classifiers
against the hand labels), ``shares.csv`` (headline classifier per dataset, plus our
annotations), ``shares_hand_labels.csv`` and the shares figure.
"""
from __future__ import annotations

from pathlib import Path

from ..audit import (agreement, attach_text, capped, classify_annotations, classify_learned, classify_rules,
                     cross_val_predict_learned, load_labels, load_taxonomy, type_shares)
from ..audit_sources import SOURCES, creative_slice, load_source, slice_sizes
from ..config import Config
from ..data import load_annotations
from ..runs import open_stage, write_csv


def audited_datasets(cfg: Config) -> list[str]:
    """``audit.datasets`` checked against the registry ([] means every registered source)."""
    names = list(cfg.audit.datasets) or list(SOURCES)
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        raise ValueError(f"audit.datasets: unknown {unknown}; registered: {sorted(SOURCES)}")
    return names


def run_data_audit(cfg: Config, force: bool = False) -> dict[str, Path]:
    """Slice, classify and measure public data; returns the files written by name."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from ..plots import fig_audit_shares, save_fig

    names = audited_datasets(cfg)
    stage = open_stage(cfg, "01", force)
    if stage.skipped:
        return stage.outputs()
    root = cfg.resolve_path(cfg.audit.local_root) if cfg.audit.source == "local" else None
    records = pd.concat([load_source(n, cfg.audit.source, root) for n in names], ignore_index=True)
    records = capped(records, cfg.audit.max_records_per_dataset, cfg.run.seed)
    creative = creative_slice(records)
    taxonomy = load_taxonomy()
    labels = load_labels()
    labels = attach_text(labels[labels.dataset.isin(names)].reset_index(drop=True), root)

    by_rules = classify_rules(labels, taxonomy)
    by_learned = cross_val_predict_learned(labels, seed=cfg.run.seed)
    agree = pd.concat([agreement(labels, by_rules).assign(classifier="rules"),
                       agreement(labels, by_learned).assign(classifier="learned (5-fold out of fold)")])

    rules = classify_rules(creative, taxonomy)
    predicted = rules if cfg.audit.classifier == "rules" else classify_learned(labels, creative, seed=cfg.run.seed)
    predictions = pd.concat([creative[["dataset", "record_id", "slice_rule", "instruction"]],
                             predicted.drop(columns=["dataset", "record_id"], errors="ignore")], axis=1)
    ours = classify_annotations(load_annotations(cfg.resolve_path(cfg.data.annotations)), taxonomy)
    shares = pd.concat([type_shares(predictions), type_shares(ours)], ignore_index=True)
    shares = shares.assign(classifier=cfg.audit.classifier)
    outputs = {
        "slice_sizes": write_csv(stage.file("slice_sizes.csv"), slice_sizes(records, creative)),
        "predictions": write_csv(stage.file("predictions.csv"), predictions),
        "agreement": write_csv(stage.file("agreement.csv"), agree),
        "shares": write_csv(stage.file("shares.csv"), shares),
        "shares_hand_labels": write_csv(stage.file("shares_hand_labels.csv"),
                                        type_shares(labels[labels.slice_rule != ""])),
    }
    figure = fig_audit_shares(pd.read_csv(outputs["shares"]))
    png, pdf = save_fig(figure, "fig_audit_shares", stage.path)
    plt.close(figure)
    outputs.update(figure_png=png, figure_pdf=pdf)
    return stage.finish(outputs, {"records": len(records), "creative": len(creative), "labels": len(labels)})
