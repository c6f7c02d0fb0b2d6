"""Stage 00: record the environment and prove the embedded model works (notebook 00).

Writes ``results/<run>/00_environment/`` with ``checks.json``: package versions, the
device and precision plan, 4-bit availability, the model cache, and a live check that a
normal sentence scores far higher per token than the same words shuffled.
"""
from __future__ import annotations

from pathlib import Path

from .config import Config
from .runs import open_stage, write_json

SANITY_SENTENCES = (
    "The children walked to school in the morning and came home for lunch at noon.",
    "She poured the tea, waited for it to cool, and drank it slowly by the window.",
    "Water boils at a lower temperature on a high mountain than at sea level.",
)
MIN_MARGIN_NATS = 1.0  # real sentences beat shuffled ones by ~2-4 nats/token on the embedded model


def run_environment_check(cfg: Config, force: bool = False) -> list[Path]:
    """Check versions, device, 4-bit support and the model; returns the files written."""
    from .models import four_bit_status, load_model, model_cache_status, plan_device
    from .scoring import sentence_vs_shuffled

    stage = open_stage(cfg, "00", force)
    if stage.skipped:
        return stage.outputs()
    plan = plan_device(cfg.model, cfg.train.precision)
    model, tokenizer = load_model(cfg.model)
    sanity = [sentence_vs_shuffled(model, tokenizer, s) for s in SANITY_SENTENCES]
    failed = [s for s in sanity if s["margin_nats_per_token"] < MIN_MARGIN_NATS]
    if failed:
        raise RuntimeError(f"the model fails the sentence-vs-shuffled check: {failed}")
    checks = {
        "device_plan": plan.as_dict(),
        "four_bit": four_bit_status(),
        "model": {"name": cfg.model.name, "parameters": sum(p.numel() for p in model.parameters()),
                  "cache": model_cache_status()},
        "sanity": sanity,
    }
    out = write_json(stage.file("checks.json"), checks)
    return stage.finish([out], {"min_margin": min(s["margin_nats_per_token"] for s in sanity)})
