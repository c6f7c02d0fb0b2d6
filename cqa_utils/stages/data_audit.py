"""Stage 01: how much public alignment data teaches craft, audience and reality (notebook 01).

Reads the public records (the compact copy shipped in ``data/audit/records/`` by default,
the full local copies or the hub; ShareGPT from its PyPI package), the taxonomy, the label
sample and the two labellers' and the adjudicated labels in ``data/audit/`` and the
project's annotations. Writes ``results/<run>/01_data_audit/``:

- ``sources_read.json``: what was read from every source (files, hashes, ShareGPT's cut);
- ``slice_sizes.csv``; ``predictions.csv`` (every creative record, its levels and cues);
- ``labeller_agreement.csv`` (labeller A vs B) and ``agreement.csv`` (classifiers vs the
  adjudicated labels, learned one out of fold in prompt-grouped folds), per bar;
- ``shares.csv``: raw and Rogan–Gladen corrected shares per dataset and per role (unweighted
  mean over datasets), bootstrap CIs, both bars; ``shares_hand_labels.csv`` the same from the
  adjudicated labels; ``differences.csv`` craft − audience / reality;
- ``shares_annotations.csv`` (our own CoT annotations, rule classifier), ``conclusion.json``
  (the sentence per role) and the shares figure.
"""
from __future__ import annotations

from pathlib import Path

from ..audit import (LABELS, TAUGHT, agreement, capped, classify_annotations, classify_learned,
                     classify_rules, cross_val_predict_learned, load_taxonomy, type_shares)
from ..audit_labels import attach_text, final_labels, labeller_agreement, load_labels, load_sample
from ..audit_shares import corrected_shares, direction_sentence, type_differences
from ..audit_registry import ROLES, SOURCES
from ..audit_sources import creative_slice, load_source, slice_sizes
from ..config import Config
from ..data import load_annotations
from ..run_lock import locked
from ..runs import open_stage, write_csv, write_json

BARS = {"taught": TAUGHT, "named": 1}


def audited_datasets(cfg: Config) -> list[str]:
    """``audit.datasets`` checked against the registry ([] means every registered source)."""
    names = list(cfg.audit.datasets) or list(SOURCES)
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        raise ValueError(f"audit.datasets: unknown {unknown}; registered: {sorted(SOURCES)}")
    return names


def _at_bar(hand, bar: int):
    """Hand labels as 0/1 at ``bar`` (2 = taught, 1 = named) from their levels."""
    return hand.assign(**{k: (hand[f"{k}_level"] >= bar).astype(int) for k in LABELS})


def _agreement(cfg: Config, hand, taxonomy):
    """Both classifiers against the adjudicated labels, at both bars."""
    import pandas as pd
    parts = []
    for bar_name, bar in BARS.items():
        gold = _at_bar(hand, bar)
        for who, pred in (("rules", classify_rules(hand, taxonomy, bar=bar)),
                          ("learned (prompt-grouped 5-fold, out of fold)",
                           cross_val_predict_learned(gold, seed=cfg.run.seed))):
            parts.append(agreement(gold, pred).assign(classifier=who, bar=bar_name))
    return pd.concat(parts, ignore_index=True)


def _predict(cfg: Config, hand, creative, taxonomy, bar: int):
    """Headline classifier on the creative slice, and its out-of-sample predictions on the
    labelled creative records (``pred_<label>``) from which its error rates are measured."""
    if cfg.audit.classifier == "rules":
        on_slice = classify_rules(creative, taxonomy, bar=bar)
        on_labels = classify_rules(hand, taxonomy, bar=bar)
    else:
        on_slice = classify_learned(hand, creative, seed=cfg.run.seed)
        on_labels = cross_val_predict_learned(hand, seed=cfg.run.seed)
    labelled = hand.assign(**{f"pred_{k}": on_labels[k] for k in LABELS})
    return on_slice, labelled[labelled.slice_rule != ""]


def _shares(cfg: Config, hand, creative, taxonomy, roles):
    """Corrected shares (headline classifier) and hand-label shares, for both bars."""
    import pandas as pd
    corrected, by_hand, preds = [], [], {}
    for bar_name, bar in BARS.items():
        on_slice, labelled = _predict(cfg, _at_bar(hand, bar), creative, taxonomy, bar)
        preds[bar_name] = on_slice
        slice_pred = creative[["dataset"]].join(on_slice[list(LABELS)])
        corrected.append(corrected_shares(slice_pred, labelled, roles, cfg.audit.n_boot, cfg.run.seed)
                         .assign(bar=bar_name))
        perfect = labelled.assign(**{f"pred_{k}": labelled[k] for k in LABELS})
        by_hand.append(corrected_shares(perfect, perfect, roles, cfg.audit.n_boot, cfg.run.seed)
                       .assign(bar=bar_name))
    return pd.concat(corrected, ignore_index=True), pd.concat(by_hand, ignore_index=True), preds


@locked
def run_data_audit(cfg: Config, force: bool = False) -> dict[str, Path]:
    """Slice, classify, correct and summarise public data; returns the files written by name."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from ..audit_plots import fig_audit_shares
    from ..plots import save_fig

    names = audited_datasets(cfg)
    stage = open_stage(cfg, "01", force)
    if stage.skipped:
        return stage.outputs()
    root = cfg.resolve_path(cfg.audit.local_root) if cfg.audit.source == "local" else None
    frames = {n: load_source(n, cfg.audit.source, root) for n in names}
    records = capped(pd.concat(frames.values(), ignore_index=True), cfg.audit.max_records_per_dataset,
                     cfg.run.seed)
    creative = creative_slice(records)
    taxonomy = load_taxonomy()
    full_sample = load_sample()
    sample = full_sample[full_sample.dataset.isin(names)].reset_index(drop=True)
    labels = load_labels(sample=full_sample)
    labels = labels[labels["item"].isin(sample["item"])]
    hand = attach_text(final_labels(labels, sample), frames)
    roles = {n: SOURCES[n]["role"] for n in names}

    agree = _agreement(cfg, hand, taxonomy)
    shares, by_hand, preds = _shares(cfg, hand, creative, taxonomy, roles)
    differences = type_differences(shares[shares.bar == "taught"])
    conclusion = {role: direction_sentence(shares[shares.bar == "taught"], differences, role)
                  for role in ROLES if role in roles.values()}
    predictions = pd.concat([creative[["dataset", "record_id", "slice_rule", "instruction"]],
                             preds["taught"].drop(columns=["dataset", "record_id"], errors="ignore")], axis=1)
    ours = classify_annotations(load_annotations(cfg.resolve_path(cfg.data.annotations)), taxonomy)
    totals = {n: f.attrs["n_records"] for n, f in frames.items()}
    drop = ["boot"]
    outputs = {
        "sources_read": write_json(stage.file("sources_read.json"), {n: f.attrs["read"] for n, f in frames.items()}),
        "slice_sizes": write_csv(stage.file("slice_sizes.csv"), slice_sizes(records, creative, totals)),
        "predictions": write_csv(stage.file("predictions.csv"), predictions),
        "labeller_agreement": write_csv(stage.file("labeller_agreement.csv"), labeller_agreement(labels)),
        "agreement": write_csv(stage.file("agreement.csv"), agree),
        "shares": write_csv(stage.file("shares.csv"), shares.drop(columns=drop).assign(classifier=cfg.audit.classifier)),
        "shares_hand_labels": write_csv(stage.file("shares_hand_labels.csv"), by_hand.drop(columns=drop)),
        "differences": write_csv(stage.file("differences.csv"), differences),
        "shares_annotations": write_csv(stage.file("shares_annotations.csv"), type_shares(ours)),
        "conclusion": write_json(stage.file("conclusion.json"), conclusion),
    }
    figure = fig_audit_shares(pd.read_csv(outputs["shares"]), pd.read_csv(outputs["shares_hand_labels"]),
                              pd.read_csv(outputs["shares_annotations"]))
    png, pdf = save_fig(figure, "fig_audit_shares", stage.path)
    plt.close(figure)
    outputs.update(figure_png=png, figure_pdf=pdf)
    return stage.finish(outputs, {"records": len(records), "creative": len(creative), "labels": len(hand)})
