"""Shared fixtures: the real embedded model and a smoke run (each built once per session), tiny data files,
and the malloc a child process runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def embedded():
    """(model, tokenizer) of the real embedded model in fp32 on CPU."""
    from cqa_utils.config import ModelConfig
    from cqa_utils.models import load_model

    return load_model(ModelConfig(device="cpu"))


@pytest.fixture
def agg_backend(monkeypatch):
    """Headless matplotlib for figure tests; every figure closed afterwards."""
    import matplotlib.pyplot as plt

    monkeypatch.setenv("MPLBACKEND", "Agg")
    plt.switch_backend("Agg")
    yield
    plt.close("all")


def base_only_config(tmp_path: Path, benchmark: Path, overrides: dict | None = None):
    """(cfg, overrides) of a smoke run on ``benchmark`` whose stage 02 is 'done' with no epochs,
    so stage 03 scores the base model only."""
    from cqa_utils.config import load_config
    from cqa_utils.runs import open_stage

    overrides = {"run.results_dir": str(tmp_path / "results"), "run.name": "r", "data.benchmark": str(benchmark),
                 **(overrides or {})}
    cfg = load_config("smoke", overrides)
    open_stage(cfg, "02").finish({})
    return cfg, overrides


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """(stage results, run directory, what it printed) of the smoke config run end to end through
    papermill, once per session: the pipeline test checks it and the browser test reads it, so the
    minutes of training are paid once."""
    import contextlib
    import io

    from cqa_utils.pipeline import run_pipeline

    results_dir = tmp_path_factory.mktemp("results")
    terminal = io.StringIO()
    with contextlib.redirect_stdout(terminal):
        results = run_pipeline("smoke", overrides={"run.results_dir": str(results_dir)})
    return results, results_dir / "smoke", terminal.getvalue()


def malloc_of_a_child(env: dict) -> str:
    """The malloc a fresh Python process reports (cqa_utils.malloc.malloc_in_use) with ``env`` added."""
    code = "from cqa_utils.malloc import malloc_in_use; print(malloc_in_use())"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def annotation(i: int = 1, **changes) -> dict:
    record = {
        "id": f"t-{i:03d}", "lang": "en", "genre": "poetry",
        "context": "A poem about a kitchen at dawn.",
        "constraints": {"intent": "make waiting feel physical", "audience": "adult readers of short lyric poems",
                        "reality": "a gas stove takes minutes to boil a kettle"},
        "passage": f"The kettle ticks as it warms number {i}, and the window fogs from the edges inward.",
        "cot": [
            {"type": "intent", "text": "The waiting is carried by \"the kettle ticks\" rather than named."},
            {"type": "audience", "text": "A reader of lyric poems will feel the pause without being told."},
            {"type": "reality", "text": "Fog spreading \"from the edges inward\" matches how warm air meets glass."},
            {"type": "craft", "text": "Two clauses, one for sound and one for sight, keep the line balanced."},
        ],
        "judgment": {"verdict": "works", "summary": "Small physical signs hold the wait."},
    }
    record.update(changes)
    return record


def benchmark_item(i: int = 1, group: str = "literary", **changes) -> dict:
    record = {
        "id": f"{group[:3]}-{i:02d}", "group": group, "lang": "en",
        "context": "Opening of a story about a ferry crossing.",
        "constraints": {"intent": "show the crossing's calm", "audience": "general adult readers",
                        "reality": "a diesel river ferry at dusk"},
        "x": f"The ferry nosed out into the brown water while gulls {i} kept pace beside the rail.",
    }
    if group == "literary":
        record.update(x_degraded="The ferry flew up over the brown water while gulls kept pace beside the rail.",
                      degraded_breaks="reality")
    record.update(changes)
    return record


def assert_within(actual, expected, bound: float, what: str) -> None:
    """Assert max |actual − expected| ≤ bound, and say where it is worst: both values, the gap and the bound."""
    import numpy as np

    actual, expected = np.atleast_1d(np.asarray(actual, dtype=float)), np.atleast_1d(np.asarray(expected, dtype=float))
    gaps = np.abs(actual - expected)
    worst = int(np.argmax(gaps))
    assert gaps[worst] <= bound, (f"{what}: element {worst} is {actual[worst]:.9g} against {expected[worst]:.9g}, "
                                  f"{gaps[worst]:.3g} apart; the bound is {bound:.3g}")


# How far two equally exact fp32 computations of the same log-probs may land apart depends on the CPU (its GEMM
# kernels block and sum in shape-dependent orders: AVX2, AVX-512 and AMX differ), so no constant holds everywhere:
# fp32_floor measures it on the machine at hand. A comparison of two computations that each reorder like that
# allows REORDERINGS times the floor (the scorer, say, changes the body's batch shape and runs the output head only
# where the continuation is), and a floor of exactly 0 (kernels that ignore the shape) still allows ULPS units in
# the last place of the values compared.
REORDERINGS = 2
ULPS = 4


def naive_batch_logprobs(model, tokenizer, requests, start_token="<|endoftext|>"):
    """The naive reference for requests in one right-padded batch: full logits, full log-softmax, no cache.

    Returns:
        one array per request, in order: its continuation tokens' log-probs (nats).
    """
    import numpy as np
    import torch

    from cqa_utils.scoring import split_boundary

    start = tokenizer.convert_tokens_to_ids(start_token)
    pairs = []
    for request in requests:
        prefix, cont = split_boundary(request.prefix, request.continuation)
        pairs.append(([start] + tokenizer(prefix, add_special_tokens=False).input_ids,
                      tokenizer(cont, add_special_tokens=False).input_ids))
    width = max(len(ctx) + len(tgt) for ctx, tgt in pairs)
    ids = torch.zeros(len(pairs), width, dtype=torch.long)
    mask = torch.zeros(len(pairs), width, dtype=torch.long)
    for row, (ctx, tgt) in enumerate(pairs):
        ids[row, :len(ctx) + len(tgt)] = torch.tensor(ctx + tgt)
        mask[row, :len(ctx) + len(tgt)] = 1
    with torch.no_grad():
        logp = torch.log_softmax(model(ids, attention_mask=mask).logits.float(), dim=-1)  # [batch, seq, vocab]
    return [np.array([logp[row, len(ctx) - 1 + i, t].item() for i, t in enumerate(tgt)])
            for row, (ctx, tgt) in enumerate(pairs)]


def fp32_floor(model, tokenizer, requests, start_token="<|endoftext|>") -> tuple[float, float]:
    """(per-token, summed) fp32 floor in nats on this CPU: the widest gap among exact computations of the same
    log-probs (each request alone; right-padded beside all the others, in both orders; beside one other), or
    ULPS units in the last place of the values where they all agree."""
    import numpy as np

    n = len(requests)
    others = [requests[(i + 1) % n] for i in range(n)]
    ways = [[naive_batch_logprobs(model, tokenizer, [r], start_token)[0] for r in requests],
            naive_batch_logprobs(model, tokenizer, requests, start_token),
            naive_batch_logprobs(model, tokenizer, requests[::-1], start_token)[::-1],
            [naive_batch_logprobs(model, tokenizer, [r, o], start_token)[0] for r, o in zip(requests, others)]]
    token = max(np.abs(a[i] - b[i]).max() for a in ways for b in ways for i in range(n))
    summed = max(abs(a[i].sum() - b[i].sum()) for a in ways for b in ways for i in range(n))
    token_ulp = ULPS * np.spacing(np.float32(max(np.abs(v).max() for v in ways[0])))
    sum_ulp = ULPS * np.spacing(np.float32(max(abs(v.sum()) for v in ways[0])))
    return float(max(token, token_ulp)), float(max(summed, sum_ulp))
