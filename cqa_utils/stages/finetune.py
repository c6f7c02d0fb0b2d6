"""Stage 02: LoRA / QLoRA fine-tuning on the CoT annotations, one adapter per epoch.

Driven by notebook 02 and by ``cqa train`` (which ``accelerate launch`` or ``torchrun``
start once per process for data-parallel training). Writes ``results/<run>/02_finetune/``:
``epoch-<k>/`` (peft adapters), ``train_log.csv``, ``lengths.csv``, ``train_summary.json``,
and ``checkpoints/`` (optimizer, scheduler, RNG, step and log of the last epoch, for resuming).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..config import Config
from ..run_lock import locked
from ..runs import is_rank_zero, open_stage, saved_config, stage_dir, write_csv, write_json
from ..training import (IGNORE_INDEX, latest_checkpoint, lengths_frame, log_frame, lora_config, report_progress,
                        study_callbacks, target_only_trainer, tokenize_examples, training_annotations,
                        training_arguments, world_size)

TRAINING_SECTIONS = ("model", "data", "prompt", "train")  # what an interrupted run must share to be resumed


def _training_settings(config: dict) -> dict:
    return {k: config.get(k) for k in TRAINING_SECTIONS} | {"seed": config["run"]["seed"]}


def prepare_stage_dir(cfg: Config, force: bool) -> Path:
    """Clear the stage for ``force``, or check an interrupted run may be resumed with this config."""
    path = stage_dir(cfg, "02")
    if force and world_size() > 1:
        raise ValueError("--force with several processes would race to delete the stage; "
                         f"delete {path} first, then launch without --force")
    if force and path.exists():
        shutil.rmtree(path)
    resumable = path.exists() and not (path / "DONE").exists() and (path / "config.yaml").exists()
    if resumable and _training_settings(saved_config(path)) != _training_settings(cfg.to_dict()):
        raise ValueError(f"{path} holds an interrupted run with different model/data/train settings; "
                         "rerun with force=True (--force) to start over")
    return path


def trainable_model(cfg: Config, train_dtype: str):
    """(peft model, tokenizer): the base in fp32, or in nf4 computing in the training precision
    (QLoRA: bf16 compute under bf16 training), wrapped with fresh LoRA layers."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    from ..models import load_model

    quantized = cfg.model.quant == "nf4"
    model, tokenizer = load_model(cfg.model, dtype=train_dtype if quantized else "float32", quantized=quantized)
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing)
    return get_peft_model(model, lora_config(cfg)), tokenizer


def training_summary(cfg: Config, examples: list[dict], trainer, plan, session: tuple[float, int],
                     resumed_from: str | None) -> dict:
    """What ``train_summary.json`` records: sizes, precision, speed of this session, final loss."""
    import torch

    started, tokens_before = session
    seconds = time.perf_counter() - started
    tokens_now = trainer.state.num_input_tokens_seen - tokens_before
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "examples": len(examples),
        "tokens_per_epoch": int(sum(len(e["input_ids"]) for e in examples)),
        "target_tokens_per_epoch": int(sum(e["target_tokens"] for e in examples)),
        "epochs": cfg.train.epochs,
        "processes": trainer.args.world_size,
        "effective_batch": cfg.train.batch_size * cfg.train.grad_accum * trainer.args.world_size,
        "train_dtype": plan.train_dtype,
        "precision_reason": plan.reason,
        "padding": ("none: one sequence per step" if cfg.train.batch_size == 1
                    else "group_by_length batches, padded per batch" if cfg.train.group_by_length
                    else "random batches, padded per batch"),
        "minutes_this_session": round(seconds / 60, 2),
        "tokens_trained_this_session": int(tokens_now),
        "tokens_per_s_this_session": round(tokens_now / seconds, 1),
        "resumed_from": resumed_from,
        "final_loss": losses[-1] if losses else None,
        "torch_threads": torch.get_num_threads(),
    }


@locked
def run_finetune(cfg: Config, force: bool = False) -> dict[str, Path]:
    """Train LoRA adapters, saving one per epoch; resumes an interrupted run. Returns files by name."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, set_seed

    from ..models import plan_device

    prepare_stage_dir(cfg, force)
    training_annotations(cfg)  # validated before the stage directory exists
    plan = plan_device(cfg.model, cfg.train.precision)
    stage = open_stage(cfg, "02", extra_env={"device_plan": plan.as_dict()})
    if stage.skipped:
        return stage.outputs()

    set_seed(cfg.run.seed)
    model, tokenizer = trainable_model(cfg, plan.train_dtype)
    examples = tokenize_examples(cfg, tokenizer, getattr(model.config, "max_position_embeddings", None))
    lengths = write_csv(stage.file("lengths.csv"), lengths_frame(examples))
    dataset = Dataset.from_list([{k: e[k] for k in ("input_ids", "labels")} for e in examples])
    args = training_arguments(cfg, stage.file("checkpoints"), device=plan.device, train_dtype=plan.train_dtype,
                              quantized=cfg.model.quant == "nf4")
    callbacks = study_callbacks(stage.path)
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    trainer = target_only_trainer()(model=model, args=args, train_dataset=dataset, data_collator=collator,
                                    callbacks=callbacks)
    report_progress(trainer)
    resume = latest_checkpoint(stage.file("checkpoints"))
    if resume:
        print(f"resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume)
    if not is_rank_zero():  # launched as several processes: rank 0 writes
        return {}

    summary = training_summary(cfg, examples, trainer, plan, callbacks[0].session_start, resume)
    outputs = {"train_summary": write_json(stage.file("train_summary.json"), summary),
               "train_log": write_csv(stage.file("train_log.csv"), log_frame(trainer.state.log_history)),
               "lengths": lengths}
    outputs |= {path.name: path for path in sorted(stage.path.glob("epoch-*")) if path.is_dir()}
    return stage.finish(outputs, summary)
