"""Training-speed levers the performance issue asked to measure, each against the project's own step.

``autocast`` is what stage 02 does (fp32 base weights under bf16 autocast, two threads on this
machine's two cores); ``bf16_weights`` loads the frozen base in bf16 and keeps the LoRA matrices
in fp32 (peft's default), with no autocast; ``autocast_compile`` is the first under
``torch.compile(dynamic=True)``; ``autocast_packed`` concatenates the examples into one row with
position ids restarting at each (transformers then builds a block-diagonal causal mask, so no
token attends across examples; each example's loss is compared with the unpacked one to show
it); ``autocast_1_thread`` is the first on one intra-op thread. Each variant runs in its own
process: forward and backward of the first ``examples`` annotations (one at a time, stage 02's
micro-batch of one, or packed into one row), logits only at target positions, once to warm up
(for compile, that pass is the compilation), then ``repeats`` more; the best pass counts. Not
part of ``make bench``: compiling takes minutes. Run alone, on a quiet machine:
``.venv/bin/python benchmarks/bench_training_variants.py`` → ``results/bench/training_variants.json``.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cqa_utils.config import PROJECT_ROOT, load_config  # noqa: E402
from cqa_utils.malloc import preload_env  # noqa: E402
from cqa_utils.runs import environment_record, write_json  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of running stage 02's step; the defaults are the project's own."""

    bf16_weights: bool = False
    compile: bool = False
    packed: bool = False
    threads: int | None = None  # None: torch's default (one per core)


VARIANTS = {
    "autocast": Variant(),
    "bf16_weights": Variant(bf16_weights=True),
    "autocast_compile": Variant(compile=True),
    "autocast_packed": Variant(packed=True),
    "autocast_1_thread": Variant(threads=1),
}


def packed(examples: list[dict]):
    """All examples in one row: input ids, labels, position ids restarting at each, and where each ends."""
    import torch

    ids = [t for e in examples for t in e["input_ids"]]
    labels = [t for e in examples for t in e["labels"]]
    positions = [i for e in examples for i in range(len(e["input_ids"]))]
    ends = torch.tensor([len(e["input_ids"]) for e in examples]).cumsum(0)
    return torch.tensor([ids]), torch.tensor([labels]), torch.tensor([positions]), ends


def example_losses(model, ids, labels, positions=None, ends=None):
    """Each example's mean loss over its targets: one example per row, or several packed into one
    (``positions`` and ``ends`` from :func:`packed`). Logits only at target positions, as in stage 02."""
    import torch

    from cqa_utils.training import target_positions

    keep = target_positions(labels)
    logits = model(input_ids=ids, position_ids=positions, logits_to_keep=keep, use_cache=False).logits
    token_loss = torch.nn.functional.cross_entropy(logits[0].float(), labels[0, keep + 1], reduction="none")
    example = (torch.zeros(len(keep), dtype=torch.long) if ends is None
               else torch.bucketize(keep + 1, ends, right=True))
    return torch.zeros(int(example.max()) + 1).index_add(0, example, token_loss) / torch.bincount(example)


def _variant(name: str, n_examples: int, repeats: int) -> dict:
    import torch
    from peft import get_peft_model

    from cqa_utils.config import load_config
    from cqa_utils.models import load_model
    from cqa_utils.training import lora_config, tokenize_examples

    variant = VARIANTS[name]
    if variant.threads:
        torch.set_num_threads(variant.threads)
    torch.manual_seed(0)
    cfg = load_config("default", {"data.max_annotations": n_examples})
    model, tokenizer = load_model(cfg.model, dtype="bfloat16" if variant.bf16_weights else "float32")
    model = get_peft_model(model, lora_config(cfg))
    if variant.compile:
        model = torch.compile(model, dynamic=True)
    model.train()
    examples = tokenize_examples(cfg, tokenizer, None)
    rows = ([packed(examples)] if variant.packed else
            [(torch.tensor([e["input_ids"]]), torch.tensor([e["labels"]]), None, None) for e in examples])

    def one_pass() -> list[float]:
        """Each example's mean loss; the gradient is their sum, packed or not."""
        losses = []
        for row in rows:
            with (contextlib.nullcontext() if variant.bf16_weights
                  else torch.autocast("cpu", dtype=torch.bfloat16)):
                per_example = example_losses(model, *row)
            per_example.sum().backward()
            losses += per_example.tolist()
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
    base = results[0]
    import torch  # noqa: F401  (loaded, so the environment record holds threads and CPU capability)

    return {"variants": [r | {"speed_vs_autocast": round(r["tokens_per_s"] / base["tokens_per_s"], 3),
                              "max_abs_loss_diff_vs_autocast": round(max(
                                  abs(a - b) for a, b in zip(r["losses"], base["losses"])), 4)}
                         for r in results],
            "environment": environment_record(load_config("default"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    os.environ.update(preload_env())  # each variant's process runs the malloc stage 02's kernels run
    write_json(PROJECT_ROOT / "results" / "bench" / "training_variants.json",
               run(args.examples, args.repeats, args.variants))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
