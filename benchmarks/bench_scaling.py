"""How scoring and training time grow with the amount of work and the sequence length.

Scoring: the project's scorer on 3 request counts (benchmark items) and on 3 continuation
lengths (each passage cut to its first 1/4, 1/2 or all of its words). Training: one epoch of
the project's trainer on 3 example counts, and on the shortest, middle and longest third of
the annotations (equal example counts). Each point gives seconds, tokens/s and the fraction
of this machine's bound, so a cost that grows faster than the work shows as a falling fraction.
"""
from __future__ import annotations

from bench_scoring import project_requests, scoring_bound, timed
from bench_training import _train, examples_for, training_bound


def _scoring_point(model, tokenizer, requests, batch_size: int, start: str, **label) -> dict:
    from cqa_utils.scoring import score_requests

    seconds, _, _ = timed(lambda: score_requests(model, tokenizer, requests, batch_size=batch_size, start_token=start,
                                                 progress=False), 1)
    bound, fraction = scoring_bound(model, tokenizer, requests, batch_size, start, seconds)
    return {**label, "requests": len(requests), "forwarded_tokens": bound["forwarded_tokens"],
            "seconds": round(seconds, 2), "tokens_per_s": round(bound["forwarded_tokens"] / seconds, 1),
            "fraction_of_bound": round(fraction, 3)}


def scoring(items=(6, 12, 24), fractions=(0.25, 0.5, 1.0), batch_size: int = 8) -> list[dict]:
    from cqa_utils.models import load_model
    from cqa_utils.scoring import ScoreRequest

    cfg, _ = project_requests(1)
    model, tokenizer = load_model(cfg.model)
    start = cfg.model.start_token
    points = [_scoring_point(model, tokenizer, project_requests(n)[1], batch_size, start, axis="items", size=n)
              for n in items]
    _, requests = project_requests(items[1])
    for share in fractions:
        cut = [ScoreRequest(r.key, r.prefix, " ".join(r.continuation.split(" ")[:max(1, round(
            len(r.continuation.split(" ")) * share))])) for r in requests]
        points.append(_scoring_point(model, tokenizer, cut, batch_size, start, axis="length", size=share))
    return points


def _training_point(cfg, plan, examples, **label) -> dict:
    result = _train("cqa_target_only", cfg, examples, plan)
    _, fraction = training_bound(cfg, plan, examples, result["seconds"])
    return {**label, "examples": len(examples), "tokens": result["tokens"], "seconds": result["seconds"],
            "tokens_per_s": result["tokens_per_s"], "fraction_of_bound": round(fraction, 3)}


def training(counts=(4, 8, 16), per_tertile: int = 6) -> list[dict]:
    points = [_training_point(*examples_for(n), axis="examples", size=n) for n in counts]
    cfg, plan, examples = examples_for(3 * per_tertile * 2)
    ranked = sorted(examples, key=lambda e: len(e["input_ids"]))
    third = len(ranked) // 3
    for name, part in (("short", ranked[:third]), ("middle", ranked[third:2 * third]), ("long", ranked[2 * third:])):
        chosen = part[:per_tertile]
        points.append(_training_point(cfg, plan, chosen, axis="length tertile", size=name,
                                      mean_tokens=round(sum(len(e["input_ids"]) for e in chosen) / len(chosen))))
    return points


def run() -> dict:
    return {"scoring": scoring(), "training": training()}
