"""The machine's matmul bound at a model's own GEMM shapes, and what the study's work costs there.

A tokens/s figure says little on its own: the same code is fast on one CPU and slow on
another. Every speed the project reports (``make bench``, a run's ``efficiency.json``) is
therefore set against the time the same matrix products take when timed bare, on this
machine, in this process, at the model's Linear shapes and the work's own row counts.
No library measures that for a given model, so it is written here, in torch.

The FLOP counts follow the issue's definition of the bound:

* scoring: 2·N_body per forwarded token + 2·N_head per scored token (the head runs only
  where a log-prob is read);
* LoRA training with a frozen base: 4·N_body per token (forward, and the backward pass's
  input gradients; frozen weights get no weight gradient) + 4·N_head per target token.

Attention's score/value products, the LoRA matrices (r=16: ≈3 % of a body Linear's work)
and elementwise work are not counted, so a fraction of the bound understates the share of
the machine really used: the bound is generous to the code, never flattering.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass

GIGA = 1e9


@dataclass(frozen=True)
class LinearShapes:
    """A model's matrix-multiply work per token: ``(in, out) -> how many Linears`` of that shape."""

    body: dict[tuple[int, int], int]  # every Linear in the transformer blocks
    head: tuple[int, int]  # the output head (hidden, vocab)

    @property
    def n_body(self) -> int:
        """Body weights multiplied per token (FLOPs per forwarded token = 2 × this)."""
        return sum(i * o * n for (i, o), n in self.body.items())

    @property
    def n_head(self) -> int:
        return self.head[0] * self.head[1]

    def as_dict(self) -> dict:
        return {"n_body": self.n_body, "n_head": self.n_head, "head": list(self.head),
                "body": [{"in": i, "out": o, "count": n} for (i, o), n in sorted(self.body.items())]}


def linear_shapes(model) -> LinearShapes:
    """The Linear shapes of a causal LM (a plain or 4-bit model; not a peft wrapper).

    The head is ``model.get_output_embeddings()`` whether or not it is tied to the input
    embeddings: a tied head is still a full matmul per scored token.
    """
    import torch

    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings: nothing to measure a head bound on")
    body = Counter((m.in_features, m.out_features) for m in model.modules()
                   if isinstance(m, torch.nn.Linear) and m is not head)
    hidden, vocab = head.weight.shape[1], head.weight.shape[0]
    return LinearShapes(dict(body), (hidden, vocab))


def _best_seconds(rows: int, n_in: int, n_out: int, dtype, repeats: int, budget_s: float) -> float:
    """Fastest of ``repeats`` timings (fewer past ``budget_s``, never under 3) of
    ``[rows, n_in] @ [n_in, n_out]`` after two warm-ups: the bound is the best the machine did,
    not its average (one bench measured the same shapes 25 % apart with 5 timings at most)."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(rows, n_in).to(dtype)
    w = torch.randn(n_out, n_in).to(dtype)  # stored [out, in] and applied as F.linear, as nn.Linear does
    F.linear(x, w), F.linear(x, w)
    best, spent = float("inf"), 0.0
    for done in range(1, repeats + 1):
        began = time.perf_counter()
        F.linear(x, w)
        took = time.perf_counter() - began
        best, spent = min(best, took), spent + took
        if spent > budget_s and done >= 3:
            break
    return best


def matmul_gflops(shapes: dict[tuple[int, int], int], rows: int, dtype: str = "float32", *,
                  repeats: int = 20, budget_s: float = 1.0) -> float:
    """Sustained GFLOP/s of this machine on a set of Linear shapes, each weighted by its count.

    Args:
        shapes: ``(in, out) -> count``, e.g. :attr:`LinearShapes.body`.
        rows: tokens per product (a training sequence, or the tokens of one scoring batch).
        dtype: ``"float32"`` or ``"bfloat16"``.
    Returns:
        total FLOPs of one pass over the shapes / its total best time, in GFLOP/s.
    """
    from .models import torch_dtype

    flops = seconds = 0.0
    for (n_in, n_out), count in shapes.items():
        flops += count * 2.0 * rows * n_in * n_out
        seconds += count * _best_seconds(rows, n_in, n_out, torch_dtype(dtype), repeats, budget_s)
    return flops / seconds / GIGA


@dataclass(frozen=True)
class Work:
    """Tokens a piece of work pushes through the model, and the FLOPs that costs."""

    tokens: int  # forwarded (scoring) or trained (training) tokens, no padding
    head_tokens: int  # tokens the output head runs at: scored or target tokens
    passes: int  # 1 for scoring (forward), 2 for training (forward + input-gradient backward)

    def gflop(self, shapes: LinearShapes) -> float:
        return 2.0 * self.passes * (self.tokens * shapes.n_body + self.head_tokens * shapes.n_head) / GIGA


def scoring_work(forwarded_tokens: int, scored_tokens: int) -> Work:
    return Work(forwarded_tokens, scored_tokens, passes=1)


def training_work(tokens: int, target_tokens: int) -> Work:
    return Work(tokens, target_tokens, passes=2)


@dataclass(frozen=True)
class Bound:
    """The machine's rate on one kind of work: body and head GFLOP/s at that work's shapes."""

    dtype: str
    rows: int  # tokens per body product
    head_rows: int  # tokens per head product
    body_gflops: float
    head_gflops: float
    backward_gflops: float | None = None  # training: the transposed (out → in) products of the backward pass

    def seconds(self, work: Work, shapes: LinearShapes) -> float:
        """How long ``work`` takes at this bound (s); a backward pass costs its forward's FLOPs again."""
        body = 2.0 * work.tokens * shapes.n_body / GIGA
        head = 2.0 * work.head_tokens * shapes.n_head / GIGA
        seconds = body / self.body_gflops + head / self.head_gflops
        if work.passes == 2:
            seconds += body / (self.backward_gflops or self.body_gflops) + head / self.head_gflops
        return seconds

    def as_dict(self) -> dict:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def measure_bound(shapes: LinearShapes, *, dtype: str, rows: int, head_rows: int, backward: bool = False,
                  budget_s: float = 1.0) -> Bound:
    """Time the body, head (and for training the backward's transposed) products at these row counts;
    ``budget_s`` bounds the timing of each shape."""
    rows, head_rows = max(1, int(rows)), max(1, int(head_rows))
    body = matmul_gflops(shapes.body, rows, dtype, budget_s=budget_s)
    head = matmul_gflops({shapes.head: 1}, head_rows, dtype, budget_s=budget_s)
    transposed = {(o, i): n for (i, o), n in shapes.body.items()}
    back = matmul_gflops(transposed, rows, dtype, budget_s=budget_s) if backward else None
    return Bound(dtype, rows, head_rows, body, head, back)
