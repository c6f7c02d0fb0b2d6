"""The paper config's code path on CPU: a tiny, randomly initialised Qwen2 through stages 01-05.

configs/paper-qwen2.5-7b.yaml is meant for a CUDA GPU and the hub. Everything in it except
CUDA itself — a Qwen2 architecture without tied embeddings, the Qwen2 tokenizer's conventions
(``<|endoftext|>`` as start token, no automatic BOS), nf4 QLoRA with bf16 compute, gradient
checkpointing, fp32 scoring of the adapters, statistics and figures — runs here on a model of
a few MB built from the project's own texts, so a GPU user's first run cannot fail on
something a CPU can catch. The model is random: its numbers mean nothing, and stage 00's
sentence-vs-shuffled check must (and does) refuse it.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from cqa_utils.config import PROJECT_ROOT, load_config

PAPER = "paper-qwen2.5-7b"
TEXTS = ("data/annotations/cot_annotations.jsonl", "data/benchmark/benchmark_v2.jsonl")


def project_texts() -> list[str]:
    """Every string value of the annotation and benchmark files: the tokenizer's training text."""
    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for inner in value.values():
                yield from strings(inner)
        elif isinstance(value, list):
            for inner in value:
                yield from strings(inner)

    texts = []
    for name in TEXTS:
        for line in (PROJECT_ROOT / name).read_text(encoding="utf-8").splitlines():
            texts.extend(strings(json.loads(line)))
    return texts


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    """A local folder holding a random Qwen2ForCausalLM (safetensors) and a Qwen2Tokenizer whose
    byte-level BPE vocabulary (2,048 entries) was learnt from the project's texts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer

    folder = tmp_path_factory.mktemp("tiny-qwen2")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(project_texts(), trainers.BpeTrainer(
        vocab_size=2048, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    learnt = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(vocab=learnt["vocab"], merges=[tuple(m) for m in learnt["merges"]])
    tokenizer.save_pretrained(folder)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=False, bos_token_id=eos, eos_token_id=eos))
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def paper_overrides(model_dir, tmp_path) -> dict:
    """The paper config on the tiny model, on CPU, shrunk to minutes; precision, 4-bit,
    checkpointing, optimizer choice and scoring precision stay the paper's."""
    return {"model.name": str(model_dir), "model.device": "cpu", "run.results_dir": str(tmp_path / "results"),
            "data.max_annotations": 4, "data.max_items_per_group": 3, "train.epochs": 1,
            "train.grad_accum": 1,  # 4 optimizer steps: with one, warm-up keeps the only step at lr 0
            "stats.headline_epoch": 1, "stats.n_boot": 200, "stats.n_perm": 200, "score.mismatched_k": 2,
            "audit.max_records_per_dataset": 30, "audit.n_boot": 100}


def test_the_tiny_model_follows_the_qwen2_tokenizer_conventions(tiny_qwen2):
    from transformers import AutoTokenizer

    from cqa_utils.scoring import start_token_id

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2)
    assert tokenizer.bos_token is None and tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer("A quiet street.").input_ids[0] != tokenizer.eos_token_id  # no automatic BOS
    cfg = load_config(PAPER)
    assert start_token_id(tokenizer, cfg.model.start_token) == tokenizer.eos_token_id


def test_stage_00_refuses_a_random_model(tiny_qwen2, tmp_path):
    from cqa_utils.stages.environment import run_environment

    with pytest.raises(RuntimeError, match="sentence-vs-shuffled"):
        run_environment(load_config(PAPER, paper_overrides(tiny_qwen2, tmp_path)))


def test_paper_config_runs_stages_01_to_05_on_cpu_with_nf4(tiny_qwen2, tmp_path):
    from cqa_utils.pipeline import run_pipeline
    from cqa_utils.runs import stage_dir

    overrides = paper_overrides(tiny_qwen2, tmp_path)
    results = run_pipeline(PAPER, only="01-05", overrides=overrides)
    assert [r.key for r in results] == ["01", "02", "03", "04", "05"]

    cfg = load_config(PAPER, overrides)
    assert (cfg.model.quant, cfg.train.precision, cfg.train.gradient_checkpointing) == ("nf4", "bfloat16", True)
    finetune = stage_dir(cfg, "02")
    summary = json.loads((finetune / "train_summary.json").read_text())
    assert summary["train_dtype"] == "bfloat16" and summary["epochs"] == 1
    assert (finetune / "epoch-1" / "adapter_model.safetensors").is_file()
    assert (pd.read_csv(finetune / "train_log.csv")["peak_rss_gib"] > 0).all()  # memory logged at every step
    assert json.loads((finetune / "environment.json").read_text())["peak_rss_gib"] > 0

    scores = pd.read_csv(stage_dir(cfg, "03") / "scores.csv")
    assert set(scores["epoch"]) == {0, 1}
    assert scores[["logp_cond", "logp_uncond", "delta_i_specific"]].notna().all().all()
    assert (scores["logp_cond"] < 0).all()
    base, tuned = (scores[scores["epoch"] == e].set_index(["item_id", "variant"])["logp_cond"] for e in (0, 1))
    assert (base - tuned.loc[base.index]).abs().max() > 0  # the nf4-trained adapter changed the fp32 scores
    for stage in ("04", "05"):
        assert (stage_dir(cfg, stage) / "DONE").is_file()
    assert list(stage_dir(cfg, "05").rglob("*.png"))
