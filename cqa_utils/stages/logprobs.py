"""Stage 03: ΔI for every benchmark item, variant and checkpoint (notebook 03, ``cqa score``).

For each item x (and, for literary items, its degraded rewrite) the continuation is
scored after the conditional prefix (context + constraints y) and the unconditional one
(context only), on the base model (epoch 0) and with every saved adapter applied to the
*unquantized* fp32 base — an adapter trained in 4-bit is scored without quantization
noise, which is of the size of the effect. On the base model and the headline epoch
(every epoch with ``score.controls_at: all``) each text is also scored under the
controls of :mod:`cqa_utils.controls`: the constraints of ``score.mismatched_k`` other
items of its group, and each slot of its own y alone. Writes, under the output folder:

- ``scores.csv``: item_id, pair_id, group, variant, checkpoint, epoch, n_tokens, logp_cond,
  logp_uncond, delta_i (nats, summed over x), delta_i_mean (nats per token), then the
  controls — logp_mismatched (mean over the K), mismatched (their ids), delta_i_specific,
  delta_i_intent/audience/reality (+ _mean twins; empty where not scored) — and the
  model-free overlap baseline: overlap (share of the text's content words in y), y_words;
  last, one ``extra.<name>`` column per scalar extra field of the benchmark records;
- ``pairs.jsonl``: the exact prefix and continuation strings scored, one per line, with
  the condition, whose constraints the prefix holds and the item's extra fields (``extra``);
- ``tokens.parquet``: per-token log-probs (nats) under cond and uncond, for the token views.
- ``timing.csv``: per checkpoint, requests (and how many the base-score cache answered), seconds, and
  the tokens that reached the model (forwarded, scored, batches), which ``efficiency.json`` charges.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import Config
from ..controls import KINDS, MEASURES, control_values, delta_column, mismatched_partners
from ..data import CONSTRAINT_TYPES, BenchmarkItem, load_benchmark
from ..overlap import overlap_share, shared_words
from ..prompts import continuation, control_prefixes, scoring_prefixes
from ..run_lock import locked
from ..runs import (atomic_path, environment_record, inside, is_rank_zero, open_stage, stage_dir, stage_outputs, write_csv,
                    write_json, write_jsonl, write_text)
from ..score_cache import ScoreCache, score_with_cache
from ..scoring import ScoreRequest, TokenScores, logprob_sum, request_tokens, score_requests
from ..stats import headline_epoch

TOKEN_CONDITIONS = ("cond", "uncond")  # the conditions tokens.parquet keeps
SCORE_COLUMNS = ["item_id", "pair_id", "group", "variant", "checkpoint", "epoch", "n_tokens", "logp_cond", "logp_uncond",
                 *(delta_column(k, m) for k in KINDS for m in MEASURES), "logp_mismatched", "mismatched",
                 "overlap", "y_words"]  # controls not scored at a checkpoint are empty there
EXTRA_PREFIX = "extra."  # scores.csv columns of records' extra fields; no computed column has a dot


@dataclass(frozen=True)
class Controls:
    """Which controls a checkpoint is scored under (none: only cond and uncond)."""

    partners: dict[str, tuple[str, ...]]  # item id -> the items whose constraints it is also scored under
    slots: tuple[str, ...]  # single-slot conditions

    @classmethod
    def from_config(cls, cfg: Config, items: list[BenchmarkItem]) -> "Controls":
        partners = mismatched_partners(items, cfg.score.mismatched_k, cfg.run.seed)
        return cls(partners, CONSTRAINT_TYPES if cfg.score.single_slot else ())


NO_CONTROLS = Controls({}, ())


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


def build_requests(items: list[BenchmarkItem], template: str,
                   controls: Controls = NO_CONTROLS) -> tuple[list[ScoreRequest], list[dict]]:
    """One request per item × variant × condition, and the ``pairs.jsonl`` row of each, in one order.

    Conditions: ``cond`` and ``uncond``, then ``mismatch:<id>`` and ``slot:<type>`` per ``controls``.
    """
    by_id = {item.id: item for item in items}
    requests, pairs = [], []
    for item in items:
        partners = [by_id[i] for i in controls.partners.get(item.id, ())]
        prefixes = scoring_prefixes(item, template) | control_prefixes(item, partners, controls.slots, template)
        variants = [("x", item.x)] + ([("x_degraded", item.x_degraded)] if item.x_degraded else [])
        for variant, text in variants:
            for condition, prefix in prefixes.items():
                key = f"{item.id}|{variant}|{condition}"
                requests.append(ScoreRequest(key, prefix, continuation(text)))
                pairs.append({"key": key, "item_id": item.id, "pair_id": item.pair_id, "group": item.group,
                              "variant": variant, "condition": condition,
                              "constraints_from": condition.split(":", 1)[1] if condition.startswith("mismatch:")
                              else item.id if condition != "uncond" else None,
                              "prefix": prefix, "continuation": continuation(text), "extra": item.extra})
    return requests, pairs


def extra_columns(item: BenchmarkItem) -> dict:
    """The item's scalar extra fields as ``extra.<name>`` cells; nested ones are in pairs.jsonl only.

    The prefix keeps an extra field named like a computed column (``delta_i``) from replacing it.
    """
    return {EXTRA_PREFIX + name: value for name, value in item.extra.items()
            if value is None or isinstance(value, (str, int, float, bool))}


def overlap_columns(item: BenchmarkItem, text: str) -> dict:
    """The model-free baseline for one text: share of its content words in y, and how many of y's."""
    y = item.constraints.text()
    return {"overlap": overlap_share(text, y), "y_words": len(shared_words(text, y))}


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
    """The model with the checkpoint's adapter applied; the base is restored bit for bit afterwards.

    fp32 weights get the adapter merged in (W + s·BA), which skips the LoRA layers' extra
    matmuls (measured 1.27x faster on the embedded model; scores within 3.4e-5 nats per token of
    the unmerged layers); the merged weights' originals are kept aside and copied back, since
    unmerging by subtraction would not restore them exactly. bf16 weights stay unmerged: the
    merge would round small adapter deltas away.
    """
    if checkpoint.adapter is None:
        yield model
        return
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    peft_model = PeftModel.from_pretrained(model, str(check_adapter(checkpoint.adapter)), is_trainable=False)
    kept = []
    if next(model.parameters()).dtype == torch.float32:
        kept = [(layer.get_base_layer().weight, layer.get_base_layer().weight.detach().clone())
                for layer in peft_model.modules() if isinstance(layer, LoraLayer)]
        peft_model.merge_adapter()
    try:
        yield peft_model
    finally:
        peft_model.unload()  # removes the LoRA layers; the merged base weights are restored next
        with torch.no_grad():
            for weight, original in kept:
                weight.copy_(original)


def controls_for(cfg: Config, checkpoints: list[Checkpoint], controls: Controls) -> dict[str, Controls]:
    """Controls per checkpoint: every one with ``score.controls_at: all``, else the base and the headline epoch."""
    trained = [c.epoch for c in checkpoints if c.epoch > 0]
    wanted = {0, headline_epoch(cfg.stats.headline_epoch, trained)} if trained else {0}
    return {c.name: controls if cfg.score.controls_at == "all" or c.epoch in wanted else NO_CONTROLS
            for c in checkpoints}


def score_items(model, tokenizer, items: list[BenchmarkItem], checkpoints: list[Checkpoint], *,
                template: str, batch_size: int, start_token: str | None, controls: dict[str, Controls] | None = None,
                cache: ScoreCache | None = None):
    """Scores of every item × variant × checkpoint: (scores, pairs rows, tokens, timing) frames.

    ``controls`` maps a checkpoint name to the controls scored there (default: none). Each
    distinct request appears once in the pairs rows, with the checkpoints it was scored on.
    ``cache`` serves the base model's (adapter-free) requests scored before, by any run.
    """
    import time

    import pandas as pd

    rows, token_rows, timing, unique_pairs = [], [], [], {}
    for checkpoint in checkpoints:
        chosen = (controls or {}).get(checkpoint.name, NO_CONTROLS)
        requests, pairs = build_requests(items, template, chosen)
        started = time.perf_counter()
        forwarded = {"forwarded_tokens": 0, "scored_tokens": 0, "batches": 0}  # what reached the model
        with applied(model, checkpoint) as scorer:
            def score(misses: list[ScoreRequest]) -> list[TokenScores]:
                tokens = request_tokens(tokenizer, misses, start_token)
                forwarded.update(forwarded_tokens=tokens[0], scored_tokens=tokens[1],
                                 batches=-(-len(misses) // batch_size))
                return score_requests(scorer, tokenizer, misses, batch_size=batch_size, start_token=start_token,
                                      desc=f"scoring {checkpoint.name}")

            results, hits = score_with_cache(cache if checkpoint.adapter is None else None, score, requests,
                                             write=is_rank_zero())
        timing.append({"checkpoint": checkpoint.name, "epoch": checkpoint.epoch, "requests": len(requests),
                       "cached": hits,
                       "with_controls": chosen is not NO_CONTROLS, "seconds": time.perf_counter() - started,
                       "continuation_tokens": sum(r.n_tokens for r in results), **forwarded})
        rows.extend(_score_rows(checkpoint, items, pairs, results))
        for pair in pairs:
            unique_pairs.setdefault(pair["key"], pair | {"checkpoints": []})["checkpoints"].append(checkpoint.name)
        token_rows.extend(_token_rows(checkpoint, results, pairs, tokenizer))
    columns = list(dict.fromkeys([*SCORE_COLUMNS, *(name for row in rows for name in row)]))  # + extras, first seen first
    return (pd.DataFrame(rows, columns=columns), list(unique_pairs.values()), pd.DataFrame(token_rows),
            pd.DataFrame(timing))


def _score_rows(checkpoint: Checkpoint, items: list[BenchmarkItem], pairs: list[dict],
                results: list[TokenScores]) -> list[dict]:
    """One scores.csv row per (item, variant): every condition's result side by side.

    ``results`` is in the order of ``pairs`` (score_requests keeps input order), so each
    result is matched to its item, variant and condition by position.
    """
    by_id = {item.id: item for item in items}
    texts: dict[tuple[str, str], dict] = {}
    for info, result in zip(pairs, results, strict=True):
        texts.setdefault((info["item_id"], info["variant"]), {"info": info, "results": {}})["results"][
            info["condition"]] = result
    rows = []
    for entry in texts.values():
        info, results_by = entry["info"], entry["results"]
        cond = results_by["cond"]
        for name, result in results_by.items():
            assert result.token_ids.tolist() == cond.token_ids.tolist(), f"{info['item_id']}: {name} tokenized x differently"
        logp = {name: logprob_sum(result) for name, result in results_by.items()}
        mismatched = [name.split(":", 1)[1] for name in logp if name.startswith("mismatch:")]
        item = by_id[info["item_id"]]
        rows.append({"item_id": info["item_id"], "pair_id": info["pair_id"], "group": info["group"],
                     "variant": info["variant"], "checkpoint": checkpoint.name, "epoch": checkpoint.epoch,
                     "n_tokens": cond.n_tokens, "logp_cond": logp["cond"], "logp_uncond": logp["uncond"],
                     **control_values(logp, cond.n_tokens),
                     "logp_mismatched": (sum(logp[f"mismatch:{m}"] for m in mismatched) / len(mismatched)
                                         if mismatched else None),
                     "mismatched": " ".join(mismatched) or None,
                     **overlap_columns(item, item.x if info["variant"] == "x" else item.x_degraded),
                     **extra_columns(item)})
    return rows


def _token_rows(checkpoint: Checkpoint, results: list[TokenScores], pairs: list[dict], tokenizer) -> list[dict]:
    rows = []
    for info, result in zip(pairs, results, strict=True):
        if info["condition"] not in TOKEN_CONDITIONS:
            continue
        pieces = tokenizer.convert_ids_to_tokens(result.token_ids.tolist())
        for position, (token_id, piece, logprob) in enumerate(zip(result.token_ids, pieces, result.logprobs)):
            rows.append({"checkpoint": checkpoint.name, "epoch": checkpoint.epoch, "item_id": info["item_id"],
                         "group": info["group"], "variant": info["variant"], "condition": info["condition"],
                         "position": position, "token_id": int(token_id), "token": piece,
                         "text": tokenizer.decode([int(token_id)]), "logprob": float(logprob)})
    return rows


def write_outputs(out_dir: Path, scores, pairs: list[dict], tokens, timing) -> dict[str, Path]:
    """scores.csv, pairs.jsonl, timing.csv and tokens.parquet, each written atomically; returned by name."""
    out_dir = Path(out_dir)
    written = {"scores": write_csv(out_dir / "scores.csv", scores), "pairs": write_jsonl(out_dir / "pairs.jsonl", pairs),
               "timing": write_csv(out_dir / "timing.csv", timing)}
    with atomic_path(out_dir / "tokens.parquet") as tmp:
        tokens.to_parquet(tmp, index=False)
    return written | {"tokens": out_dir / "tokens.parquet"}


def base_score_cache(cfg: Config) -> ScoreCache | None:
    """The base-model score cache for this model and scoring setting (``score.base_cache``)."""
    if not cfg.score.base_cache:
        return None
    from ..models import cache_root, weights_sha256

    return ScoreCache.for_model(cache_root() / "scores", weights_sha256(cfg.model.name), cfg.score.precision,
                                cfg.model.start_token, cfg.prompt.template)


def _scoring_model(cfg: Config):
    from ..models import load_model

    dtype = "bfloat16" if cfg.score.precision == "bfloat16" else "float32"
    return load_model(cfg.model, dtype=dtype)


@locked
def run_logprobs(cfg: Config, force: bool = False) -> dict[str, Path]:
    """Score the benchmark on the base model and every trained epoch; returns files by name."""
    checkpoints = trained_checkpoints(cfg)
    items = benchmark_items(cfg)  # validated before the stage directory exists
    stage = open_stage(cfg, "03", force)
    if stage.skipped:
        return stage.outputs()
    model, tokenizer = _scoring_model(cfg)
    controls = controls_for(cfg, checkpoints, Controls.from_config(cfg, items))
    frames = score_items(model, tokenizer, items, checkpoints, template=cfg.prompt.template,
                         batch_size=cfg.score.batch_size, start_token=cfg.model.start_token, controls=controls,
                         cache=base_score_cache(cfg))
    if not is_rank_zero():  # launched as several processes: each scored its share, rank 0 writes
        return {}
    written = write_outputs(stage.path, *frames)
    timing = frames[3]
    return stage.finish(written, {"items": len(items), "checkpoints": [c.name for c in checkpoints],
                                  "controls_on": [n for n, c in controls.items() if c is not NO_CONTROLS],
                                  "seconds": round(float(timing["seconds"].sum()), 1),
                                  "cached_base_requests": int(timing["cached"].sum()),
                                  "precision": cfg.score.precision})


def score_benchmark_file(cfg: Config, benchmark: Path | str, out_dir: Path | str,
                         adapter: Path | str | None = None) -> dict[str, Path]:
    """``cqa score``: any benchmark file in the project's schema, base model or one adapter, with the controls."""
    items = benchmark_items(cfg, benchmark)
    checkpoint = Checkpoint("base", 0, None)
    if adapter:
        epoch_file = Path(adapter) / "epoch.json"
        epoch = json.loads(epoch_file.read_text())["epoch"] if epoch_file.is_file() else -1  # -1: unknown epoch
        checkpoint = Checkpoint(Path(adapter).name, epoch, check_adapter(Path(adapter)))
    model, tokenizer = _scoring_model(cfg)
    frames = score_items(model, tokenizer, items, [checkpoint], template=cfg.prompt.template,
                         batch_size=cfg.score.batch_size, start_token=cfg.model.start_token,
                         controls={checkpoint.name: Controls.from_config(cfg, items)}, cache=base_score_cache(cfg))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = write_outputs(inside(out, "."), *frames)
    # the resolved config and the machine beside the scores, as every stage keeps them
    return {**written, "config": write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False)),
            "environment": write_json(out / "environment.json", environment_record(cfg, {"benchmark": str(benchmark),
                                                                                         "adapter": str(adapter or "")}))}
