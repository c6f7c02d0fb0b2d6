"""Scoring speed and agreement: cqa_utils.scoring vs lm-evaluation-harness, same requests.

Both score the same (prefix, continuation) pairs from the benchmark with the embedded
model in fp32 on CPU. lm-eval gets the start token written into the context and both get
lm-eval's whitespace split, so the two see identical token sequences; the report gives tokens/s for each, their ratio, and the
largest difference between the summed log-probs (nats).
"""
from __future__ import annotations

import time


def run(n_items: int = 12, batch_size: int = 8) -> dict:
    import numpy as np
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from cqa_utils.config import load_config
    from cqa_utils.stages.logprobs import benchmark_items, build_requests
    from cqa_utils.models import load_model
    from cqa_utils.scoring import ScoreRequest, encode_request, logprob_sum, score_requests, start_token_id

    cfg = load_config("default")
    model, tokenizer = load_model(cfg.model)
    project_requests, _ = build_requests(benchmark_items(cfg)[:n_items], cfg.prompt.template)
    # lm-eval moves *all* trailing whitespace of the context (our "\n") into the continuation
    # and scores it; give both scorers that same split so they score the same tokens.
    requests = [ScoreRequest(r.key, r.prefix.rstrip(), r.prefix[len(r.prefix.rstrip()):] + r.continuation)
                for r in project_requests]
    start = start_token_id(tokenizer, cfg.model.start_token)
    tokens = sum(len(c) + len(x) for c, x in (encode_request(tokenizer, r, start) for r in requests))

    score_requests(model, tokenizer, requests[:2], progress=False)  # warm-up
    began = time.perf_counter()
    ours = score_requests(model, tokenizer, requests, batch_size=batch_size, start_token=cfg.model.start_token,
                          progress=False)
    ours_s = time.perf_counter() - began

    lm = HFLM(pretrained=model, tokenizer=tokenizer, device="cpu", batch_size=batch_size, logits_cache=False)
    instances = [Instance("loglikelihood", {}, (cfg.model.start_token + r.prefix, r.continuation), i)
                 for i, r in enumerate(requests)]
    began = time.perf_counter()
    theirs = lm.loglikelihood(instances, disable_tqdm=True)
    theirs_s = time.perf_counter() - began

    diff = np.abs(np.array([logprob_sum(s) for s in ours]) - np.array([t[0] for t in theirs]))
    return {
        "requests": len(requests), "tokens": tokens, "batch_size": batch_size,
        "cqa_tokens_per_s": round(tokens / ours_s, 1), "lm_eval_tokens_per_s": round(tokens / theirs_s, 1),
        "speed_ratio_cqa_over_lm_eval": round(theirs_s / ours_s, 2),
        "max_abs_diff_nats": float(diff.max()), "mean_abs_diff_nats": float(diff.mean()),
    }
