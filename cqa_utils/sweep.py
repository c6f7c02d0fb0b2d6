"""Grids of ordinary runs: ``cqa sweep --grid configs/sweeps/<name>.yaml``.

A grid file names a base config, optional settings for every run (``set``), and one or more
blocks of ``key: [values]`` whose cartesian products are the runs (arms × seeds × any
config key). Each run is a plain ``cqa run`` into its own ``results/<run>/``, one after
another, so a grid is resumable for free: finished runs are skipped (also runs published
to ``reference/<run>/`` by ``cqa publish``, so a grid spans sessions and clones), and an
interrupted run picks up where its stages stopped. Everything is checked before anything starts: an
unknown grid or config key, an unknown arm, duplicate runs, or an existing run directory
whose saved config differs. Progress and the manifest ``results/sweeps/<grid>/sweep.json``
(what notebook 06 reads) are updated after every run. On a cluster, each run can be one
array job instead (DESIGN.md); the manifest stays the same.

Grid file::

    config: default                    # base config of every run
    name: controls                     # run names start with it
    stages: 00-04                      # optional: which stages each run needs (default all)
    run_name: "{train.arm}-s{run.seed}"  # optional; default: the varied values joined by "-"
    set: {score.controls_at: headline} # optional: overrides for every run
    grid:                              # one block, or a list of blocks
      - {train.arm: [cot, shuffled_cot], run.seed: [1, 2, 3]}
      - {train.arm: [verdict_only, passage_lm], run.seed: [1]}
"""
from __future__ import annotations

import difflib
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import publish
from .config import PROJECT_ROOT, Config, load_config
from .registry import select
from .runs import is_done, run_dir, saved_config, stage_dir, write_json

GRID_KEYS = ("config", "name", "stages", "run_name", "set", "grid")


@dataclass(frozen=True)
class SweepRun:
    name: str
    overrides: dict = field(hash=False)


@dataclass(frozen=True)
class Grid:
    name: str
    config: str
    stages: str | None
    runs: tuple[SweepRun, ...]
    common: dict = field(default_factory=dict, hash=False)  # the grid file's ``set``

    def base(self) -> Config:
        return load_config(self.config, self.common)

    def manifest_path(self) -> Path:
        return PROJECT_ROOT / self.base().run.results_dir / "sweeps" / self.name / "sweep.json"


def _blocks(raw, where: str) -> list[dict]:
    blocks = raw if isinstance(raw, list) else [raw]
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or not block:
            raise ValueError(f"{where}: grid[{i}] must map config keys to lists of values")
        for key, values in block.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{where}: grid[{i}].{key} must be a non-empty list, got {values!r}")
    return blocks


def _run_name(grid: str, pattern: str | None, varied: dict) -> str:
    if pattern:
        name = pattern
        for key, value in varied.items():
            name = name.replace("{" + key + "}", str(value))
        if "{" in name:
            raise ValueError(f"run_name {pattern!r}: {name!r} still holds a placeholder; use the grid's keys")
    else:
        name = "-".join(str(v) for v in varied.values())
    return f"{grid}-{name}"


def load_grid(path: Path | str, config: str | None = None) -> Grid:
    """Read and check a grid file; every run's config is resolved (so checked) here."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such grid file (see configs/sweeps/)")
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for key in spec:
        if key not in GRID_KEYS:
            near = difflib.get_close_matches(key, GRID_KEYS, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; allowed: {list(GRID_KEYS)}"
            raise ValueError(f"{path}: unknown key {key!r}{hint}")
    if "grid" not in spec:
        raise ValueError(f"{path}: 'grid' is missing (blocks of config key: [values])")
    name, base = spec.get("name") or path.stem, config or spec.get("config", "default")
    runs, seen = [], {}
    for block in _blocks(spec["grid"], str(path)):
        for values in itertools.product(*block.values()):
            varied = dict(zip(block, values))
            overrides = {**(spec.get("set") or {}), **varied}
            run = SweepRun(_run_name(name, spec.get("run_name"), varied), overrides)
            try:
                load_config(base, {**overrides, "run.name": run.name})
            except ValueError as err:
                raise ValueError(f"{path}: run {run.name}: {err}") from None
            key = tuple(sorted((k, repr(v)) for k, v in overrides.items()))
            for other, what in ((seen.get(key), "the same settings"), (seen.get(run.name), "the same name")):
                if other:
                    raise ValueError(f"{path}: runs {other} and {run.name} have {what}")
            seen[key] = seen[run.name] = run.name
            runs.append(run)
    return Grid(name, base, spec.get("stages"), tuple(runs), dict(spec.get("set") or {}))


def run_config(grid: Grid, run: SweepRun) -> Config:
    return load_config(grid.config, {**run.overrides, "run.name": run.name})


def check_existing(grid: Grid) -> None:
    """Refuse a grid whose run names point at runs made with other settings."""
    for run in grid.runs:
        cfg = run_config(grid, run)
        for spec in select(None):
            folder = stage_dir(cfg, spec.key)
            if (folder / "config.yaml").is_file() and saved_config(folder) != cfg.to_dict():
                saved, now = saved_config(folder), cfg.to_dict()
                diff = [f"{s}.{k}" for s in now for k in now[s] if saved.get(s, {}).get(k) != now[s][k]]
                raise ValueError(f"{folder} exists with a different config ({', '.join(diff[:5])}); "
                                 f"the grid would mix it in. Delete it, or rename the grid")


def run_location(grid: Grid, run: SweepRun) -> Path | None:
    """Where the run's finished stages are: ``results/<run>/``, else its published copy
    ``reference/<run>/`` (made with the same config), so a grid resumes in a fresh clone."""
    cfg = run_config(grid, run)
    for root in (run_dir(cfg), publish.REFERENCE_DIR / run.name):
        folders = [root / spec.folder for spec in select(grid.stages)]
        if all(is_done(f) and saved_config(f) == cfg.to_dict() for f in folders):
            return root
    return None


def finished(grid: Grid, run: SweepRun) -> bool:
    return run_location(grid, run) is not None


def _write_manifest(grid: Grid, status: dict, walls: dict) -> Path:
    """``walls`` maps a finished run to its ``wall_s`` and ``resumed`` (part of the run was
    done before the process that finished it started, so ``wall_s`` understates it)."""
    return write_json(grid.manifest_path(), {
        "grid": grid.name, "config": grid.config, "stages": grid.stages,
        "runs": [{"name": r.name, "overrides": r.overrides, "status": status[r.name],
                  **walls.get(r.name, {"wall_s": None, "resumed": False}),
                  "path": str(run_location(grid, r) or run_dir(run_config(grid, r)))} for r in grid.runs]})


def _previous_walls(grid: Grid, status: dict) -> dict[str, dict]:
    """Wall times of finished runs from an earlier manifest: this machine's, else the published
    one (a sweep resumed in a fresh clone keeps the times measured in earlier sessions)."""
    walls = {}
    for path in (publish.published_manifest(grid.name, publish.REFERENCE_DIR), grid.manifest_path()):
        if path.is_file():
            runs = json.loads(path.read_text(encoding="utf-8")).get("runs", [])
            walls |= {r["name"]: {"wall_s": r["wall_s"], "resumed": r.get("resumed", False)}
                      for r in runs if r.get("wall_s") and status.get(r["name"]) == "done"}
    return walls


def publish_finished(grid: Grid, max_file_mb: float = 8.0) -> Path:
    """Publish every run finished on this machine (runs only in ``reference/``, or published
    and unchanged since, stay as they are), the grid's manifest and notebook 06's output;
    returns the published manifest. On a machine that never ran the grid (a fresh clone that
    reran notebook 06 on the published runs) the published manifest is the one kept."""
    for run in grid.runs:
        cfg = run_config(grid, run)
        if run_location(grid, run) == run_dir(cfg) and not publish.up_to_date(cfg, publish.REFERENCE_DIR, max_file_mb):
            publish.publish_run(cfg, publish.REFERENCE_DIR, max_file_mb)
    local = grid.manifest_path()
    manifest = local if local.is_file() else publish.published_manifest(grid.name, publish.REFERENCE_DIR)
    if not manifest.is_file():
        raise FileNotFoundError(f"grid {grid.name!r} has no manifest, neither {local} nor {manifest}: "
                                "run `cqa sweep --grid <its grid file>` (--dry-run writes the manifest alone) first")
    return publish.publish_manifest(manifest, publish.REFERENCE_DIR, local.parent / "06_robustness")


def run_sweep(path: Path | str, config: str | None = None, dry_run: bool = False,
              publish_each: bool = False) -> Path:
    """Run every unfinished run of the grid in order; returns the manifest's path. With
    ``publish_each`` every finished run goes to ``reference/`` at once, so a session that
    ends mid-grid loses at most the run in progress."""
    from .pipeline import run_pipeline

    grid = load_grid(path, config)
    check_existing(grid)
    status = {r.name: "done" if finished(grid, r) else "pending" for r in grid.runs}
    walls = _previous_walls(grid, status)
    todo = [r for r in grid.runs if status[r.name] != "done"]
    print(f"[sweep {grid.name}] {len(grid.runs)} runs, {len(grid.runs) - len(todo)} already finished, "
          f"{len(todo)} to run (manifest {grid.manifest_path()})", flush=True)
    manifest = _write_manifest(grid, status, walls)
    if dry_run:
        for r in grid.runs:
            print(f"  {status[r.name]:<8} {r.name}  {r.overrides}")
        return manifest
    for i, run in enumerate(todo, 1):
        eta = (f"~{sum(w['wall_s'] for w in walls.values()) / len(walls) * (len(todo) - i + 1) / 60:.0f} min left "
               f"(mean of {len(walls)} finished run(s))"
               if walls else "time left known after the first run")
        print(f"\n[sweep {grid.name}] run {i}/{len(todo)}: {run.name} {run.overrides} — {eta}", flush=True)
        started, resumed = time.perf_counter(), run_dir(run_config(grid, run)).exists()
        status[run.name] = "running"
        _write_manifest(grid, status, walls)
        try:
            run_pipeline(grid.config, run.name, grid.stages, False, run.overrides)
        except Exception:
            status[run.name] = "failed"
            _write_manifest(grid, status, walls)
            raise
        walls[run.name] = {"wall_s": round(time.perf_counter() - started, 1), "resumed": resumed}
        status[run.name] = "done"
        manifest = _write_manifest(grid, status, walls)
        if publish_each:
            _publish_progress(grid)
    print(f"\n[sweep {grid.name}] all {len(grid.runs)} runs finished; manifest {manifest}", flush=True)
    if not publish_each:
        robustness_notebook(grid)
    elif not todo:  # nothing ran, so nothing was published yet
        _publish_progress(grid)
    return manifest


def _publish_progress(grid: Grid) -> None:
    """Notebook 06 on the runs finished so far, then everything to ``reference/``: a grid that
    spans sessions has its robustness numbers committed after every run, not only at the end."""
    robustness_notebook(grid)
    print(f"[sweep {grid.name}] published {publish_finished(grid)}", flush=True)


def robustness_notebook(grid: Grid) -> Path:
    """Notebook 06 on the finished grid; its executed copy sits beside the manifest."""
    from .pipeline import run_notebook
    from .registry import GRID_NOTEBOOKS

    parameters = {"grid": grid.name, "results_dir": str(PROJECT_ROOT / grid.base().run.results_dir)}
    return run_notebook(GRID_NOTEBOOKS[0], parameters, grid.manifest_path().parent).executed
