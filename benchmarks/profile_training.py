"""Where a training step's time goes: torch.profiler over stage 02's trainer on a few annotations.

Groups the operators' self CPU time as matrix products (what the bound counts), attention,
dropout's random masks, casts and copies, and the rest, so the gap between the trainer
and the bound is a measurement, not a guess. ``make bench`` runs it as its ``profile``
phase; alone (on a quiet machine) it also writes the 25 costliest operators to
``results/bench/profile_training.txt``: ``.venv/bin/python benchmarks/profile_training.py --examples 4``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import _arguments, examples_for  # noqa: E402

from cqa_utils.config import PROJECT_ROOT  # noqa: E402
from cqa_utils.runs import write_text  # noqa: E402

GROUPS = {  # operator name prefixes -> what they are; the first match wins
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul", "mkldnn"),
    "attention": ("aten::_scaled_dot_product", "aten::scaled_dot_product", "aten::_flash_attention"),
    "dropout masks": ("aten::bernoulli", "aten::native_dropout", "aten::dropout"),
    "casts and copies": ("aten::to", "aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous"),
}
OTHER = "elementwise and other"


def group_of(name: str) -> str:
    return next((group for group, prefixes in GROUPS.items() if name.startswith(prefixes)), OTHER)


def _profile(n_examples: int):
    """(events of one epoch over ``n_examples`` annotations as a single optimizer step, cfg, plan, examples)."""
    from datasets import Dataset
    from torch.profiler import ProfilerActivity, profile
    from transformers import DataCollatorForSeq2Seq, set_seed

    from cqa_utils.stages.finetune import trainable_model
    from cqa_utils.training import IGNORE_INDEX, target_only_trainer

    cfg, plan, examples = examples_for(n_examples, {"train.grad_accum": n_examples})
    set_seed(cfg.run.seed)
    model, tokenizer = trainable_model(cfg, plan.train_dtype)
    data = Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
    trainer = target_only_trainer()(model=model, args=_arguments(cfg, plan), train_dataset=data,
                                    data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True,
                                                                         label_pad_token_id=IGNORE_INDEX))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train()
    return prof.key_averages(), plan, examples


def shares(events) -> dict[str, dict]:
    """Self CPU seconds and share of the total per group, largest first."""
    seconds: dict[str, float] = {}
    for e in events:
        seconds[group_of(e.key)] = seconds.get(group_of(e.key), 0.0) + e.self_cpu_time_total / 1e6
    total = sum(seconds.values())
    return {group: {"seconds": round(s, 2), "share": round(s / total, 3)}
            for group, s in sorted(seconds.items(), key=lambda kv: -kv[1])}


def run(n_examples: int = 4, table: bool = False) -> dict:
    """The profile record ``make bench`` keeps (``table``: also the operator table as text)."""
    events, plan, examples = _profile(n_examples)
    record = {"examples": n_examples, "tokens": sum(len(e["input_ids"]) for e in examples),
              "precision": plan.train_dtype, "self_cpu_s": round(sum(e.self_cpu_time_total for e in events) / 1e6, 2),
              "by_kind": shares(events),
              "top_operators": [{"name": e.key, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3), "calls": e.count}
                                for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]]}
    if table:
        record["table"] = events.table(sort_by="self_cpu_time_total", row_limit=25)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=4, help="annotations to train on (one optimizer step)")
    args = parser.parse_args(argv)
    record = run(args.examples, table=True)
    lines = [f"training profile: {record['examples']} examples, {record['tokens']} tokens, {record['precision']}, "
             f"total self CPU {record['self_cpu_s']:.1f} s", "", "share by kind:"]
    lines += [f"  {group:<24} {v['share']:6.1%}  {v['seconds']:7.2f} s" for group, v in record["by_kind"].items()]
    text = "\n".join(lines + ["", record["table"]])
    print(text)
    write_text(PROJECT_ROOT / "results" / "bench" / "profile_training.txt", text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
