"""Exact log-probabilities of a continuation given a prefix.

Requests flow as records → length-sorted batches → results in input order, the way
lm-evaluation-harness does it. Every sequence is ``[start token] + prefix + continuation``:
the start token (the tokenizer's BOS, else EOS, or ``model.start_token``) is what an
empty prefix conditions the continuation's first token on. Prefix and continuation are
tokenized separately and concatenated, so the continuation's tokens are identical
whatever the prefix; trailing spaces of the prefix move into the continuation (a
trailing newline stays: byte-level BPE never merges it with the next word). The output
head runs only at the positions that predict continuation tokens (a 262k-token vocabulary
makes full logits the largest tensor of a pass), log-softmax in float32, on right-padded
batches under ``torch.inference_mode``; results do not depend on batch size or order
(tested). Used by notebooks 00 and 03 and ``cqa score``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from .progress import progress_bar


@dataclass(frozen=True)
class ScoreRequest:
    """One (prefix, continuation) pair to score; ``key`` identifies it in the results."""

    key: str
    prefix: str
    continuation: str


@dataclass(frozen=True)
class TokenScores:
    """Per-token log-probs of a continuation (nats, float32 computed, float64 stored)."""

    key: str
    token_ids: np.ndarray  # [n_tokens] int
    logprobs: np.ndarray  # [n_tokens] float64, nats

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.size)


def logprob_sum(scores: TokenScores) -> float:
    """Summed log-probability of the continuation (nats)."""
    return float(scores.logprobs.sum())


def logprob_mean(scores: TokenScores) -> float:
    """Mean log-probability per continuation token (nats/token)."""
    return float(scores.logprobs.mean())


def delta_i(logp_cond: float, logp_uncond: float) -> float:
    """ΔI = log P(x|y) − log P(x): the pointwise information y gives about x (nats)."""
    return logp_cond - logp_uncond


def token_delta_i(tokens, item_id: str, epoch: int = 0, variant: str = "x"):
    """Per-token ΔI of one scored text: log P(x_t | y, x_<t) − log P(x_t | x_<t), in nats.

    Args:
        tokens: 03_logprobs/tokens.parquet (one row per checkpoint × item × variant ×
            condition × position).
    Returns:
        DataFrame[position, text, logprob_cond, logprob_uncond, delta_i] in token order;
        its ``delta_i`` sums to the item's ΔI in scores.csv.
    """
    one = tokens[(tokens["item_id"] == item_id) & (tokens["epoch"] == epoch) & (tokens["variant"] == variant)]
    if one.empty:
        raise ValueError(f"no tokens for item {item_id!r}, epoch {epoch}, variant {variant!r} in tokens.parquet")
    cond = one[one["condition"] == "cond"].set_index("position")
    uncond = one[one["condition"] == "uncond"].set_index("position")
    frame = cond[["text"]].assign(logprob_cond=cond["logprob"], logprob_uncond=uncond["logprob"])
    return frame.assign(delta_i=frame["logprob_cond"] - frame["logprob_uncond"]).reset_index()


def start_token_id(tokenizer, start_token: str | None = None) -> int:
    """The id every scored sequence starts with: explicit token, else BOS, else EOS."""
    token = start_token or tokenizer.bos_token or tokenizer.eos_token
    if token is None:
        raise ValueError("the tokenizer has neither BOS nor EOS; set model.start_token in the config")
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != token:
        raise ValueError(f"model.start_token={token!r} is not a single token of this tokenizer")
    return int(token_id)


def split_boundary(prefix: str, continuation: str) -> tuple[str, str]:
    """Move the prefix's trailing spaces/tabs into the continuation (``"A: " + "B"`` → ``"A:" + " B"``)."""
    stripped = prefix.rstrip(" \t")
    return stripped, prefix[len(stripped):] + continuation


def encode_request(tokenizer, request: ScoreRequest, start_id: int) -> tuple[list[int], list[int]]:
    """(context ids incl. start token, continuation ids) for one request."""
    prefix, cont = split_boundary(request.prefix, request.continuation)
    if not cont:
        raise ValueError(f"request {request.key!r}: the continuation is empty; there is nothing to score")
    context_ids = [start_id] + tokenizer(prefix, add_special_tokens=False).input_ids
    continuation_ids = tokenizer(cont, add_special_tokens=False).input_ids
    return context_ids, continuation_ids


def request_tokens(tokenizer, requests: list[ScoreRequest], start_token: str | None = None) -> tuple[int, int]:
    """(tokens forwarded, tokens scored) when :func:`score_requests` scores these requests, padding excluded:
    the counts the machine's bound is charged with (:mod:`cqa_utils.bound`)."""
    start_id = start_token_id(tokenizer, start_token)
    encoded = [encode_request(tokenizer, r, start_id) for r in requests]
    return sum(len(ctx) + len(cont) for ctx, cont in encoded), sum(len(cont) for _, cont in encoded)


def max_context(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def score_requests(model, tokenizer, requests: list[ScoreRequest], *, batch_size: int = 8,
                   start_token: str | None = None, progress: bool = True, desc: str = "scoring") -> list[TokenScores]:
    """Per-token log-probs of each request's continuation, in the order of ``requests``.

    Batches run longest first, so an out-of-memory error shows on the first batch. The model
    must take transformers' boolean ``logits_to_keep`` mask (every causal LM of transformers 5 does).
    Raises ValueError naming the request if prefix + continuation exceed the model's context.
    """
    import torch

    start_id = start_token_id(tokenizer, start_token)
    encoded = [encode_request(tokenizer, r, start_id) for r in requests]
    limit = max_context(model)
    for request, (ctx, cont) in zip(requests, encoded):
        if limit and len(ctx) + len(cont) > limit:
            raise ValueError(f"request {request.key!r}: {len(ctx) + len(cont)} tokens exceed the model's "
                             f"context of {limit}; shorten the text (nothing is truncated silently)")
    order = sorted(range(len(requests)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start_id
    device = next(model.parameters()).device
    results: list[TokenScores | None] = [None] * len(requests)
    was_training = model.training
    model.eval()
    batches, shared = own_batches([order[i:i + batch_size] for i in range(0, len(order), batch_size)],
                                  cpu=device.type == "cpu")
    with torch.inference_mode():
        for batch in progress_bar(batches, desc=desc, unit="batch", disable=not progress, leave=False):
            # Position t's output predicts token t+1, so row r needs the outputs at positions
            # len(ctx)-1 … len(ctx)+len(cont)-2; ``keep`` marks them and the output head runs
            # only there (the last token's output is never read).
            seqs = [encoded[i][0] + encoded[i][1] for i in batch]
            width = max(len(s) for s in seqs)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            keep = torch.zeros((len(batch), width), dtype=torch.bool)
            targets = []
            for row, (seq, index) in enumerate(zip(seqs, batch)):
                ctx, cont = encoded[index]
                input_ids[row, :len(seq)] = torch.tensor(seq)
                attention[row, :len(seq)] = 1
                keep[row, len(ctx) - 1:len(seq) - 1] = True
                targets.extend(cont)
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                           logits_to_keep=keep.to(device)).logits  # [sum of n_cont, vocab], row-major
            logp = torch.log_softmax(logits.float(), dim=-1)
            picked = logp.gather(1, torch.tensor(targets, device=logp.device).unsqueeze(1)).squeeze(1)
            for index, part in zip(batch, picked.split([len(encoded[i][1]) for i in batch])):
                results[index] = TokenScores(requests[index].key, np.asarray(encoded[index][1]),
                                             part.double().cpu().numpy())
    model.train(was_training)
    if shared:
        from accelerate.utils import gather_object

        for index, result in gather_object([(i, r) for i, r in enumerate(results) if r is not None]):
            results[index] = result
    return results  # type: ignore[return-value]


def own_batches(batches: list[list[int]], cpu: bool) -> tuple[list[list[int]], bool]:
    """This process's share of the batches, and whether other processes hold the rest.

    Launched as several processes (``accelerate launch`` or torchrun), the length-sorted
    batches are dealt round-robin, then handed out with accelerate's
    ``split_between_processes`` as lm-eval does: every batch keeps the composition it has in
    one process, so the scores are the same, and each process gets long and short ones alike.
    ``cpu`` tells accelerate the model is on CPU (only then does it join CPU processes, over gloo).
    """
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    if state.num_processes == 1:
        return batches, False
    n = state.num_processes
    # split_between_processes gives contiguous chunks, one extra to the first len % n ranks:
    # exactly the sizes of the dealt hands batches[r::n].
    dealt = [batch for rank in range(n) for batch in batches[rank::n]]
    with state.split_between_processes(dealt) as mine:
        return list(mine), True


SANITY_SENTENCES = (
    "The children walked to school in the morning and came home for lunch at noon.",
    "She poured the tea, waited for it to cool, and drank it slowly by the window.",
    "Water boils at a lower temperature on a high mountain than at sea level.",
)
MIN_MARGIN_NATS = 1.0  # real sentences beat shuffled ones by ~2-4 nats/token on the embedded model


def sanity_check(model, tokenizer, sentences=SANITY_SENTENCES, start_token: str | None = None) -> list[dict]:
    """:func:`sentence_vs_shuffled` on each sentence; raises RuntimeError if any margin is below
    :data:`MIN_MARGIN_NATS` (a broken conversion or a wrong tokenizer fails here, not in a result)."""
    checks = [sentence_vs_shuffled(model, tokenizer, s, start_token=start_token) for s in sentences]
    failed = [c for c in checks if c["margin_nats_per_token"] < MIN_MARGIN_NATS]
    if failed:
        raise RuntimeError(f"the model fails the sentence-vs-shuffled check (margin < {MIN_MARGIN_NATS} "
                           f"nats/token): {failed}")
    return checks


def sentence_vs_shuffled(model, tokenizer, sentence: str, seed: int = 0, start_token: str | None = None) -> dict:
    """Mean log-prob per token of a sentence and of its words shuffled (nats/token).

    A working language model scores the real sentence far higher: a quick, model-level
    sanity check used when the embedded model is built and in notebook 00.
    """
    words = sentence.split()
    shuffled = words[:]
    random.Random(seed).shuffle(shuffled)
    real, mixed = score_requests(model, tokenizer, [ScoreRequest("real", "", sentence),
                                                    ScoreRequest("shuffled", "", " ".join(shuffled))],
                                 start_token=start_token, progress=False)
    return {
        "sentence": sentence,
        "shuffled": " ".join(shuffled),
        "real_nats_per_token": round(logprob_mean(real), 4),
        "shuffled_nats_per_token": round(logprob_mean(mixed), 4),
        "margin_nats_per_token": round(logprob_mean(real) - logprob_mean(mixed), 4),
    }
