"""The run layout: ``results/<run>/NN_stage/``, atomic writes and DONE markers.

Stages talk only through files. Each stage directory holds the resolved ``config.yaml``,
an ``environment.json`` (versions, device, seeds, git commit) and a ``DONE`` marker
written last, so a crashed stage is never trusted by the next one. Every stage
runner opens its directory through :func:`open_stage` and ends with :meth:`Stage.finish`,
which records its outputs by name; a later stage asks for them with :func:`stage_outputs`.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterator

import yaml

from .config import PROJECT_ROOT, Config
from .malloc import malloc_in_use
from .registry import get_stage

TRACKED_PACKAGES = (
    "torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets", "safetensors",
    "gguf", "papermill", "scipy", "pandas", "numpy", "seaborn", "matplotlib", "scikit-learn",
)


REFERENCE_DIR = PROJECT_ROOT / "reference"  # the published runs: read by the pipeline, written by `cqa publish` only


def run_dir(cfg: Config) -> Path:
    """``<results_dir>/<run.name>``; the run name is validated in RunConfig."""
    return cfg.resolve_path(cfg.run.results_dir) / cfg.run.name


def inside(base: Path, relative: str | Path) -> Path:
    """Join and refuse any path that would land outside ``base`` (``..``, absolute paths)."""
    base = base.resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise ValueError(f"path {str(relative)!r} escapes {base}; results are written inside the run only")
    return target


def is_published(path: Path) -> bool:
    """Whether ``path`` lies inside the published runs (``reference/``, or is that folder)."""
    path, root = Path(path).resolve(), REFERENCE_DIR.resolve()
    return path == root or root in path.parents


def refuse_published(path: Path, what: str) -> None:
    """Refuse to write ``what`` at ``path`` inside the published runs (``reference/``): a stage or notebook that
    wrote there would change a published result behind its MANIFEST. The error says how to recompute instead."""
    if not is_published(path):
        return
    path = Path(path).resolve()
    parts = path.relative_to(REFERENCE_DIR.resolve()).parts
    if parts[:1] == ("sweeps",):
        fix = ("leave results_dir at 'results': the published grid is read from reference/sweeps/ and notebook 06 "
               "writes to results/sweeps/<grid>/06_robustness/")
    else:
        run = parts[0] if parts else "<run>"
        fix = (f"copy the run into results/ and recompute it there:\n  mkdir -p results && cp -r reference/{run} "
               f"results/{run}\n  cqa run --config <its config> --run {run} --only <stages> --force\n"
               f"(reading a published run needs no copy: set run.results_dir=reference and leave force off)")
    raise PermissionError(f"{path} is inside the published runs (reference/), which the pipeline only reads; "
                          f"refusing to write {what} there. To recompute, {fix}")


# --- atomic writes ---------------------------------------------------------------------

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it

@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are as readable as any file written here
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in blocks (source files, published outputs, ShareGPT's 125 MB)."""
    import hashlib
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl(path: Path, rows) -> Path:
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_csv(path: Path, frame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Build a directory under a temp name and swap it in whole (adapters, model caches)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# --- environment record ----------------------------------------------------------------

def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def package_versions(names=TRACKED_PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment_record(cfg: Config, extra: dict | None = None) -> dict:
    """What a reader needs to trust or re-run a number: versions, machine, seeds, commit."""
    record = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
        "git_commit": git_commit(),
        "seeds": {"run": cfg.run.seed, "stats": cfg.stats.seed},
        "malloc": malloc_in_use(),
    }
    if "torch" in sys.modules:
        import torch

        record["torch_threads"] = torch.get_num_threads()
        record["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        record["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    record.update(extra or {})
    return record


def peak_rss_gib() -> float:
    """This process's peak resident memory (GiB): the kernel's own high-water mark, so a spike
    between two samples is not missed the way polling would miss it. Each notebook runs in its
    own kernel, so in a pipeline run this is the stage's peak."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2 ** 30 if sys.platform == "darwin" else 2 ** 20), 3)


# --- stages ----------------------------------------------------------------------------

def is_rank_zero() -> bool:
    """True in a single process and on rank 0 of a torchrun/accelerate job: the one that writes."""
    return int(os.environ.get("RANK", "0")) == 0


def stage_dir(cfg: Config, stage: str) -> Path:
    """``results/<run>/<NN_stage>`` for a stage key like ``"03"`` or a folder name."""
    return run_dir(cfg) / get_stage(stage).folder


def is_done(path: Path) -> bool:
    return (Path(path) / "DONE").is_file()


def require_done(cfg: Config, stage: str) -> Path:
    """The directory of an earlier stage, or a clear error telling what to run first."""
    path = stage_dir(cfg, stage)
    if not is_done(path):
        state = "is incomplete (no DONE marker: it crashed or is still running)" if path.exists() else "does not exist"
        raise FileNotFoundError(
            f"{path} {state}. Run that stage first: cqa run --config <config> --run {cfg.run.name} "
            f"--only {get_stage(stage).key}"
        )
    return path


def stage_outputs(cfg: Config, stage: str) -> dict[str, Path]:
    """The named outputs of a finished earlier stage (what its runner returned)."""
    return _read_outputs(require_done(cfg, stage))


def _read_outputs(path: Path) -> dict[str, Path]:
    done = json.loads((path / "DONE").read_text(encoding="utf-8"))
    return {name: path / relative for name, relative in done["outputs"].items()}


@dataclass
class Stage:
    """An open stage directory; call :meth:`finish` once every output is written."""

    cfg: Config
    path: Path
    skipped: bool
    started: float = field(default_factory=time.perf_counter)

    def file(self, relative: str) -> Path:
        return inside(self.path, relative)

    def finish(self, outputs: dict[str, Path], summary: dict | None = None) -> dict[str, Path]:
        """Write the DONE marker last, with the outputs by name (paths relative) and a summary;
        the stage's wall time and peak memory go into its environment record."""
        env_file = self.path / "environment.json"
        env = json.loads(env_file.read_text(encoding="utf-8"))
        write_json(env_file, env | {"stage_seconds": round(time.perf_counter() - self.started, 1),
                                    "peak_rss_gib": peak_rss_gib()})
        root = self.path.resolve()
        rel = {name: str(Path(p).resolve().relative_to(root)) for name, p in outputs.items()}
        write_json(self.path / "DONE", {
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "outputs": rel,
            "summary": summary or {},
        })
        return self.outputs()

    def outputs(self) -> dict[str, Path]:
        """What the stage wrote, by name, e.g. ``{"scores": .../03_logprobs/scores.csv}``."""
        return _read_outputs(self.path)


def open_stage(cfg: Config, stage: str, force: bool = False, extra_env: dict | None = None) -> Stage:
    """Open a stage: a finished one is skipped unless forced; an unfinished one is redone.

    Writes ``config.yaml`` and ``environment.json`` up front, so a crash still leaves a
    record of what was attempted (but no DONE marker).
    """
    path = stage_dir(cfg, stage)
    if is_done(path) and not force:
        print(f"[{path.name}] already done ({path}); pass force=True to redo it")
        return Stage(cfg, path, skipped=True)
    refuse_published(path, f"stage {path.name}" + (" (force=True)" if force else ""))
    if is_done(path):
        (path / "DONE").unlink()
    path.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():  # the ranks of a multi-process job share one record, written once
        write_text(path / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_json(path / "environment.json", environment_record(cfg, extra_env))
    return Stage(cfg, path, skipped=False)


def saved_config(path: Path) -> dict:
    """The resolved config a stage was run with."""
    return yaml.safe_load((Path(path) / "config.yaml").read_text(encoding="utf-8"))
