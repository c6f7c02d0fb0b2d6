"""What the paper's configuration would take on one GPU, estimated from ratios this project measured.

No GPU was lent where this runs, so nothing here is a GPU measurement. The work is the
published reference run's (``reference/default/efficiency.json``: tokens trained, forwarded
and scored, counted with the embedded model's tokenizer, since Qwen2.5's is not at hand
offline), charged at Qwen2.5-7B's Linear shapes (its published architecture, built on the
meta device by transformers' Qwen2 code) with the paper config's FLOP count: its gradient
checkpointing recomputes the body's forward, so 6·N_body per trained token instead of 4·N_body.
The rates are the GPU's spec-sheet dense rates (assumptions, given as arguments), and each
stage's time is its time at that rate times the wall/bound ratio the reference run measured
on CPU: a ratio from another kind of machine, which is why this is only an estimate. Where a
GPU is lent, run the paper config itself and read its ``efficiency.json`` instead.
"""
from __future__ import annotations

import json

from cqa_utils.config import PROJECT_ROOT

# Qwen2.5-7B's config.json (the paper's base model): what its Linear shapes follow from.
QWEN25_7B = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
             "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False}
H200_TFLOPS = {"bfloat16": 989.0, "float32": 67.0}  # NVIDIA's dense spec rates (no sparsity, fp32 without TF32)


def paper_shapes():
    """Qwen2.5-7B's Linear shapes, from transformers' Qwen2 model on the meta device (no weights)."""
    from accelerate import init_empty_weights
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from cqa_utils.bound import linear_shapes

    with init_empty_weights():
        return linear_shapes(Qwen2ForCausalLM(Qwen2Config(**QWEN25_7B)))


def run(record: dict | None = None, tflops: dict[str, float] = H200_TFLOPS) -> dict:
    """Per stage: the paper config's GFLOP, its seconds at the assumed rate, the CPU-measured ratio, the estimate."""
    record = record or json.loads((PROJECT_ROOT / "reference" / "default" / "efficiency.json").read_text("utf-8"))
    shapes = paper_shapes()
    train, score = record["training"], record["scoring"]
    ratios = {s["stage"]: s["ratio"] for s in record["stages"] if s["ratio"]}
    work = {"02": ("bfloat16", 6 * train["tokens"] * shapes.n_body + 4 * train["target_tokens"] * shapes.n_head),
            "03": ("float32", 2 * score["tokens"] * shapes.n_body + 2 * score["scored_tokens"] * shapes.n_head)}
    stages = {}
    for stage, (dtype, flops) in work.items():
        at_rate = flops / (tflops[dtype] * 1e12)
        stages[stage] = {"dtype": dtype, "gflop": round(flops / 1e9), "assumed_tflops": tflops[dtype],
                         "seconds_at_rate": round(at_rate, 1), "cpu_measured_ratio": ratios[stage],
                         "estimated_seconds": round(at_rate * ratios[stage], 1)}
    return {"model": "Qwen/Qwen2.5-7B", "shapes": {"n_body": shapes.n_body, "n_head": shapes.n_head},
            "work_from": record["run"], "stages": stages,
            "estimated_minutes": round(sum(s["estimated_seconds"] for s in stages.values()) / 60, 1)}
