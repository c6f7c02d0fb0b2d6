"""Base-model scores computed once: a cache keyed by weights, precision, start token and text.

Used by stage 03 (:func:`cqa_utils.stages.logprobs.score_items`) for the epoch-0 checkpoint:
every run of a grid on one model and benchmark scores the same (prefix, continuation)
pairs on the same base model, so only the first run pays for them. The key is the sha256
of the model's files (weights, config, tokenizer: ``models.weights_sha256``), the scoring
precision, the start token, the template name, the prefix, the continuation and
:data:`SCHEMA` (bumped when the scoring code changes what a pair scores to), so a change to
any of them is a miss, never a stale hit.
Entries live in one SQLite file per weights hash under ``<model cache>/scores/``
(the standard library's sqlite3: atomic commits, safe across processes). A cached score
equals a fresh one within the fp32 noise floor of differently shaped batches (~1e-4 nats;
DESIGN.md), which is also how far two fresh runs with other batch sizes differ.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .scoring import ScoreRequest, TokenScores

SCHEMA = 1  # bump when scoring changes what a (prefix, continuation) pair scores to: old entries then miss


@dataclass(frozen=True)
class ScoreCache:
    """Per-request TokenScores of one base model under one scoring setting."""

    path: Path
    weights_sha256: str
    setting: tuple  # (precision, start token, template)

    @classmethod
    def for_model(cls, root: Path, weights_sha256: str, precision: str, start_token: str | None,
                  template: str) -> "ScoreCache":
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        cache = cls(root / f"{weights_sha256[:32]}.sqlite", weights_sha256, (precision, start_token, template))
        with cache._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, token_ids BLOB, logprobs BLOB)")
        return cache

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def key(self, request: ScoreRequest) -> str:
        raw = json.dumps([SCHEMA, self.weights_sha256, *self.setting, request.prefix, request.continuation])
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def get(self, requests: list[ScoreRequest]) -> dict[str, TokenScores]:
        """Cached scores by request key (``request.key``); misses are simply absent.

        Requests with the same text share one entry (two items may hold the same passage).
        """
        keys: dict[str, list[str]] = {}
        for r in requests:
            keys.setdefault(self.key(r), []).append(r.key)
        found = {}
        with self._connect() as db:
            for key, ids, logprobs in db.execute(
                    f"SELECT key, token_ids, logprobs FROM scores WHERE key IN ({','.join('?' * len(keys))})",
                    list(keys)):
                for request_key in keys[key]:
                    found[request_key] = TokenScores(request_key, np.frombuffer(ids, dtype=np.int64).copy(),
                                                     np.frombuffer(logprobs, dtype=np.float64).copy())
        return found

    def put(self, requests: list[ScoreRequest], results: list[TokenScores]) -> None:
        """Store new entries; an existing one is kept, so every later hit returns the same numbers."""
        with self._connect() as db:
            db.executemany("INSERT OR IGNORE INTO scores VALUES (?, ?, ?)", [
                (self.key(r), s.token_ids.astype(np.int64).tobytes(), s.logprobs.astype(np.float64).tobytes())
                for r, s in zip(requests, results)])


def score_with_cache(cache: ScoreCache | None, score, requests: list[ScoreRequest],
                     write: bool = True) -> tuple[list[TokenScores], int]:
    """``score(requests)`` for the misses only; (results in input order, number of hits).

    A miss is stored, then every request is answered from the store, so requests of equal
    text get equal numbers within a run and across runs alike. ``write=False`` (ranks > 0 of
    a multi-process job, whose results rank 0 also holds and writes) answers the misses from
    the fresh scores and leaves the store to rank 0.
    """
    if cache is None:
        return score(requests), 0
    hits = cache.get(requests)
    missing = [r for r in requests if r.key not in hits]
    fresh = score(missing) if missing else []
    if not write:
        found = hits | {r.key: s for r, s in zip(missing, fresh)}
        return [found[r.key] for r in requests], len(hits)
    if missing:
        cache.put(missing, fresh)
    stored = cache.get(requests)
    return [stored[r.key] for r in requests], len(hits)
