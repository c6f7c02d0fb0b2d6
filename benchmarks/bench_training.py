"""Training speed: the project's Trainer (logits at target positions only) vs the plain
HF Trainer (full logits) vs TRL's SFTTrainer (completion-only loss), equal settings.

Same model, LoRA config, precision, examples (the first ``n_examples`` annotations,
~800 tokens each) and batch; one epoch each. Reports non-padding tokens/s and the final
loss, so a speed-up that changed the objective would show.
"""
from __future__ import annotations

import tempfile
import time


def _train(kind: str, cfg, examples, plan) -> dict:
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from cqa_utils.models import load_model
    from cqa_utils.training import IGNORE_INDEX, lora_config, target_only_trainer

    set_seed(cfg.run.seed)
    model, tokenizer = load_model(cfg.model)
    common = dict(output_dir=tempfile.mkdtemp(), num_train_epochs=1, per_device_train_batch_size=cfg.train.batch_size,
                  gradient_accumulation_steps=cfg.train.grad_accum, learning_rate=cfg.train.learning_rate,
                  bf16=plan.train_dtype == "bfloat16", use_cpu=True, save_strategy="no", report_to="none",
                  logging_steps=1, seed=cfg.run.seed, disable_tqdm=True)
    if kind == "trl_sft":
        from trl import SFTConfig, SFTTrainer

        data = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
        trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=data, peft_config=lora_config(cfg),
                             args=SFTConfig(**common, completion_only_loss=True, max_length=None))
    else:
        model = get_peft_model(model, lora_config(cfg))
        data = Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
        trainer_class = target_only_trainer() if kind == "cqa_target_only" else Trainer
        trainer = trainer_class(model=model, args=TrainingArguments(**common), train_dataset=data,
                                data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX))
    tokens = sum(len(e["input_ids"]) for e in examples)
    began = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - began
    del trainer, model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {"trainer": kind, "tokens": tokens, "seconds": round(seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1), "train_loss": round(result.training_loss, 4)}


def run(n_examples: int = 16) -> dict:
    from transformers import AutoTokenizer

    from cqa_utils.config import load_config
    from cqa_utils.models import plan_device, resolve_model_path
    from cqa_utils.arms import training_texts
    from cqa_utils.training import tokenize_examples, training_annotations

    cfg = load_config("default", {"data.max_annotations": n_examples})
    plan = plan_device(cfg.model, cfg.train.precision)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.model.name))
    examples = tokenize_examples(cfg, tokenizer, None)
    for example, text in zip(examples, training_texts(training_annotations(cfg), "cot", cfg.prompt.template)):
        example.update(prompt=text.prompt, completion=text.target + tokenizer.eos_token)
    runs = [_train(kind, cfg, examples, plan) for kind in ("cqa_target_only", "hf_trainer_full_logits", "trl_sft")]
    base = runs[0]["tokens_per_s"]
    for r in runs:
        r["speed_vs_cqa"] = round(r["tokens_per_s"] / base, 2)
    return {"precision": plan.train_dtype, "precision_reason": plan.reason, "examples": n_examples, "runs": runs}
