"""Stage 00: record the environment and prove the model works (notebook 00).

Writes ``results/<run>/00_environment/checks.json``: the device and precision plan, 4-bit
availability, the model cache, and a live check that ordinary sentences score far higher
per token than the same words shuffled (:func:`cqa_utils.scoring.sanity_check`).
"""
from __future__ import annotations

from pathlib import Path

from ..config import EMBEDDED_PREFIX, Config
from ..run_lock import locked
from ..runs import open_stage, write_json


@locked
def run_environment(cfg: Config, force: bool = False) -> dict[str, Path]:
    """Check device, 4-bit support and the model; returns ``{"checks": checks.json}``."""
    from ..embedded import model_cache_status
    from ..models import four_bit_status, load_model, plan_device
    from ..scoring import sanity_check

    stage = open_stage(cfg, "00", force)
    if stage.skipped:
        return stage.outputs()
    plan = plan_device(cfg.model, cfg.train.precision)
    model, tokenizer = load_model(cfg.model)
    sanity = sanity_check(model, tokenizer, start_token=cfg.model.start_token)
    checks = {
        "device_plan": plan.as_dict(),
        "four_bit": four_bit_status(),
        "model": {"name": cfg.model.name, "parameters": sum(p.numel() for p in model.parameters()),
                  "cache": model_cache_status(cfg.model.name) if cfg.model.name.startswith(EMBEDDED_PREFIX) else None},
        "sanity": sanity,
    }
    out = write_json(stage.file("checks.json"), checks)
    return stage.finish({"checks": out}, {"min_margin": min(s["margin_nats_per_token"] for s in sanity)})
