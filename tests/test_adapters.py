"""Adapters on the real embedded model: they change scores, unload cleanly, fail loudly when broken,
and the 4-bit CPU path keeps LoRA gradients and base weights sound."""
import numpy as np
import pytest
import torch

from cqa_utils.config import ModelConfig
from cqa_utils.stages.logprobs import Checkpoint, applied, check_adapter
from cqa_utils.scoring import ScoreRequest, score_requests

REQUESTS = [ScoreRequest("a", "### Passage\n", "The kettle ticked as it warmed, and the window fogged.")]


@pytest.fixture(scope="module")
def random_adapter(embedded, tmp_path_factory):
    """A real peft adapter with non-zero B matrices (zero-init LoRA would change nothing)."""
    from peft import LoraConfig, get_peft_model

    model, _ = embedded
    folder = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(folder)
    peft_model.unload()
    return folder


def logprobs(model, tokenizer):
    return score_requests(model, tokenizer, REQUESTS, progress=False)[0].logprobs


def test_adapter_changes_scores_and_unloading_restores_the_base(embedded, random_adapter):
    model, tokenizer = embedded
    before = logprobs(model, tokenizer)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with applied(model, Checkpoint("epoch-1", 1, random_adapter)) as tuned:
        with_adapter = logprobs(tuned, tokenizer)
    after = logprobs(model, tokenizer)
    assert np.abs(with_adapter - before).max() > 1e-3
    np.testing.assert_array_equal(after, before)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_merged_adapter_scores_as_the_unmerged_lora_layers(embedded, random_adapter):
    """Scoring merges fp32 adapters into the weights; the LoRA layers themselves are the reference."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    model, tokenizer = embedded
    with applied(model, Checkpoint("epoch-1", 1, random_adapter)) as merged:
        layers = [layer for layer in merged.modules() if isinstance(layer, LoraLayer)]
        assert layers and all(layer.merged for layer in layers)  # merged, not run as extra layers
        with_merge = logprobs(merged, tokenizer)
    unmerged = PeftModel.from_pretrained(model, str(random_adapter), is_trainable=False)
    try:
        reference = logprobs(unmerged, tokenizer)
    finally:
        unmerged.unload()
    np.testing.assert_allclose(with_merge, reference, atol=5e-5, rtol=0)  # measured: 3.4e-5 on a trained adapter


def test_truncated_adapter_file_is_reported_by_path(random_adapter, tmp_path):
    broken = tmp_path / "epoch-9"
    broken.mkdir()
    (broken / "adapter_config.json").write_bytes((random_adapter / "adapter_config.json").read_bytes())
    data = (random_adapter / "adapter_model.safetensors").read_bytes()
    (broken / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"epoch-9/adapter_model.safetensors: corrupted or truncated"):
        check_adapter(broken)


def test_missing_adapter_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors: missing; is .* a peft adapter folder"):
        check_adapter(tmp_path)


def lora_grads(model, batch):
    model.zero_grad()
    model(**batch).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_4bit_cpu_path_keeps_lora_gradients_and_base_weights_sound(tmp_path):
    """The DESIGN's two AVX512-BF16 bugs, checked on whatever CPU runs the tests."""
    from bitsandbytes.nn import Linear4bit
    from peft import get_peft_model, prepare_model_for_kbit_training

    from cqa_utils.models import load_model
    from cqa_utils.training import lora_config
    from cqa_utils.config import load_config

    model, tokenizer = load_model(ModelConfig(device="cpu", quant="nf4"), quantized=True)
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    torch.manual_seed(0)
    model = get_peft_model(model, lora_config(load_config("smoke", {"train.lora_dropout": 0.0})))
    for name, param in model.named_parameters():  # non-zero B so A also receives gradient
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    ids = tokenizer("The ferry nosed out into the brown water at dusk.", return_tensors="pt").input_ids
    batch = {"input_ids": ids, "labels": ids}
    model.train()
    first = lora_grads(model, batch)
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    model.train()
    second = lora_grads(model, batch)
    assert first.keys() == second.keys() and len(first) > 0
    for name in first:
        torch.testing.assert_close(second[name], first[name], rtol=0, atol=0, msg=name)

    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    model.save_pretrained(tmp_path / "adapter")
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param.detach(), base[name]), f"{name} changed while saving the adapter"
