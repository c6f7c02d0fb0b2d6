"""Stage 03: ΔI for every benchmark item, variant and checkpoint (notebook 03, ``cqa score``).

For each item x (and, for literary items, its degraded rewrite) the continuation is
scored after the conditional prefix (context + constraints y) and the unconditional one
(context only), on the base model (epoch 0) and with every saved adapter applied to the
*unquantized* fp32 base — an adapter trained in 4-bit is scored without quantization
noise, which is of the size of the effect. Writes, under the output folder:

- ``scores.csv``: item_id, group, variant, checkpoint, epoch, n_tokens, logp_cond,
  logp_uncond, delta_i (nats, summed over x), delta_i_mean (nats per token);
- ``pairs.jsonl``: the exact prefix and continuation strings scored, one per line;
- ``tokens.parquet``: per-token log-probs (nats) for the token-level views.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..data import BenchmarkItem, load_benchmark
from ..prompts import continuation, scoring_prefixes
from ..runs import atomic_path, inside, open_stage, stage_dir, stage_outputs, write_csv, write_jsonl
from ..scoring import ScoreRequest, TokenScores, delta_i, logprob_sum, score_requests

CONDITIONS = ("cond", "uncond")


@dataclass(frozen=True)
class Checkpoint:
    """A model state to score: the base (epoch 0, no adapter) or a saved adapter."""

    name: str
    epoch: int
    adapter: Path | None


def benchmark_items(cfg: Config, path: Path | str | None = None) -> list[BenchmarkItem]:
    """The benchmark, validated, keeping the first ``data.max_items_per_group`` of each group."""
    items = load_benchmark(Path(path) if path else cfg.resolve_path(cfg.data.benchmark))
    limit = cfg.data.max_items_per_group
    if not limit:
        return items
    kept, counts = [], {}
    for item in items:
        counts[item.group] = counts.get(item.group, 0) + 1
        if counts[item.group] <= limit:
            kept.append(item)
    return kept


def build_requests(items: list[BenchmarkItem], template: str) -> tuple[list[ScoreRequest], list[dict]]:
    """One request per item × variant × condition, and the ``pairs.jsonl`` row of each, in one order."""
    requests, pairs = [], []
    for item in items:
        prefixes = scoring_prefixes(item, template)
        variants = [("x", item.x)] + ([("x_degraded", item.x_degraded)] if item.x_degraded else [])
        for variant, text in variants:
            for condition in CONDITIONS:
                key = f"{item.id}|{variant}|{condition}"
                requests.append(ScoreRequest(key, prefixes[condition], continuation(text)))
                pairs.append({"key": key, "item_id": item.id, "group": item.group, "variant": variant,
                              "condition": condition, "prefix": prefixes[condition],
                              "continuation": continuation(text)})
    return requests, pairs


def trained_checkpoints(cfg: Config) -> list[Checkpoint]:
    """Base + the adapters of stage 02 selected by ``score.epochs`` (all when empty)."""
    outputs = stage_outputs(cfg, "02")
    saved = {int(name.split("-")[1]): path for name, path in outputs.items() if name.startswith("epoch-")}
    wanted = cfg.score.epochs or sorted(saved)
    missing = [e for e in wanted if e not in saved]
    if missing:
        raise ValueError(f"score.epochs asks for epoch(s) {missing}, which were never trained; "
                         f"saved epochs in {stage_dir(cfg, '02')}: {sorted(saved)}")
    return [Checkpoint("base", 0, None)] + [Checkpoint(f"epoch-{e}", e, saved[e]) for e in sorted(wanted)]


def check_adapter(path: Path) -> Path:
    """The adapter folder, or a clear error if it is missing or its weights are unreadable."""
    path = Path(path)
    weights, config = path / "adapter_model.safetensors", path / "adapter_config.json"
    for needed in (weights, config):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed}: missing; is {path} a peft adapter folder saved by stage 02?")
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            for name in handle.keys():
                handle.get_tensor(name)
    except Exception as err:  # safetensors raises its own error types for truncated files
        raise ValueError(f"{weights}: corrupted or truncated adapter file ({err}); re-run stage 02 with --force") from None
    return path


@contextlib.contextmanager
def applied(model, checkpoint: Checkpoint):
    """The model with the checkpoint's adapter applied; the base is restored afterwards."""
    if checkpoint.adapter is None:
        yield model
        return
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(check_adapter(checkpoint.adapter)), is_trainable=False)
    try:
        yield peft_model
    finally:
        peft_model.unload()  # removes the LoRA layers without merging them into the base


def score_items(model, tokenizer, items: list[BenchmarkItem], checkpoints: list[Checkpoint], *,
                template: str, batch_size: int, start_token: str | None):
    """Scores of every item × variant × checkpoint: (scores frame, pairs rows, tokens frame)."""
    import pandas as pd

    requests, pairs = build_requests(items, template)
    rows, token_rows = [], []
    for checkpoint in checkpoints:
        with applied(model, checkpoint) as scorer:
            results = score_requests(scorer, tokenizer, requests, batch_size=batch_size,
                                     start_token=start_token, desc=f"scoring {checkpoint.name}")
        rows.extend(_score_rows(checkpoint, pairs, results))
        token_rows.extend(_token_rows(checkpoint, results, pairs, tokenizer))
    return pd.DataFrame(rows), pairs, pd.DataFrame(token_rows)


def _score_rows(checkpoint: Checkpoint, pairs: list[dict], results: list[TokenScores]) -> list[dict]:
    """One scores.csv row per (item, variant): its cond and uncond results side by side.

    ``results`` is in the order of ``pairs`` (score_requests keeps input order), so each
    result is matched to its item, variant and condition by position.
    """
    texts: dict[tuple[str, str], dict] = {}
    for info, result in zip(pairs, results, strict=True):
        texts.setdefault((info["item_id"], info["variant"]), {"info": info})[info["condition"]] = result
    rows = []
    for entry in texts.values():
        info, cond, uncond = entry["info"], entry["cond"], entry["uncond"]
        assert cond.token_ids.tolist() == uncond.token_ids.tolist(), f"{info['item_id']}: x tokenized differently"
        total = delta_i(logprob_sum(cond), logprob_sum(uncond))
        rows.append({"item_id": info["item_id"], "group": info["group"], "variant": info["variant"],
                     "checkpoint": checkpoint.name, "epoch": checkpoint.epoch, "n_tokens": cond.n_tokens,
                     "logp_cond": logprob_sum(cond), "logp_uncond": logprob_sum(uncond),
                     "delta_i": total, "delta_i_mean": total / cond.n_tokens})
    return rows


def _token_rows(checkpoint: Checkpoint, results: list[TokenScores], pairs: list[dict], tokenizer) -> list[dict]:
    rows = []
    for info, result in zip(pairs, results, strict=True):
        pieces = tokenizer.convert_ids_to_tokens(result.token_ids.tolist())
        for position, (token_id, piece, logprob) in enumerate(zip(result.token_ids, pieces, result.logprobs)):
            rows.append({"checkpoint": checkpoint.name, "epoch": checkpoint.epoch, "item_id": info["item_id"],
                         "group": info["group"], "variant": info["variant"], "condition": info["condition"],
                         "position": position, "token_id": int(token_id), "token": piece,
                         "text": tokenizer.decode([int(token_id)]), "logprob": float(logprob)})
    return rows


def write_outputs(out_dir: Path, scores, pairs: list[dict], tokens) -> dict[str, Path]:
    """scores.csv, pairs.jsonl and tokens.parquet, each written atomically; returned by name."""
    out_dir = Path(out_dir)
    written = {"scores": write_csv(out_dir / "scores.csv", scores), "pairs": write_jsonl(out_dir / "pairs.jsonl", pairs)}
    with atomic_path(out_dir / "tokens.parquet") as tmp:
        tokens.to_parquet(tmp, index=False)
    return written | {"tokens": out_dir / "tokens.parquet"}


def _scoring_model(cfg: Config):
    from ..models import load_model

    dtype = "bfloat16" if cfg.score.precision == "bfloat16" else "float32"
    return load_model(cfg.model, dtype=dtype)


def run_logprobs(cfg: Config, force: bool = False) -> dict[str, Path]:
    """Score the benchmark on the base model and every trained epoch; returns files by name."""
    checkpoints = trained_checkpoints(cfg)
    items = benchmark_items(cfg)  # validated before the stage directory exists
    stage = open_stage(cfg, "03", force)
    if stage.skipped:
        return stage.outputs()
    model, tokenizer = _scoring_model(cfg)
    scores, pairs, tokens = score_items(model, tokenizer, items, checkpoints, template=cfg.prompt.template,
                                        batch_size=cfg.score.batch_size, start_token=cfg.model.start_token)
    written = write_outputs(stage.path, scores, pairs, tokens)
    return stage.finish(written, {"items": len(items), "checkpoints": [c.name for c in checkpoints],
                                  "precision": cfg.score.precision})


def score_benchmark_file(cfg: Config, benchmark: Path | str, out_dir: Path | str,
                         adapter: Path | str | None = None) -> dict[str, Path]:
    """``cqa score``: any benchmark file in the project's schema, base model or one adapter."""
    items = benchmark_items(cfg, benchmark)
    checkpoint = Checkpoint("base", 0, None)
    if adapter:
        epoch_file = Path(adapter) / "epoch.json"
        epoch = json.loads(epoch_file.read_text())["epoch"] if epoch_file.is_file() else -1  # -1: unknown epoch
        checkpoint = Checkpoint(Path(adapter).name, epoch, check_adapter(Path(adapter)))
    model, tokenizer = _scoring_model(cfg)
    scores, pairs, tokens = score_items(model, tokenizer, items, [checkpoint], template=cfg.prompt.template,
                                        batch_size=cfg.score.batch_size, start_token=cfg.model.start_token)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_outputs(inside(out, "."), scores, pairs, tokens)
