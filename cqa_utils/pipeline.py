"""Run the study's notebooks in order with papermill.

The notebook list is the stage registry (:data:`cqa_utils.registry.STAGES`); a test fails
if it and the grid notebooks (:data:`~cqa_utils.registry.GRID_NOTEBOOKS`, which run_pipeline leaves out) disagree
with ``notebooks/``. Every notebook gets the same parameters (config, run_name, force, overrides),
runs on the project's named kernel, and its executed copy is kept under
``results/<run>/notebooks/`` even when it fails; a failure names the notebook and cell
and makes ``cqa run`` (and so ``make``) exit non-zero.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .config import PROJECT_ROOT, load_config
from .registry import GridNotebook, StageSpec, select
from .runs import run_dir

KERNEL_NAME = "cqa-companion"
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


@dataclass(frozen=True)
class StageResult:
    key: str
    notebook: Path
    executed: Path
    seconds: float


def ensure_kernel(kernel: str = KERNEL_NAME) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        raise RuntimeError(
            f"the Jupyter kernel {kernel!r} is not registered; run `make setup` (it runs "
            f"python -m ipykernel install --sys-prefix --name {kernel})"
        ) from None


def run_notebook(spec: StageSpec | GridNotebook, parameters: dict, out_dir: Path, kernel: str = KERNEL_NAME) -> StageResult:
    """One notebook, a stage's or a grid's (notebook 06 takes grid parameters, not a run's)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    key, name = spec.key, spec.notebook
    source = NOTEBOOK_DIR / name
    executed = out_dir / name
    started = time.perf_counter()
    print(f"\n=== [{key}] {name} → {executed}", flush=True)
    try:
        pm.execute_notebook(str(source), str(executed), parameters=parameters, kernel_name=kernel,
                            cwd=str(NOTEBOOK_DIR), progress_bar=False, log_output=False)
    except PapermillExecutionError as err:
        raise NotebookFailed(
            f"{name} failed in cell {err.cell_index} (execution count {err.exec_count}): "
            f"{err.ename}: {err.evalue}\nExecuted copy with the traceback: {executed}"
        ) from None
    seconds = time.perf_counter() - started
    print(f"=== [{key}] done in {seconds:.0f} s", flush=True)
    return StageResult(key, source, executed, seconds)


def run_pipeline(config: str = "default", run_name: str | None = None, only: str | None = None,
                 force: bool = False, overrides: dict | None = None, kernel: str = KERNEL_NAME) -> list[StageResult]:
    """Execute the selected notebooks in order; stops at the first failure (NotebookFailed)."""
    overrides = dict(overrides or {})
    if run_name:
        overrides["run.name"] = run_name
    cfg = load_config(config, overrides)  # fail fast on a bad config, before any notebook starts
    ensure_kernel(kernel)
    out_dir = run_dir(cfg) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    parameters = {"config": str(config), "run_name": cfg.run.name, "force": force, "overrides": overrides}
    return [run_notebook(spec, parameters, out_dir, kernel) for spec in select(only)]
