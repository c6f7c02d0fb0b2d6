"""Stage 02: LoRA / QLoRA fine-tuning on the CoT annotations, one adapter per epoch.

The Hugging Face Trainer does the loop (measured faster than TRL's SFTTrainer here);
this module only builds its inputs: the rendered annotations with the prompt masked out
of the loss, the LoRA config, the quantization config, a loss that computes logits only
at target positions, and callbacks (per-step CSV log, per-epoch adapter export, NaN guard). Driven by notebook
02 and, for several processes, by ``accelerate launch -m cqa_utils.train``.

Writes ``results/<run>/02_finetune/``: ``epoch-<k>/`` (peft adapters), ``train_log.csv``,
``lengths.csv``, ``train_summary.json``, and ``checkpoints/`` (optimizer, scheduler, RNG
and step of the last epoch, for resuming).
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import time
from pathlib import Path

from .config import Config
from .data import load_annotations
from .prompts import training_text
from .runs import atomic_dir, open_stage, saved_config, stage_dir, write_csv, write_json

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
IGNORE_INDEX = -100  # label value the loss skips (prompt tokens and padding)


def lora_config(cfg: Config):
    """peft ``LoraConfig`` from the train section."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.train.lora_r, lora_alpha=cfg.train.lora_alpha, lora_dropout=cfg.train.lora_dropout,
                      target_modules=cfg.train.target_modules, bias="none", task_type="CAUSAL_LM")


def annotation_records(cfg: Config):
    path = cfg.resolve_path(cfg.data.annotations)
    records = load_annotations(path)
    return records[: cfg.data.max_annotations] if cfg.data.max_annotations else records


def tokenize_examples(cfg: Config, tokenizer, context_limit: int | None) -> list[dict]:
    """Token ids and labels (prompt masked) for every annotation; no silent truncation.

    Raises ValueError naming the annotation if it is longer than ``train.max_length``
    or the model's context.
    """
    examples = []
    for ann in annotation_records(cfg):
        text = training_text(ann, cfg.prompt.template)
        prompt_ids = tokenizer(text.prompt, add_special_tokens=False).input_ids
        target_ids = tokenizer(text.target, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        ids = prompt_ids + target_ids
        examples.append({"id": ann.id, "input_ids": ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids,
                         "prompt_tokens": len(prompt_ids), "target_tokens": len(target_ids)})
    longest = max(len(e["input_ids"]) for e in examples)
    limit = cfg.train.max_length or longest
    for bound, name in ((limit, "train.max_length"), (context_limit, "the model's context")):
        too_long = [e["id"] for e in examples if bound and len(e["input_ids"]) > bound]
        if too_long:
            raise ValueError(f"annotations {too_long} exceed {name} ({bound} tokens; longest is {longest}); "
                             "raise train.max_length or shorten them — nothing is truncated silently")
    return examples


def target_positions(labels):
    """Positions whose output predicts a labelled token in any row: [n_keep] long.

    Logits are computed only there. On CPU the full-vocabulary head and its softmax at
    every prompt position cost ~20% of a step (measured: 215 vs 180 tokens/s); the loss is
    the same (tested).
    """
    import torch

    has_target = (labels[:, 1:] != IGNORE_INDEX).any(dim=0)  # [seq - 1]
    return torch.nonzero(has_target).squeeze(1)


def target_only_trainer():
    """A ``Trainer`` whose model computes logits only at target positions."""
    from transformers import Trainer

    class TargetOnlyTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            keep = target_positions(labels)
            shifted = labels[:, keep + 1]  # label of the token each kept position predicts
            inputs = {**inputs, "labels": shifted, "shift_labels": shifted, "logits_to_keep": keep}
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return TargetOnlyTrainer


def _callbacks(stage_path: Path, rows: list[dict]):
    """Per-step log rows with tokens/s, adapter export at each epoch end, and a NaN guard."""
    from transformers import TrainerCallback

    class StudyCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.clock, self.tokens = time.perf_counter(), state.num_input_tokens_seen
            self.session_start = (self.clock, self.tokens)  # after a resume: where this session began

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            loss = logs.get("loss")
            if loss is not None and not math.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss} at step {state.global_step} (epoch {state.epoch:.2f}); "
                    f"stopped. The last good adapter is the newest epoch-<k>/ in {stage_path}. "
                    "Lower train.learning_rate or use train.precision: float32."
                )
            if loss is None:
                return
            now, seen = time.perf_counter(), state.num_input_tokens_seen
            rows.append({"step": state.global_step, "epoch": round(state.epoch, 4), "loss": loss,
                         "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                         "tokens": seen, "tokens_per_s": (seen - self.tokens) / max(now - self.clock, 1e-9)})
            self.clock, self.tokens = now, seen

        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            write_csv(stage_path / "train_log.csv", _log_frame(rows, stage_path / "train_log.csv"))
            epoch = round(state.epoch)
            source = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            with atomic_dir(stage_path / f"epoch-{epoch}") as tmp:
                for name in ADAPTER_FILES:
                    shutil.copy2(source / name, tmp / name)
                write_json(tmp / "epoch.json", {"epoch": epoch, "step": state.global_step,
                                                "loss": next((r["loss"] for r in reversed(rows)), None)})

    return [StudyCallback()]


def _latest_checkpoint(checkpoints: Path) -> str | None:
    found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return str(found[-1]) if found else None


def run_finetune(cfg: Config, force: bool = False) -> list[Path]:
    """Train LoRA adapters, saving one per epoch; resumes an interrupted run. Returns files written."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import DataCollatorForSeq2Seq, TrainingArguments, set_seed

    from .models import load_model, plan_device

    stage_path = stage_dir(cfg, "02")
    if force and _world_size() > 1:
        raise ValueError("--force with several processes would race to delete the stage; "
                         f"delete {stage_path} first, then launch without --force")
    if force and stage_path.exists():
        shutil.rmtree(stage_path)
    resumable = stage_path.exists() and not (stage_path / "DONE").exists() and (stage_path / "config.yaml").exists()
    if resumable and _training_settings(saved_config(stage_path)) != _training_settings(cfg.to_dict()):
        raise ValueError(f"{stage_path} holds an interrupted run with different model/data/train settings; "
                         "rerun with force=True (--force) to start over")
    annotation_records(cfg)  # validated before the stage directory exists
    plan = plan_device(cfg.model, cfg.train.precision)
    stage = open_stage(cfg, "02", extra_env={"device_plan": plan.as_dict()})
    if stage.skipped:
        return stage.outputs()

    set_seed(cfg.run.seed)
    quantized = cfg.model.quant == "nf4"
    model, tokenizer = load_model(cfg.model, dtype="float32", quantized=quantized)
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing)
    model = get_peft_model(model, lora_config(cfg))
    examples = tokenize_examples(cfg, tokenizer, getattr(model.config, "max_position_embeddings", None))
    lengths = write_csv(stage.file("lengths.csv"), _lengths_frame(examples))

    from datasets import Dataset

    dataset = Dataset.from_list([{k: e[k] for k in ("input_ids", "labels")} for e in examples])
    optimizer = cfg.train.optimizer
    if optimizer == "auto":
        optimizer = "paged_adamw_8bit" if quantized and plan.device == "cuda" else "adamw_torch"
    args = TrainingArguments(
        output_dir=str(stage.file("checkpoints")),
        num_train_epochs=cfg.train.epochs,
        per_device_train_batch_size=cfg.train.batch_size,
        gradient_accumulation_steps=cfg.train.grad_accum,
        learning_rate=cfg.train.learning_rate,
        lr_scheduler_type=cfg.train.lr_scheduler,
        warmup_steps=cfg.train.warmup_ratio,  # a float < 1 is read as a ratio of total steps
        weight_decay=cfg.train.weight_decay,
        max_grad_norm=cfg.train.max_grad_norm,
        optim=optimizer,
        bf16=plan.train_dtype == "bfloat16",
        use_cpu=plan.device == "cpu",
        ddp_backend="gloo" if plan.device == "cpu" and _world_size() > 1 else None,
        activation_checkpointing=cfg.train.gradient_checkpointing,  # v5 name of gradient checkpointing
        train_sampling_strategy="group_by_length" if cfg.train.group_by_length else "random",
        save_strategy="epoch",
        save_total_limit=1,
        logging_steps=cfg.train.logging_steps,
        include_num_input_tokens_seen="non_padding",
        seed=cfg.run.seed,
        data_seed=cfg.run.seed,
        report_to="none",
        disable_tqdm=False,
    )
    rows: list[dict] = []
    callbacks = _callbacks(stage.path, rows)
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    trainer = target_only_trainer()(model=model, args=args, train_dataset=dataset, data_collator=collator,
                                    callbacks=callbacks)
    resume = _latest_checkpoint(stage.file("checkpoints"))
    if resume:
        print(f"resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume)
    started, tokens_before = callbacks[0].session_start
    seconds = time.perf_counter() - started
    tokens_now = trainer.state.num_input_tokens_seen - tokens_before
    if not trainer.is_world_process_zero():
        return []
    log = write_csv(stage.file("train_log.csv"), _log_frame(rows, stage.file("train_log.csv")))
    summary = {
        "examples": len(examples),
        "tokens_per_epoch": int(sum(len(e["input_ids"]) for e in examples)),
        "target_tokens_per_epoch": int(sum(e["target_tokens"] for e in examples)),
        "epochs": cfg.train.epochs,
        "processes": args.world_size,
        "effective_batch": cfg.train.batch_size * cfg.train.grad_accum * args.world_size,
        "train_dtype": plan.train_dtype,
        "precision_reason": plan.reason,
        "padding": "group_by_length batches, padded per batch" if cfg.train.group_by_length else "random batches, padded per batch",
        "minutes_this_session": round(seconds / 60, 2),
        "tokens_trained_this_session": int(tokens_now),
        "tokens_per_s_this_session": round(tokens_now / seconds, 1),
        "resumed_from": resume,
        "final_loss": rows[-1]["loss"] if rows else None,
        "torch_threads": torch.get_num_threads(),
    }
    adapters = sorted(stage.path.glob("epoch-*/adapter_model.safetensors"))
    out = write_json(stage.file("train_summary.json"), summary)
    return stage.finish([out, log, lengths, *adapters], summary)


def _world_size() -> int:
    """Processes started by accelerate/torchrun (they set WORLD_SIZE); 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _training_settings(config: dict) -> dict:
    return {k: config.get(k) for k in ("model", "data", "prompt", "train")} | {"seed": config["run"]["seed"]}


def _lengths_frame(examples: list[dict]):
    import pandas as pd

    return pd.DataFrame([{"id": e["id"], "prompt_tokens": e["prompt_tokens"], "target_tokens": e["target_tokens"],
                          "total_tokens": len(e["input_ids"])} for e in examples])


def _log_frame(rows: list[dict], existing: Path):
    """This session's rows appended to an earlier session's log (a resumed run keeps its history)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if existing.is_file():
        before = pd.read_csv(existing)
        frame = pd.concat([before[before["step"] < (frame["step"].min() if len(frame) else math.inf)], frame])
    return frame


def main(argv: list[str] | None = None) -> int:
    """Entry point for several processes: ``accelerate launch -m cqa_utils.train --config smoke``."""
    from .config import load_config

    parser = argparse.ArgumentParser(prog="python -m cqa_utils.train", description=main.__doc__)
    parser.add_argument("--config", default="default")
    parser.add_argument("--run", dest="run_name")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from .cli import _parse_set

    overrides = _parse_set(args.set) | ({"run.name": args.run_name} if args.run_name else {})
    for path in run_finetune(load_config(args.config, overrides), force=args.force):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
