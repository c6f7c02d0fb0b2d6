"""Training speed: the project's trainer (stage 02's model, arguments and target-only logits) vs
TRL's SFTTrainer (completion-only loss) at the same settings, against this machine's bound.

Same model, LoRA config, precision, examples (the first ``n_examples`` annotations), batch,
learning-rate schedule and seed; one epoch each. Reports non-padding tokens/s and the final
loss, so a speed-up that changed the objective would show. The bound counts 4·N_body per
trained token + 4·N_head per target token (frozen base: forward and input gradients; the
LoRA matrices, ≈3 % more, are not counted), timed at the training's own shapes and precision.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time


def _arguments(cfg, plan):
    from cqa_utils.training import training_arguments

    args = training_arguments(cfg, tempfile.mkdtemp(), device=plan.device, train_dtype=plan.train_dtype,
                              quantized=cfg.model.quant == "nf4")
    return dataclasses.replace(args, num_train_epochs=1, save_strategy="no", disable_tqdm=True)


def _train(kind: str, cfg, examples, plan) -> dict:
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, set_seed

    from cqa_utils.models import load_model
    from cqa_utils.stages.finetune import trainable_model
    from cqa_utils.training import IGNORE_INDEX, lora_config, target_only_trainer

    set_seed(cfg.run.seed)
    args = _arguments(cfg, plan)
    if kind == "trl_sft":
        from trl import SFTConfig, SFTTrainer

        model, tokenizer = load_model(cfg.model)
        fields = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
        sft = SFTConfig(**{k: v for k, v in args.to_dict().items() if k in fields},
                        completion_only_loss=True, max_length=None)
        data = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
        trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=data, peft_config=lora_config(cfg),
                             args=sft)
    else:
        model, tokenizer = trainable_model(cfg, plan.train_dtype)
        data = Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
        trainer = target_only_trainer()(model=model, args=args, train_dataset=data, data_collator=DataCollatorForSeq2Seq(
            tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX))
    began = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - began
    tokens = sum(len(e["input_ids"]) for e in examples)
    return {"trainer": kind, "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "train_loss": round(result.training_loss, 5)}


def examples_for(n_examples: int, overrides: dict | None = None):
    """(cfg, device plan, tokenized examples with their prompt/completion text for TRL)."""
    from transformers import AutoTokenizer

    from cqa_utils.arms import training_texts
    from cqa_utils.config import load_config
    from cqa_utils.models import plan_device, resolve_model_path
    from cqa_utils.training import tokenize_examples, training_annotations

    cfg = load_config("default", {"data.max_annotations": n_examples, **(overrides or {})})
    plan = plan_device(cfg.model, cfg.train.precision)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.model.name))
    examples = tokenize_examples(cfg, tokenizer, None)
    texts = training_texts(training_annotations(cfg), cfg.train.arm, cfg.prompt.template, cfg.run.seed)
    for example, text in zip(examples, texts):
        # TRL tokenizes prompt and completion itself; the start token is written into the prompt
        example.update(prompt=cfg.model.start_token + text.prompt, completion=text.target + tokenizer.eos_token)
    return cfg, plan, examples


def training_bound(cfg, plan, examples, seconds: float) -> tuple[dict, float]:
    """(bound record, fraction of the bound reached by an epoch over ``examples`` that took ``seconds``)."""
    from cqa_utils.bound import measure_bound, training_work
    from cqa_utils.efficiency import model_shapes

    shapes = model_shapes(cfg.model.name)
    tokens = sum(len(e["input_ids"]) for e in examples)
    targets = sum(e["target_tokens"] for e in examples)
    batch = cfg.train.batch_size
    bound = measure_bound(shapes, dtype=plan.train_dtype, rows=batch * tokens / len(examples),
                          head_rows=batch * targets / len(examples), backward=True)
    at_bound = bound.seconds(training_work(tokens, targets), shapes)
    return {**bound.as_dict(), "tokens": tokens, "target_tokens": targets, "bound_seconds": round(at_bound, 2)}, \
        at_bound / seconds


def run(n_examples: int = 16) -> dict:
    cfg, plan, examples = examples_for(n_examples)
    ours, trl = [_train(kind, cfg, examples, plan) for kind in ("cqa_target_only", "trl_sft")]
    bound, fraction = training_bound(cfg, plan, examples, ours["seconds"])
    return {"precision": plan.train_dtype, "precision_reason": plan.reason, "examples": n_examples,
            "batch_size": cfg.train.batch_size, "grad_accum": cfg.train.grad_accum, "runs": [ours, trl],
            "ratio_vs_trl": round(trl["seconds"] / ours["seconds"], 3),
            "final_loss_vs_trl": round(ours["train_loss"] / trl["train_loss"], 5),
            "bound": bound, "fraction_of_bound": round(fraction, 3)}
