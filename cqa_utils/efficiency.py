"""A run's wall time against the machine's bound: ``results/<run>/efficiency.json`` (``cqa efficiency``).

``cqa run`` ends by writing it, on the machine that ran the study: the work each stage did
(tokens trained from ``02_finetune/train_summary.json``, tokens forwarded and scored from
``03_logprobs/timing.csv``), the matmul bound measured now at that work's own shapes and
precision (:mod:`cqa_utils.bound`), and each stage's wall time (``stage_seconds`` in its
environment record). The ratio wall / bound says how far the study is from what the
machine could do; the README's Speed section shows it (``cqa report``).
"""
from __future__ import annotations

import json
from pathlib import Path

from .bound import LinearShapes, linear_shapes, measure_bound, scoring_work, training_work
from .config import Config
from .registry import STAGES, get_stage
from .runs import is_done, refuse_published, require_done, run_dir, saved_config, write_json

FILENAME = "efficiency.json"


def model_shapes(name: str) -> LinearShapes:
    """The Linear shapes of a model, built on the meta device from its config (no weights loaded)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from .models import resolve_model_path

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model_path(name)))
    return linear_shapes(model)


def _stage_seconds(run: Path) -> dict[str, float]:
    seconds = {}
    for spec in STAGES:
        env = run / spec.folder / "environment.json"
        if is_done(run / spec.folder) and env.is_file():
            seconds[spec.key] = json.loads(env.read_text(encoding="utf-8")).get("stage_seconds")
    return {k: v for k, v in seconds.items() if v is not None}


def training_record(stage: Path) -> dict:
    """Tokens a finished stage 02 trained in its last session, the rows per product and the precision."""
    summary = json.loads((stage / "train_summary.json").read_text(encoding="utf-8"))
    batch = saved_config(stage)["train"]["batch_size"]
    total = summary["tokens_per_epoch"] * summary["epochs"]
    session = summary.get("tokens_trained_this_session") or total  # a resumed stage timed its last session only
    targets = summary["target_tokens_per_epoch"] * summary["epochs"] * session / total
    return {"tokens": int(session), "target_tokens": int(targets), "dtype": summary["train_dtype"],
            "rows": batch * summary["tokens_per_epoch"] / summary["examples"],
            "head_rows": batch * summary["target_tokens_per_epoch"] / summary["examples"],
            "resumed": summary.get("resumed_from") is not None}


def scoring_record(stage: Path) -> dict:
    """Tokens a finished stage 03 forwarded and scored (cache hits cost nothing), rows per batch and precision."""
    import pandas as pd

    timing = pd.read_csv(stage / "timing.csv")
    missing = {"forwarded_tokens", "scored_tokens", "batches"} - set(timing.columns)
    if missing:
        raise ValueError(f"{stage / 'timing.csv'} has no column(s) {sorted(missing)}: its stage 03 predates token "
                         f"counting; rerun it (cqa run --only 03 --force) to measure its efficiency")
    batches = max(int(timing["batches"].sum()), 1)
    return {"tokens": int(timing["forwarded_tokens"].sum()), "scored_tokens": int(timing["scored_tokens"].sum()),
            "dtype": saved_config(stage)["score"]["precision"], "rows": timing["forwarded_tokens"].sum() / batches,
            "head_rows": timing["scored_tokens"].sum() / batches}


def efficiency(cfg: Config, budget_s: float = 1.0) -> dict:
    """Measure the bound for this run's work and set each stage's wall time against it."""
    import torch

    run = run_dir(cfg)
    train, score = training_record(require_done(cfg, "02")), scoring_record(require_done(cfg, "03"))
    shapes = model_shapes(cfg.model.name)
    bounds = {
        "02": measure_bound(shapes, dtype=train["dtype"], rows=train["rows"], head_rows=train["head_rows"],
                            backward=True, budget_s=budget_s),
        "03": measure_bound(shapes, dtype=score["dtype"], rows=score["rows"], head_rows=score["head_rows"],
                            budget_s=budget_s),
    }
    works = {"02": training_work(train["tokens"], train["target_tokens"]),
             "03": scoring_work(score["tokens"], score["scored_tokens"])}
    stages = []
    for key, seconds in _stage_seconds(run).items():
        bound_s = bounds[key].seconds(works[key], shapes) if key in works else 0.0
        stages.append({"stage": key, "seconds": seconds, "gflop": round(works[key].gflop(shapes), 1) if key in works
                       else 0.0, "bound_seconds": round(bound_s, 1),
                       "ratio": round(seconds / bound_s, 2) if bound_s else None})
    wall = sum(s["seconds"] for s in stages)
    at_bound = sum(s["bound_seconds"] for s in stages)
    return {
        "run": cfg.run.name, "model": cfg.model.name, "shapes": shapes.as_dict(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
        "training": train, "scoring": score,
        "bound": {key: b.as_dict() for key, b in bounds.items()},
        "stages": stages,
        "study": {"wall_seconds": round(wall, 1), "bound_seconds": round(at_bound, 1),
                  "ratio": round(wall / at_bound, 2) if at_bound else None},
    }


def efficiency_is_stale(run: Path) -> bool:
    """True when stages 02 and 03 are done and efficiency.json is missing or older than either."""
    done = [run / get_stage(key).folder / "DONE" for key in ("02", "03")]
    if not all(path.is_file() for path in done):
        return False
    record = run / FILENAME
    return not record.is_file() or record.stat().st_mtime < max(path.stat().st_mtime for path in done)


def write_efficiency(cfg: Config) -> Path:
    refuse_published(run_dir(cfg) / FILENAME, "an efficiency record")
    return write_json(run_dir(cfg) / FILENAME, efficiency(cfg))


def _bound_label(bound: dict) -> str:
    return (f"{bound['dtype']}: body {bound['body_gflops']:.0f} GFLOP/s at {bound['rows']} rows, head "
            f"{bound['head_gflops']:.0f} at {bound['head_rows']}"
            + (f", backward {bound['backward_gflops']:.0f}" if bound.get("backward_gflops") else ""))


def efficiency_markdown(record: dict) -> str:
    """The README's table: each stage's wall time, its work, the time at the bound, the ratio."""
    names = {"02": "02 training", "03": "03 scoring"}
    lines = ["| stage | wall (s) | work (GFLOP) | at the bound (s) | wall / bound |", "|---|---:|---:|---:|---:|"]
    for s in record["stages"]:
        lines.append(f"| {names.get(s['stage'], s['stage'])} | {s['seconds']:.0f} | {s['gflop']:.0f} | "
                     f"{s['bound_seconds']:.0f} | {s['ratio'] if s['ratio'] is not None else '–'} |")
    study = record["study"]
    lines.append(f"| **study** | **{study['wall_seconds']:.0f}** | | **{study['bound_seconds']:.0f}** | "
                 f"**{study['ratio']}** |")
    train, score = record["training"], record["scoring"]
    lines += ["", f"Run `{record['run']}` ({record['model']}, {record['torch_threads']} threads, CPU capability "
                  f"{record['cpu_capability']}): {train['tokens']:,} tokens trained ({train['target_tokens']:,} "
                  f"targets), {score['tokens']:,} forwarded and {score['scored_tokens']:,} scored. Bound measured in "
                  f"the same session: training {_bound_label(record['bound']['02'])}; scoring "
                  f"{_bound_label(record['bound']['03'])}. FLOPs: 4·N_body per trained token + 4·N_head per target, "
                  f"2·N_body per forwarded + 2·N_head per scored token (N_body {record['shapes']['n_body']:,}, "
                  f"N_head {record['shapes']['n_head']:,}; attention not counted)."]
    if train["resumed"]:
        lines.append("Stage 02 was resumed: its time and tokens are those of its last session.")
    return "\n".join(lines)


def study_time_markdown(record: dict) -> str:
    """The README's answer to "how long does ``make reproduce`` take": the run's measured study time."""
    stages = [s["stage"] for s in record["stages"]]
    return (f"**How long it takes.** Run `{record['run']}` ({record['model']}) took "
            f"{record['study']['wall_seconds'] / 60:.0f} min on {record['torch_threads']} CPU threads (CPU "
            f"capability {record['cpu_capability']}): the measured times of its stages {stages[0]}–{stages[-1]} "
            f"(`efficiency.json`, table in [Speed](#speed)). The first `make setup` and the notebooks' own start-up "
            "come on top; a slower or busier machine takes longer, and `make reproduce` prints each stage's time "
            "as it goes.")
