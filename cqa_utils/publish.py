"""Published runs: ``cqa publish RUN`` copies a finished run's compact outputs to ``reference/<run>/``.

Everything a reader needs to open notebooks 03–06 without training (configs, environment
records, train log, scores, statistics, figures, DONE markers, the run's ``efficiency.json``)
is copied in the run's own stage layout, so ``--set run.results_dir=reference`` makes every
stage a finished one that notebooks read instead of recompute. Adapters, checkpoints and model files are left out,
and so is anything over ``max_file_mb`` (listed, never silently). ``MANIFEST.json`` records
the sha256 of every file, the model's weights hash and the git commit. A published grid
also gets ``reference/sweeps/<grid>.json``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .config import Config
from .efficiency import FILENAME as EFFICIENCY_FILE
from .registry import STAGES
from .runs import REFERENCE_DIR, atomic_dir, file_sha256, git_commit, is_done, run_dir, write_json

SKIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
RUN_FILES = (EFFICIENCY_FILE,)  # records of the whole run, beside its stage folders


def compact_files(run: Path, max_file_mb: float) -> tuple[list[Path], list[str]]:
    """(files to publish, "path (why)" for each file left out), relative to the run."""
    keep, left_out = [], []
    for spec in STAGES:
        stage = run / spec.folder
        if not is_done(stage):
            continue
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            rel = path.relative_to(run)
            inside_dir = len(rel.parts) > 2  # adapters and checkpoints are folders inside a stage
            if inside_dir or path.suffix in SKIP_SUFFIXES:
                left_out.append(f"{rel} (model weights or checkpoint)")
            elif path.stat().st_size > max_file_mb * 2**20:
                left_out.append(f"{rel} ({path.stat().st_size / 2**20:.1f} MB > {max_file_mb} MB)")
            else:
                keep.append(rel)
    keep += [Path(name) for name in RUN_FILES if (run / name).is_file()]
    return keep, left_out


def publish_run(cfg: Config, dest_root: Path = REFERENCE_DIR, max_file_mb: float = 8.0) -> Path:
    """Copy ``results/<run>/``'s compact outputs to ``<dest_root>/<run>/`` (replaced whole)."""
    from .models import weights_sha256
    run = run_dir(cfg)
    if not any(is_done(run / s.folder) for s in STAGES):
        raise FileNotFoundError(f"{run}: no finished stage to publish; run `cqa run --run {cfg.run.name}` first")
    if (run / ".lock").exists():
        raise RuntimeError(f"{run} is locked by a writer ({run / '.lock'}); publish it once the run finished")
    keep, left_out = compact_files(run, max_file_mb)
    dest = Path(dest_root) / cfg.run.name
    with atomic_dir(dest) as tmp:
        for rel in keep:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run / rel, tmp / rel)
        write_json(tmp / "MANIFEST.json", {
            "run": cfg.run.name, "source": str(run), "git_commit": git_commit(),
            "model": cfg.model.name, "model_weights_sha256": weights_sha256(cfg.model.name),
            "files": {str(rel): file_sha256(run / rel) for rel in keep}, "left_out": left_out,
            "how_to_read": f"cqa run --config <config> --run {cfg.run.name} --set run.results_dir="
                           f"{Path(dest_root).name} --only 03-05 (finished stages are read, not recomputed)"})
    size = sum((dest / rel).stat().st_size for rel in keep) / 2**20
    print(f"published {len(keep)} files ({size:.1f} MB) to {dest}; left out {len(left_out)}")
    return dest


def up_to_date(cfg: Config, dest_root: Path = REFERENCE_DIR, max_file_mb: float = 8.0) -> bool:
    """The run is published intact and its compact files have not changed since: publishing it
    again would only rewrite its manifest's git commit (the provenance of the first copy)."""
    dest = Path(dest_root) / cfg.run.name
    if not (dest / "MANIFEST.json").is_file() or verify_published(dest):
        return False
    run = run_dir(cfg)
    keep, _ = compact_files(run, max_file_mb)
    files = json.loads((dest / "MANIFEST.json").read_text(encoding="utf-8"))["files"]
    return files == {str(rel): file_sha256(run / rel) for rel in keep}


def published_manifest(grid: str, dest_root: Path = REFERENCE_DIR) -> Path:
    """Where a grid's manifest is published: ``reference/sweeps/<grid>.json``."""
    return Path(dest_root) / "sweeps" / f"{grid}.json"


def publish_manifest(manifest: Path, dest_root: Path = REFERENCE_DIR, robustness: Path | None = None) -> Path:
    """Copy a sweep's manifest next to its published runs (``reference/sweeps/<grid>.json``),
    and notebook 06's tables, figures and robustness.json where it ran (``robustness``, by
    default ``06_robustness/`` beside the manifest) to ``reference/sweeps/<grid>/06_robustness/``,
    its robustness.json naming the published manifest it now sits beside. A run not finished has
    no published path (null: the machine that ran the sweep is not where a reader finds it), and
    a run still going there is pending for a reader."""
    manifest = Path(manifest)
    data = json.loads(manifest.read_text(encoding="utf-8"))
    for run in data["runs"]:
        run["path"] = f"{Path(dest_root).name}/{run['name']}" if run.get("status") == "done" else None
        run["status"] = "pending" if run["status"] == "running" else run["status"]
    out = published_manifest(data["grid"], dest_root)
    robustness = Path(robustness) if robustness is not None else manifest.parent / "06_robustness"
    if (robustness / "robustness.json").is_file():
        with atomic_dir(Path(dest_root) / "sweeps" / data["grid"] / "06_robustness") as tmp:
            for path in sorted(p for p in robustness.iterdir() if p.is_file()):
                shutil.copyfile(path, tmp / path.name)
            report = json.loads((tmp / "robustness.json").read_text(encoding="utf-8"))
            write_json(tmp / "robustness.json", report | {"manifest": f"{Path(dest_root).name}/sweeps/{out.name}"})
    return write_json(out, data)


def verify_published(path: Path) -> list[str]:
    """Files of a published run whose sha256 no longer matches its manifest (empty = intact)."""
    manifest = json.loads((Path(path) / "MANIFEST.json").read_text(encoding="utf-8"))
    return [rel for rel, digest in manifest["files"].items()
            if not (Path(path) / rel).is_file() or file_sha256(Path(path) / rel) != digest]
