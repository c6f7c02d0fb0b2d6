"""Where a training step's time goes: torch.profiler over stage 02's trainer on a few annotations.

Prints the operators that take the most self CPU time, grouped as matrix products
(what the bound counts), attention, elementwise work and the rest, and writes the table to
``results/bench/profile_training.txt``. Run it on a quiet machine:
``.venv/bin/python benchmarks/profile_training.py --examples 4``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import _arguments, examples_for  # noqa: E402

from cqa_utils.config import PROJECT_ROOT  # noqa: E402
from cqa_utils.runs import write_text  # noqa: E402

GROUPS = {  # operator name prefixes -> what they are
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul", "mkldnn"),
    "attention": ("aten::_scaled_dot_product", "aten::scaled_dot_product", "aten::_flash_attention"),
    "casts and copies": ("aten::to", "aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous"),
}


def group_of(name: str) -> str:
    for group, prefixes in GROUPS.items():
        if name.startswith(prefixes):
            return group
    return "elementwise and other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=4, help="annotations to train on (one optimizer step)")
    args = parser.parse_args(argv)

    from datasets import Dataset
    from torch.profiler import ProfilerActivity, profile
    from transformers import DataCollatorForSeq2Seq, set_seed

    from cqa_utils.stages.finetune import trainable_model
    from cqa_utils.training import IGNORE_INDEX, target_only_trainer

    cfg, plan, examples = examples_for(args.examples, {"train.grad_accum": args.examples})
    set_seed(cfg.run.seed)
    model, tokenizer = trainable_model(cfg, plan.train_dtype)
    data = Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
    trainer = target_only_trainer()(model=model, args=_arguments(cfg, plan), train_dataset=data,
                                    data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True,
                                                                         label_pad_token_id=IGNORE_INDEX))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    by_group: dict[str, float] = {}
    for e in events:
        by_group[group_of(e.key)] = by_group.get(group_of(e.key), 0.0) + e.self_cpu_time_total
    lines = [f"training profile: {args.examples} examples, {sum(len(e['input_ids']) for e in examples)} tokens, "
             f"{plan.train_dtype}, total self CPU {total / 1e6:.1f} s", "", "share by kind:"]
    lines += [f"  {group:<24} {t / total:6.1%}  {t / 1e6:7.2f} s" for group, t in
              sorted(by_group.items(), key=lambda kv: -kv[1])]
    lines += ["", events.table(sort_by="self_cpu_time_total", row_limit=25)]
    text = "\n".join(lines)
    print(text)
    write_text(PROJECT_ROOT / "results" / "bench" / "profile_training.txt", text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
