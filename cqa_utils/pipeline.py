"""Run the study's notebooks in order with papermill.

The notebook list is the stage registry (:data:`cqa_utils.registry.STAGES`); a test fails
if it and the grid notebooks (:data:`~cqa_utils.registry.GRID_NOTEBOOKS`, which run_pipeline leaves out) disagree
with ``notebooks/``. Every notebook gets the same parameters (config, run_name, force, overrides),
runs on the project's named kernel, and its executed copy is kept under
``results/<run>/notebooks/`` even when it fails, with an HTML page of it under
``results/<run>/html/`` to read without Jupyter; a failure names the notebook and cell
and makes ``cqa run`` (and so ``make``) exit non-zero.

While a notebook runs, its cells' stderr is echoed to the terminal, each line tagged with
the stage: the progress lines of :mod:`cqa_utils.progress` (the kernels run in
:func:`cqa_utils.frontend.batch_environment`) and any warning. The kernel process's own log
(not a cell's output) shows errors only (:data:`KERNEL_ARGUMENTS`). Only stderr: papermill's
``log_output`` would also log every print and displayed value. Each stage's wall time is
printed when it ends, and all of them with the total at the end. In the executed copy, each
cell's stream outputs are merged into one per stream (nbclient's ``coalesce_streams``):
otherwise every progress line is an output of its own, a few dozen in notebook 03's
scoring cell.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .config import PROJECT_ROOT, load_config
from .efficiency import efficiency_is_stale, efficiency_markdown, write_efficiency
from .frontend import batch_environment
from .progress import format_duration
from .registry import GridNotebook, StageSpec, select
from .run_lock import PARENT_ENV, run_lock
from .runs import refuse_published, run_dir, write_text

KERNEL_NAME = "cqa-companion"
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
# Command-line options of every notebook kernel. Its application log goes to this process's stderr, and
# ipykernel 7 warns there at each start that its local TCP sockets are unencrypted (true of every kernel
# jupyter_client starts, JupyterLab's too): a line per stage that says nothing about the run. Errors still show.
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=ERROR",)


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


class StageEcho:
    """A file-like sink for papermill's ``stderr_file``: the cells' stderr, echoed line by line.

    Each line goes to ``out`` (default: stdout, so it interleaves with the stage headers in a
    log) as ``  [03] <line>``; of a line redrawn with carriage returns only its last state is kept.
    """

    def __init__(self, key: str, out=None):
        self.prefix, self.out, self.pending = f"  [{key}] ", out, ""

    def write(self, text: str) -> None:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self._echo(line)

    @property
    def stream(self):
        return self.out or sys.stdout  # looked up late: pytest's capture replaces sys.stdout

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        """Echo what is left without a final newline."""
        self._echo(self.pending)
        self.pending = ""
        self.flush()

    def _echo(self, line: str) -> None:
        line = line.rsplit("\r", 1)[-1].rstrip()
        if line:
            self.stream.write(self.prefix + line + "\n")


def export_html(executed: Path, html_dir: Path) -> Path:
    """``<html_dir>/<notebook>.html`` of an executed notebook (nbconvert's HTML page), written atomically."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    return write_text(Path(html_dir) / f"{executed.stem}.html", body)


def run_notebook(spec: StageSpec | GridNotebook, parameters: dict, run_path: Path,
                 kernel: str = KERNEL_NAME) -> StageResult:
    """Execute one notebook into ``<run_path>/notebooks/``, echoing its stderr; export it to ``html/`` either way.

    A stage's notebook runs in its run's folder; a grid notebook (06) in the grid's.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    key, name = spec.key, spec.notebook
    source = NOTEBOOK_DIR / name
    executed = run_path / "notebooks" / name
    executed.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"\n=== [{key}] {name} → {executed}", flush=True)
    echo = StageEcho(key)
    try:
        with batch_environment():
            pm.execute_notebook(str(source), str(executed), parameters=parameters, kernel_name=kernel,
                                cwd=str(NOTEBOOK_DIR), progress_bar=False, stderr_file=echo,
                                coalesce_streams=True, extra_arguments=list(KERNEL_ARGUMENTS))
    except PapermillExecutionError as err:
        print(f"=== [{key}] failed after {format_duration(time.perf_counter() - started)}", flush=True)
        raise NotebookFailed(
            f"{name} failed in cell {err.cell_index} (execution count {err.exec_count}): "
            f"{err.ename}: {err.evalue}\nExecuted copy with the traceback: {executed}"
        ) from None
    finally:
        echo.close()
        if executed.is_file():
            export_html(executed, run_path / "html")
    seconds = time.perf_counter() - started
    print(f"=== [{key}] done in {format_duration(seconds)}", flush=True)
    return StageResult(key, source, executed, seconds)


def format_timings(results: list[StageResult]) -> str:
    """The wall time of each stage and the total, one line each."""
    width = max(len(r.notebook.name) for r in results)
    lines = [f"  {r.key}  {r.notebook.name:<{width}}  {format_duration(r.seconds)}" for r in results]
    total = format_duration(sum(r.seconds for r in results))
    return "\n".join(["=== wall time per stage", *lines, f"  {'total':<{width + 4}}  {total}"])


def shown(path: Path) -> str:
    """A path as a user types it: relative to the working directory when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def where_to_read(run_path: Path, results: list[StageResult]) -> list[str]:
    """Where the executed notebooks and their HTML pages of ``results`` lie, one line each."""
    names = [r.executed.name for r in results]
    span = names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}"
    pages = span.replace(".ipynb", ".html")
    return [f"  executed notebooks: {shown(run_path / 'notebooks')}/ ({span}, with their outputs)",
            f"  HTML pages:         {shown(run_path / 'html')}/ ({pages}, for a browser)"]


def run_pipeline(config: str = "default", run_name: str | None = None, only: str | None = None,
                 force: bool = False, overrides: dict | None = None, kernel: str = KERNEL_NAME) -> list[StageResult]:
    """Execute the selected notebooks in order; stops at the first failure (NotebookFailed)."""
    overrides = dict(overrides or {})
    if run_name:
        overrides["run.name"] = run_name
    cfg = load_config(config, overrides)  # fail fast on a bad config, before any notebook starts
    ensure_kernel(kernel)
    run_path = run_dir(cfg)
    refuse_published(run_path, "executed notebooks and HTML pages")
    parameters = {"config": str(config), "run_name": cfg.run.name, "force": force, "overrides": overrides}
    with run_lock(run_path, "cqa run"), _kernels_write_under(os.getpid()):  # one writer for the whole run
        results = [run_notebook(spec, parameters, run_path, kernel) for spec in select(only)]
        print("\n" + format_timings(results), flush=True)
        if {r.key for r in results} & {"02", "03"} and efficiency_is_stale(run_path):
            report_efficiency(cfg)
    return results


def report_efficiency(cfg) -> None:
    """Measure the bound now, on the machine that just trained and scored, and print wall / bound."""
    path = write_efficiency(cfg)
    print(f"\n=== efficiency against this machine's matmul bound ({path})\n"
          + efficiency_markdown(json.loads(path.read_text(encoding="utf-8"))), flush=True)


@contextlib.contextmanager
def _kernels_write_under(pid: int):
    """Tell the notebook kernels this process holds the run's lock (cqa_utils.run_lock)."""
    before = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = str(pid)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = before
