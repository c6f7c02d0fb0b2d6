"""Scoring speed and agreement: cqa_utils.scoring vs lm-evaluation-harness on the same tokens,
against this machine's fp32 bound, and merged vs unmerged adapters.

Both score the same (prefix, continuation) pairs of the benchmark with the embedded model in
fp32 on CPU. lm-eval gets the start token written into the context and both get lm-eval's
whitespace split, so the two see identical token sequences. Each is timed ``repeats`` times,
the two taking turns, and the medians are compared. The bound counts 2·N_body per forwarded
token + 2·N_head per scored token (:mod:`cqa_utils.bound`), timed at the batches' own mean row
counts.
"""
from __future__ import annotations

import statistics
import tempfile
import time


def project_requests(n_items: int):
    """(cfg, requests) of the first items in lm-eval's split: the context's trailing whitespace moves into the
    continuation (lm-eval scores it there), so both scorers see the same tokens."""
    from cqa_utils.config import load_config
    from cqa_utils.scoring import ScoreRequest
    from cqa_utils.stages.logprobs import benchmark_items, build_requests

    cfg = load_config("default")
    built, _ = build_requests(benchmark_items(cfg)[:n_items], cfg.prompt.template)
    return cfg, [ScoreRequest(r.key, r.prefix.rstrip(), r.prefix[len(r.prefix.rstrip()):] + r.continuation)
                 for r in built]


def alternating(fns: dict, repeats: int) -> dict[str, tuple[float, list[float], object]]:
    """(median seconds, every timing, the last result) of each function, their runs taking turns
    (a, b, a, b, …): a machine that speeds up or slows down during the bench (a shared host, a
    clock that moves) then shifts every median alike instead of favouring whichever ran first."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    last: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            began = time.perf_counter()
            last[name] = fn()
            times[name].append(time.perf_counter() - began)
    return {name: (statistics.median(t), [round(x, 3) for x in t], last[name]) for name, t in times.items()}


def timed(fn, repeats: int) -> tuple[float, list[float], object]:
    """(median seconds, every timing, the last result) of ``fn()`` run ``repeats`` times."""
    return alternating({"fn": fn}, repeats)["fn"]


def scoring_bound(model, tokenizer, requests, batch_size: int, start_token: str, seconds: float, dtype="float32"):
    """(bound record, fraction of the bound reached by a scoring pass that took ``seconds``)."""
    from cqa_utils.bound import linear_shapes, measure_bound, scoring_work
    from cqa_utils.scoring import request_tokens

    shapes = linear_shapes(model)
    forwarded, scored = request_tokens(tokenizer, requests, start_token)
    batches = -(-len(requests) // batch_size)
    bound = measure_bound(shapes, dtype=dtype, rows=forwarded / batches, head_rows=scored / batches)
    at_bound = bound.seconds(scoring_work(forwarded, scored), shapes)
    return {**bound.as_dict(), "forwarded_tokens": forwarded, "scored_tokens": scored,
            "bound_seconds": round(at_bound, 2)}, at_bound / seconds


def _adapter_merge(model, tokenizer, requests, batch_size: int, start_token: str) -> dict:
    """Merged (what stage 03 does) vs peft's unmerged LoRA layers, on a random r=16 adapter
    (seeded: how far the two orders of summation drift apart grows with the adapter's size)."""
    import numpy as np
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from cqa_utils.scoring import logprob_sum, score_requests
    from cqa_utils.stages.logprobs import Checkpoint, applied

    folder = tempfile.mkdtemp()
    torch.manual_seed(0)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)  # B ≠ 0
    wrapped = get_peft_model(model, lora)  # injects LoRA layers into the base in place
    wrapped.save_pretrained(folder)
    model = wrapped.unload()  # and takes them out again, unmerged
    score = lambda m: score_requests(m, tokenizer, requests, batch_size=batch_size, start_token=start_token,  # noqa: E731
                                     progress=False)

    def merged():
        with applied(model, Checkpoint("random", 1, folder)) as scorer:
            return score(scorer)

    merged_s, _, merged_scores = timed(merged, 1)
    peft_model = PeftModel.from_pretrained(model, folder, is_trainable=False)
    unmerged_s, _, unmerged_scores = timed(lambda: score(peft_model), 1)
    peft_model.unload()
    per_token = max(float(np.abs(a.logprobs - b.logprobs).max()) for a, b in zip(merged_scores, unmerged_scores))
    sums = max(abs(logprob_sum(a) - logprob_sum(b)) for a, b in zip(merged_scores, unmerged_scores))
    return {"merged_seconds": round(merged_s, 2), "unmerged_seconds": round(unmerged_s, 2),
            "speedup": round(unmerged_s / merged_s, 2), "max_abs_diff_nats_per_token": per_token,
            "max_abs_diff_nats_sum": sums}


def run(n_items: int = 12, batch_size: int = 8, repeats: int = 3) -> dict:
    import numpy as np
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from cqa_utils.models import load_model
    from cqa_utils.scoring import logprob_sum, score_requests

    cfg, requests = project_requests(n_items)
    model, tokenizer = load_model(cfg.model)
    start = cfg.model.start_token
    lm = HFLM(pretrained=model, tokenizer=tokenizer, device="cpu", batch_size=batch_size, logits_cache=False)
    instances = [Instance("loglikelihood", {}, (start + r.prefix, r.continuation), i) for i, r in enumerate(requests)]
    ours_fn = lambda subset: score_requests(model, tokenizer, subset, batch_size=batch_size,  # noqa: E731
                                            start_token=start, progress=False)
    theirs_fn = lambda subset: lm.loglikelihood(subset, disable_tqdm=True)  # noqa: E731
    ours_fn(requests[:2]), theirs_fn(instances[:2])  # warm-up, both
    timings = alternating({"ours": lambda: ours_fn(requests), "lm_eval": lambda: theirs_fn(instances)}, repeats)
    (ours_s, ours_times, ours), (theirs_s, theirs_times, theirs) = timings["ours"], timings["lm_eval"]
    diff = np.abs(np.array([logprob_sum(s) for s in ours]) - np.array([t[0] for t in theirs]))
    bound, fraction = scoring_bound(model, tokenizer, requests, batch_size, start, ours_s)
    tokens = bound["forwarded_tokens"]
    return {
        "requests": len(requests), "batch_size": batch_size, "repeats": repeats, "alternating": True,
        "precision": "float32",
        "seconds": round(ours_s, 3), "times": ours_times, "lm_eval_seconds": round(theirs_s, 3),
        "lm_eval_times": theirs_times, "tokens_per_s": round(tokens / ours_s, 1),
        "lm_eval_tokens_per_s": round(tokens / theirs_s, 1), "ratio_vs_lm_eval": round(theirs_s / ours_s, 3),
        "max_abs_diff_nats": float(diff.max()), "mean_abs_diff_nats": float(diff.mean()),
        "bound": bound, "fraction_of_bound": round(fraction, 3),
        "adapter_merge": _adapter_merge(model, tokenizer, requests, batch_size, start),
    }
