"""Training-speed levers the performance issue asked to measure, each against the project's own step.

``autocast`` is what stage 02 does (fp32 base weights under bf16 autocast); ``bf16_weights``
loads the frozen base in bf16 and keeps the LoRA matrices in fp32 (peft's default), with no
autocast; ``autocast_compile`` is the first under ``torch.compile(dynamic=True)``. Each variant
runs in its own process: forward and backward of the first ``examples`` annotations one at a
time (stage 02's micro-batch of one, logits only at target positions), once to warm up (for
compile, that pass is the compilation), then ``repeats`` more; the best pass counts. Not part
of ``make bench``: compiling takes minutes. Run alone, on a quiet machine:
``.venv/bin/python benchmarks/bench_training_variants.py`` → ``results/bench/training_variants.json``.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cqa_utils.config import PROJECT_ROOT, load_config  # noqa: E402
from cqa_utils.runs import environment_record, write_json  # noqa: E402

VARIANTS = ("autocast", "bf16_weights", "autocast_compile")


def _variant(name: str, n_examples: int, repeats: int) -> dict:
    import torch
    from peft import get_peft_model

    from cqa_utils.config import load_config
    from cqa_utils.models import load_model
    from cqa_utils.training import lora_config, target_positions, tokenize_examples

    torch.manual_seed(0)
    cfg = load_config("default", {"data.max_annotations": n_examples})
    model, tokenizer = load_model(cfg.model, dtype="bfloat16" if name == "bf16_weights" else "float32")
    model = get_peft_model(model, lora_config(cfg))
    if name.endswith("_compile"):
        model = torch.compile(model, dynamic=True)
    model.train()
    examples = tokenize_examples(cfg, tokenizer, None)

    def one_pass() -> list[float]:
        losses = []
        for e in examples:
            ids, labels = torch.tensor([e["input_ids"]]), torch.tensor([e["labels"]])
            keep = target_positions(labels)
            autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if name.startswith("autocast")
                        else contextlib.nullcontext())
            with autocast:
                logits = model(input_ids=ids, logits_to_keep=keep).logits
            loss = torch.nn.functional.cross_entropy(logits[0].float(), labels[0, keep + 1])
            loss.backward()
            losses.append(loss.item())
        model.zero_grad(set_to_none=True)
        return losses

    began = time.perf_counter()
    losses = one_pass()
    first = time.perf_counter() - began
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - began)
    tokens = sum(len(e["input_ids"]) for e in examples)
    return {"variant": name, "examples": n_examples, "tokens": tokens, "first_pass_s": round(first, 2),
            "times": [round(t, 2) for t in times], "tokens_per_s": round(tokens / min(times), 1),
            "losses": [round(x, 4) for x in losses]}


def run(n_examples: int = 4, repeats: int = 2, variants=VARIANTS) -> dict:
    """Every variant asked for, after the project's own (``autocast``, the yardstick of each ratio)."""
    results = []
    for name in ["autocast", *[v for v in variants if v != "autocast"]]:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            results.append(pool.submit(_variant, name, n_examples, repeats).result())
        print(json.dumps(results[-1]), flush=True)
    base = results[0]["tokens_per_s"]
    import torch  # noqa: F401  (loaded, so the environment record holds threads and CPU capability)

    return {"variants": [r | {"speed_vs_autocast": round(r["tokens_per_s"] / base, 3)} for r in results],
            "environment": environment_record(load_config("default"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args(argv)
    write_json(PROJECT_ROOT / "results" / "bench" / "training_variants.json",
               run(args.examples, args.repeats, args.variants))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
