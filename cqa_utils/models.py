"""Model loading: hub models, local folders and the embedded ones, devices, precision and 4-bit.

An ``embedded:*`` name (:mod:`cqa_utils.embedded`: SmolLM2-135M-Instruct by default, Gemma 3
270M base on demand) resolves to its converted safetensors folder in the cache, built on
first use; from then on it loads like any Hugging Face causal LM. Used by notebooks 00, 02 and 03.
"""
from __future__ import annotations

import functools

import importlib.util
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import EMBEDDED_PREFIX, ModelConfig

CACHE_ENV = "CQA_CACHE_DIR"
INSTALL_HINT = "pip install -e '.[quant]'  (or: make setup)"


def cache_root() -> Path:
    """``$CQA_CACHE_DIR`` or the user cache dir (``~/.cache/cqa-companion`` on Linux)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("cqa-companion"))


MODEL_FILES = ("*.safetensors", "config.json", "tokenizer*", "special_tokens_map.json")


@functools.lru_cache(maxsize=8)
def weights_sha256(name: str) -> str:
    """sha256 over a model's weights, config and tokenizer files (sorted by name): what "the
    same model" means for published runs and the base-score cache. A hub id not on disk is
    returned as ``hub:<id>`` (its files are not known here)."""
    import hashlib
    path = Path(resolve_model_path(name))
    files = sorted({f for pattern in MODEL_FILES for f in path.glob(pattern)}) if path.is_dir() else []
    if not any(f.suffix == ".safetensors" for f in files):
        return f"hub:{name}"
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def resolve_model_path(name: str) -> str:
    """An embedded model's cache folder (built on first use), else the hub id or path as given."""
    if not name.startswith(EMBEDDED_PREFIX):
        return name
    from .embedded import build_embedded_model  # embedded imports this module

    return str(build_embedded_model(name))


# --- devices and precision -------------------------------------------------------------

@dataclass(frozen=True)
class DevicePlan:
    """Where and in what precision a stage runs, and why; saved with every run."""

    device: str
    train_dtype: str
    cpu_capability: str | None
    bf16_speedup: float | None
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_device(requested: str = "auto") -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model.device=cuda but no CUDA GPU is visible; use model.device: auto or cpu")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def bf16_matmul_speedup(size: int = 768, repeats: int = 6) -> float:
    """fp32 time / bf16 time of a square matmul on this CPU (>1 means bf16 is faster).

    Measured, not assumed: bf16 ran ~100x slower than fp32 on AVX2-only CPUs and ~1.3x
    faster with AVX512-BF16/AMX, and the CPU can change between sessions.
    """
    import torch

    def best(dtype):
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        torch.matmul(a, b)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b)
            times.append(time.perf_counter() - start)
        return min(times)

    return best(torch.float32) / best(torch.bfloat16)


def plan_device(model_cfg: ModelConfig, precision: str = "auto") -> DevicePlan:
    """Pick device and training precision: bf16 on CUDA when supported, on CPU only if probed faster."""
    import torch

    device = resolve_device(model_cfg.device)
    capability = torch.backends.cpu.get_cpu_capability()
    if precision != "auto":
        return DevicePlan(device, precision, capability, None, f"set by config: {precision}")
    if device == "cuda":
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
        return DevicePlan(device, dtype, capability, None, "CUDA: bf16 where the GPU supports it")
    speedup = bf16_matmul_speedup()
    dtype = "bfloat16" if speedup >= 1.25 else "float32"
    return DevicePlan(device, dtype, capability, round(speedup, 2),
                      f"CPU probe: bf16 matmul {speedup:.2f}x fp32 (bf16 chosen only at >= 1.25x)")


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


# --- loading ---------------------------------------------------------------------------

def quantization_config(model_cfg: ModelConfig, compute_dtype: str = "float32"):
    """``BitsAndBytesConfig`` for nf4 QLoRA (double quantization), or None."""
    if model_cfg.quant == "none":
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(f"model.quant=nf4 needs bitsandbytes: {INSTALL_HINT}")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch_dtype(compute_dtype),
    )


def disable_avx512bf16_kernels(model) -> int:
    """Turn off bitsandbytes' AVX512-BF16 CPU path on every Linear4bit; returns how many.

    On CPUs reporting AVX512-BF16 that path gave wrong LoRA gradients after an eval-mode
    no-grad pass and corrupted base weights when the adapter was saved; with it off both
    were right. On AVX2-only CPUs the flag is never read, so setting it is harmless.
    """
    from bitsandbytes.nn import Linear4bit

    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def load_pretrained(path_or_id: str, *, dtype: str = "float32", device: str = "cpu",
                    quantization=None, revision: str | None = None):
    """Load a causal LM + tokenizer: safetensors only, never remote code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common = dict(revision=revision, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(path_or_id, **common)
    kwargs = dict(common, use_safetensors=True, dtype=torch_dtype(dtype))
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map={"": device if device != "cuda" else 0})
    model = AutoModelForCausalLM.from_pretrained(path_or_id, **kwargs)
    if quantization is None:
        model.to(device)
    elif device == "cpu":
        disable_avx512bf16_kernels(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_model(model_cfg: ModelConfig, *, dtype: str = "float32", quantized: bool = False):
    """Load the configured model for scoring (fp32, unquantized) or training (maybe nf4)."""
    device = resolve_device(model_cfg.device)
    quant = quantization_config(model_cfg, dtype) if quantized else None
    return load_pretrained(resolve_model_path(model_cfg.name), dtype=dtype, device=device,
                           quantization=quant, revision=model_cfg.revision)


def four_bit_status() -> dict:
    """Whether bitsandbytes imports and which 4-bit path this machine would take."""
    import torch

    info = {"bitsandbytes": None, "cuda": torch.cuda.is_available(), "usable": False}
    if importlib.util.find_spec("bitsandbytes") is None:
        info["note"] = f"bitsandbytes not installed: {INSTALL_HINT}"
        return info
    import bitsandbytes
    from bitsandbytes.functional import has_avx512bf16

    info.update(bitsandbytes=bitsandbytes.__version__, usable=True,
                cpu_avx512bf16=bool(has_avx512bf16()),
                note="nf4 on CUDA" if info["cuda"] else "nf4 on CPU (AVX512-BF16 kernels disabled on load)")
    return info
