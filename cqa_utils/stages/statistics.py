"""Stage 04: the ΔI statistics of a run, the controls, and the comparison with the paper (notebook 04).

Reads ``03_logprobs/scores.csv``; writes ``results/<run>/04_stats/``: ``stats.csv`` (one
row per group × ΔI kind × epoch × measure, recomputable from scores.csv; the pre-declared
primary endpoint marked ``role = primary``), ``selectivity.csv`` and
``paired_selectivity.csv`` (literary vs factual), ``overlap_regression.csv`` (ΔI on word
overlap), ``power.csv``, ``paper_comparison.csv`` and ``stats.json`` (all of it, plus the
model, n and epochs, which the README's Results section is generated from).
"""
from __future__ import annotations

from pathlib import Path

from ..analysis import PAPER_EPOCH5, Primary, stats_report
from ..config import Config
from ..data import GROUPS
from ..run_lock import locked
from ..runs import open_stage, stage_outputs, write_csv, write_json
from ..stats import headline_epoch


def paper_comparison(table, epoch: int, measure: str = "sum"):
    """Paper vs this run at one epoch, per group: n, one-sided p, effect size (the full ΔI, as the paper's)."""
    import pandas as pd

    rows = []
    for group in GROUPS:
        ours = table[(table.group == group) & (table.kind == "full") & (table.epoch == epoch)
                     & (table.measure == measure)]
        paper = PAPER_EPOCH5.get(group, {})
        row = ours.iloc[0] if len(ours) else {}
        rows.append({"group": group, "paper_n": paper.get("n"), "paper_p_one_sided": paper.get("p_one_sided"),
                     "paper_d": paper.get("d"), "epoch": epoch, "n": row.get("n"),
                     "mean_delta_delta_i": row.get("mean"), "p_one_sided": row.get("p_one_sided"),
                     "p_holm": row.get("p_holm"), "d_z": row.get("d_z"), "hedges_g": row.get("hedges_g"),
                     "ci_low": row.get("ci_low"), "ci_high": row.get("ci_high"), "p_tost": row.get("p_tost")})
    return pd.DataFrame(rows)


@locked
def run_statistics(cfg: Config, force: bool = False) -> dict[str, Path]:
    """Paired tests, effect sizes, CIs, Holm, TOST, selectivity, controls and power; returns files by name."""
    import pandas as pd

    scores_path = stage_outputs(cfg, "03")["scores"]
    stage = open_stage(cfg, "04", force)
    if stage.skipped:
        return stage.outputs()
    scores = pd.read_csv(scores_path, dtype={"item_id": str, "pair_id": str})
    epoch = headline_epoch(cfg.stats.headline_epoch, scores["epoch"])
    n_literary = int(scores[(scores.group == "literary") & (scores.epoch == 0) & (scores.variant == "x")].shape[0])
    primary = Primary(cfg.stats.primary_kind, cfg.stats.primary_measure, epoch)
    report = stats_report(scores, n_boot=cfg.stats.n_boot, n_perm=cfg.stats.n_perm, seed=cfg.stats.seed,
                          equivalence_dz=cfg.stats.equivalence_dz, primary=primary,
                          power_ns=tuple(sorted({10, 20, 27, 40, 80, max(n_literary, 2)})))
    table = pd.DataFrame(report["stats_table"])
    comparison = paper_comparison(table, epoch)
    report.update(
        headline_epoch=epoch,
        paper_comparison=comparison.astype(object).where(comparison.notna(), None).to_dict("records"),
        run={"name": cfg.run.name, "model": cfg.model.name, "benchmark": cfg.data.benchmark,
             "epochs_trained": int(scores["epoch"].max()),
             "n_items": {g: int(n) for g, n in scores[scores.epoch == 0].groupby("group")["item_id"].nunique().items()}},
    )
    outputs = {
        "stats": write_csv(stage.file("stats.csv"), table),
        "selectivity": write_csv(stage.file("selectivity.csv"), pd.DataFrame(report["selectivity"])),
        "paired_selectivity": write_csv(stage.file("paired_selectivity.csv"),
                                        pd.DataFrame(report["paired_selectivity"])),
        "overlap_regression": write_csv(stage.file("overlap_regression.csv"),
                                        pd.DataFrame(report["overlap_regression"])),
        "power": write_csv(stage.file("power.csv"), pd.DataFrame(report["power"])),
        "paper_comparison": write_csv(stage.file("paper_comparison.csv"), comparison),
        "report": write_json(stage.file("stats.json"), report),
    }
    return stage.finish(outputs, {"headline_epoch": epoch, "primary": report["primary"]["declared"]})
