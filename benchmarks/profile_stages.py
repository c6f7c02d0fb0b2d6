"""Where the time of training and scoring goes: torch.profiler over the stages' own code.

Training: one optimizer step of stage 02's trainer over a few annotations. Scoring: stage 03's
scorer on the first benchmark items (fp32, the bench's batch size). The operators' self CPU
time is grouped as matrix products (all the bound counts), attention, log-softmax, dropout's
random masks, casts and copies, and the rest, so the gap between a stage and the bound is a
measurement, not a guess. ``make bench`` runs it as its ``profile`` phase; alone (on a quiet
machine) it also writes the 25 costliest operators of each stage to
``results/bench/profile_<stage>.txt``: ``.venv/bin/python benchmarks/profile_stages.py``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scoring import project_requests  # noqa: E402
from bench_training import _arguments, examples_for  # noqa: E402

from cqa_utils.config import PROJECT_ROOT  # noqa: E402
from cqa_utils.runs import write_text  # noqa: E402

GROUPS = {  # operator name prefixes -> what they are; the first match wins
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul", "mkldnn"),
    "attention": ("aten::_scaled_dot_product", "aten::scaled_dot_product", "aten::_flash_attention"),
    "log-softmax": ("aten::_log_softmax", "aten::log_softmax"),
    "dropout masks": ("aten::bernoulli", "aten::native_dropout", "aten::dropout"),
    "casts and copies": ("aten::to", "aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous"),
}
OTHER = "elementwise and other"
STAGES = ("training", "scoring")


def group_of(name: str) -> str:
    return next((group for group, prefixes in GROUPS.items() if name.startswith(prefixes)), OTHER)


def _profiled(work):
    """The operator averages of ``work()`` run under torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
    return prof.key_averages()


def training_events(n_examples: int):
    """(events of one epoch over ``n_examples`` annotations as a single optimizer step, what was profiled)."""
    from datasets import Dataset
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
    return _profiled(trainer.train), {"examples": n_examples, "precision": plan.train_dtype,
                                      "tokens": sum(len(e["input_ids"]) for e in examples)}


def scoring_events(n_items: int, batch_size: int):
    """(events of one scoring pass over the requests of ``n_items`` benchmark items, what was profiled)."""
    from cqa_utils.models import load_model
    from cqa_utils.scoring import request_tokens, score_requests

    cfg, requests = project_requests(n_items)
    model, tokenizer = load_model(cfg.model)
    start = cfg.model.start_token
    score = lambda subset: score_requests(model, tokenizer, subset, batch_size=batch_size,  # noqa: E731
                                          start_token=start, progress=False)
    score(requests[:2])  # warm-up, outside the profile
    forwarded, scored = request_tokens(tokenizer, requests, start)
    return _profiled(lambda: score(requests)), {"requests": len(requests), "batch_size": batch_size,
                                                 "precision": "float32", "tokens": forwarded,
                                                 "scored_tokens": scored}


def shares(events) -> dict[str, dict]:
    """Self CPU seconds and share of the total per group, largest first."""
    seconds: dict[str, float] = {}
    for e in events:
        seconds[group_of(e.key)] = seconds.get(group_of(e.key), 0.0) + e.self_cpu_time_total / 1e6
    total = sum(seconds.values())
    return {group: {"seconds": round(s, 2), "share": round(s / total, 3)}
            for group, s in sorted(seconds.items(), key=lambda kv: -kv[1])}


def record(events, profiled: dict) -> dict:
    """What the bench keeps of one stage's profile."""
    return {**profiled, "self_cpu_s": round(sum(e.self_cpu_time_total for e in events) / 1e6, 2),
            "by_kind": shares(events),
            "top_operators": [{"name": e.key, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3), "calls": e.count}
                              for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]]}


def text(stage: str, kept: dict, events) -> str:
    """One stage's profile as the text file a reader opens: shares by kind, then the 25 costliest operators."""
    lines = [f"{stage} profile: {kept['tokens']} tokens, {kept['precision']}, total self CPU "
             f"{kept['self_cpu_s']:.1f} s", "", "share by kind:"]
    lines += [f"  {group:<24} {v['share']:6.1%}  {v['seconds']:7.2f} s" for group, v in kept["by_kind"].items()]
    return "\n".join(lines + ["", events.table(sort_by="self_cpu_time_total", row_limit=25)]) + "\n"


def run(n_examples: int = 4, n_items: int = 12, batch_size: int = 8, out: Path | None = None) -> dict:
    """The profile record ``make bench`` keeps, one entry per stage; with ``out``, each stage's text file too."""
    kept = {}
    for stage, (events, profiled) in (("training", training_events(n_examples)),
                                      ("scoring", scoring_events(n_items, batch_size))):
        kept[stage] = record(events, profiled)
        if out is not None:
            write_text(out / f"profile_{stage}.txt", text(stage, kept[stage], events))
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=4, help="annotations to train on (one optimizer step)")
    parser.add_argument("--items", type=int, default=12, help="benchmark items to score")
    args = parser.parse_args(argv)
    out = PROJECT_ROOT / "results" / "bench"
    run(args.examples, args.items, out=out)
    for stage in STAGES:
        print((out / f"profile_{stage}.txt").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
