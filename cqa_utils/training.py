"""What the fine-tuning stage hands to the Hugging Face Trainer, built from the config.

The Trainer does the loop (measured faster than TRL's SFTTrainer here); this module only
builds its inputs: the rendered annotations with the prompt masked out of the loss, the
LoRA config, the training arguments, a loss that computes logits only at target
positions, and the callbacks (per-epoch adapter export, per-step tokens/s, NaN guard,
progress lines in batch runs).
Used by :mod:`cqa_utils.stages.finetune` (notebook 02, ``cqa train``) and the benchmarks.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

from .config import Config
from .data import Annotation, load_annotations
from .arms import training_texts
from .progress import LineProgress, line_mode
from .runs import atomic_dir, peak_rss_gib, write_csv, write_json
from .scoring import start_token_id

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
IGNORE_INDEX = -100  # label value the loss skips (prompt tokens and padding)
LOG_COLUMNS = {"step": "step", "epoch": "epoch", "loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm",
               "num_input_tokens_seen": "tokens", "tokens_per_s": "tokens_per_s",
               "peak_rss_gib": "peak_rss_gib"}  # log_history key -> CSV column


def world_size() -> int:
    """Processes started by accelerate/torchrun (they set WORLD_SIZE); 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def lora_config(cfg: Config):
    """peft ``LoraConfig`` from the train section."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.train.lora_r, lora_alpha=cfg.train.lora_alpha, lora_dropout=cfg.train.lora_dropout,
                      target_modules=cfg.train.target_modules, bias="none", task_type="CAUSAL_LM")


def training_annotations(cfg: Config) -> list[Annotation]:
    """The validated annotations, the first ``data.max_annotations`` of them if set."""
    records = load_annotations(cfg.resolve_path(cfg.data.annotations))
    return records[: cfg.data.max_annotations] if cfg.data.max_annotations else records


def tokenize_examples(cfg: Config, tokenizer, context_limit: int | None) -> list[dict]:
    """Token ids and labels (prompt masked) for every annotation in ``train.arm``'s form
    (:mod:`cqa_utils.arms`); no silent truncation.

    Every sequence starts with the same start token as a scored one (``model.start_token``,
    see :func:`cqa_utils.scoring.start_token_id`), so training and scoring see the same input.
    Raises ValueError naming the annotation if it is longer than ``train.max_length``
    or the model's context.
    """
    start = start_token_id(tokenizer, cfg.model.start_token)
    examples = []
    for text in training_texts(training_annotations(cfg), cfg.train.arm, cfg.prompt.template, cfg.run.seed):
        prompt_ids = [start] + tokenizer(text.prompt, add_special_tokens=False).input_ids
        target_ids = tokenizer(text.target, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        ids = prompt_ids + target_ids
        examples.append({"id": text.id, "target_id": text.target_id, "input_ids": ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids,
                         "prompt_tokens": len(prompt_ids), "target_tokens": len(target_ids)})
    longest = max(len(e["input_ids"]) for e in examples)
    limit = cfg.train.max_length or longest
    for bound, name in ((limit, "train.max_length"), (context_limit, "the model's context")):
        too_long = [e["id"] for e in examples if bound and len(e["input_ids"]) > bound]
        if too_long:
            raise ValueError(f"annotations {too_long} exceed {name} ({bound} tokens; longest is {longest}); "
                             "raise train.max_length or shorten them — nothing is truncated silently")
    return examples


def lengths_frame(examples: list[dict]):
    """Prompt, target and total tokens per example (what notebook 02's histogram shows)."""
    import pandas as pd

    return pd.DataFrame([{"id": e["id"], "prompt_tokens": e["prompt_tokens"], "target_tokens": e["target_tokens"],
                          "total_tokens": len(e["input_ids"])} for e in examples])


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


def training_arguments(cfg: Config, output_dir: Path, *, device: str, train_dtype: str, quantized: bool):
    """``TrainingArguments`` from the train section; one checkpoint per epoch, kept for resuming."""
    from transformers import TrainingArguments

    optimizer = cfg.train.optimizer
    if optimizer == "auto":
        optimizer = "paged_adamw_8bit" if quantized and device == "cuda" else "adamw_torch"
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=cfg.train.epochs,
        per_device_train_batch_size=cfg.train.batch_size,
        gradient_accumulation_steps=cfg.train.grad_accum,
        learning_rate=cfg.train.learning_rate,
        lr_scheduler_type=cfg.train.lr_scheduler,
        warmup_steps=cfg.train.warmup_ratio,  # a float < 1 is read as a ratio of total steps
        weight_decay=cfg.train.weight_decay,
        max_grad_norm=cfg.train.max_grad_norm,
        optim=optimizer,
        bf16=train_dtype == "bfloat16",
        use_cpu=device == "cpu",
        ddp_backend="gloo" if device == "cpu" and world_size() > 1 else None,
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


def log_frame(log_history: list[dict]):
    """The per-step rows of ``Trainer.state.log_history`` as the train_log.csv columns.

    The history is saved in every checkpoint, so a resumed run keeps its earlier steps.
    """
    import pandas as pd

    rows = [{column: entry.get(key) for key, column in LOG_COLUMNS.items()}
            for entry in log_history if "loss" in entry]
    frame = pd.DataFrame(rows, columns=list(LOG_COLUMNS.values()))
    return frame.assign(epoch=frame["epoch"].round(4))


def study_callbacks(stage_path: Path):
    """Per-step tokens/s (added to the log history), a NaN guard, and an adapter per epoch."""
    from transformers import TrainerCallback

    class StudyCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.clock, self.tokens = time.perf_counter(), state.num_input_tokens_seen
            self.session_start = (self.clock, self.tokens)  # after a resume: where this session began

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is None:
                return
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss} at step {state.global_step} (epoch {state.epoch:.2f}); "
                    f"stopped. The last good adapter is the newest epoch-<k>/ in {stage_path}. "
                    "Lower train.learning_rate or use train.precision: float32."
                )
            now, seen = time.perf_counter(), state.num_input_tokens_seen
            state.log_history[-1]["tokens_per_s"] = (seen - self.tokens) / max(now - self.clock, 1e-9)
            state.log_history[-1]["peak_rss_gib"] = peak_rss_gib()  # so a growth shows step by step
            self.clock, self.tokens = now, seen

        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            write_csv(stage_path / "train_log.csv", log_frame(state.log_history))
            epoch = round(state.epoch)
            source = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            last_loss = next((e["loss"] for e in reversed(state.log_history) if "loss" in e), None)
            with atomic_dir(stage_path / f"epoch-{epoch}") as tmp:
                for name in ADAPTER_FILES:
                    shutil.copy2(source / name, tmp / name)
                write_json(tmp / "epoch.json", {"epoch": epoch, "step": state.global_step, "loss": last_loss})

    return [StudyCallback()]


def line_progress_callback():
    """A callback reporting training as :class:`~cqa_utils.progress.LineProgress` lines.

    A line as training starts, one after the first optimizer step, then one per ~10 % of the
    steps and never more than a minute apart (a "still on step n" line where one step takes longer): step, epoch,
    last logged loss, steps/s and time left (``training: 40/125 step (32 %) · 0.41 step/s ·
    3 min 27 s left · epoch 2/5 · loss 1.874``), then the total time. Only the main process reports.
    """
    from transformers import TrainerCallback

    class TrainingLines(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.loss = None
            self.bar = LineProgress(total=state.max_steps, initial=state.global_step, desc="training",
                                    unit="step", disable=not state.is_world_process_zero, heartbeat=True)
            self.bar.note(f"resuming at step {state.global_step} of {state.max_steps}" if state.global_step else
                          f"{state.max_steps} optimizer steps over {state.num_train_epochs} epochs")

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.loss = (logs or {}).get("loss", self.loss)

        def on_step_end(self, args, state, control, **kwargs):
            loss = f" · loss {self.loss:.3f}" if self.loss is not None else ""
            self.bar.set_postfix_str(f"epoch {math.ceil(state.epoch)}/{state.num_train_epochs}{loss}")
            self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return TrainingLines()


def report_progress(trainer) -> None:
    """Keep the Trainer's own bar in Jupyter and terminals; in line mode, swap it for lines.

    The bar (tqdm, or transformers' HTML table in a notebook) redraws at every step, which a
    batch run's log would keep as one line each (see :mod:`cqa_utils.progress`).
    """
    if not line_mode():
        return
    from transformers.trainer_callback import ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    for bar in (ProgressCallback, NotebookProgressCallback):
        trainer.remove_callback(bar)
    trainer.add_callback(line_progress_callback())


def latest_checkpoint(checkpoints: Path) -> str | None:
    """The newest ``checkpoint-<step>`` folder the Trainer left, to resume from."""
    found = sorted(Path(checkpoints).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return str(found[-1]) if found else None
