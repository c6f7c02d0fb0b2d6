"""The project's notebooks as data: the pipeline's stages, and the notebooks that read a grid.

``runs`` (stage folders), ``pipeline`` (notebook order), the ``cqa`` CLI and the tests all
read :data:`STAGES`, so adding a stage means adding one row here, one module in
``cqa_utils/stages/`` and one notebook. The runner is named, not imported, so base modules
can read the table without depending on the stages (a test checks that direction).
:data:`GRID_NOTEBOOKS` are not stages: they read a whole grid of finished runs
(``cqa sweep``), so ``cqa run`` never runs them; together the two lists are every notebook.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class StageSpec:
    key: str  # "03": what ``cqa run --only`` takes
    folder: str  # results/<run>/<folder>/
    notebook: str  # notebooks/<notebook>
    runner: str  # "<module in cqa_utils.stages>:<function>"

    def load_runner(self) -> Callable:
        """The stage's ``run_<stage>(cfg, force) -> dict[str, Path]``."""
        module, _, function = self.runner.partition(":")
        return getattr(importlib.import_module(f"cqa_utils.stages.{module}"), function)


STAGES = (
    StageSpec("00", "00_environment", "00_environment_check.ipynb", "environment:run_environment"),
    StageSpec("01", "01_data_audit", "01_data_audit.ipynb", "data_audit:run_data_audit"),
    StageSpec("02", "02_finetune", "02_qlora_finetune.ipynb", "finetune:run_finetune"),
    StageSpec("03", "03_logprobs", "03_logprob_extraction.ipynb", "logprobs:run_logprobs"),
    StageSpec("04", "04_stats", "04_delta_i_statistics.ipynb", "statistics:run_statistics"),
    StageSpec("05", "05_figures", "05_figures.ipynb", "figures:run_figures"),
)


@dataclass(frozen=True)
class GridNotebook:
    key: str  # numbered after the stages
    notebook: str  # notebooks/<notebook>
    reads: str  # what it needs to exist first


GRID_NOTEBOOKS = (
    GridNotebook("06", "06_robustness.ipynb", "a sweep manifest: results/sweeps/<grid>/sweep.json or reference/sweeps/<grid>.json"),
)


def get_stage(name: str) -> StageSpec:
    """A stage by key (``"03"``) or folder name (``"03_logprobs"``)."""
    for spec in STAGES:
        if name in (spec.key, spec.folder):
            return spec
    raise ValueError(f"unknown stage {name!r}; stages: {[s.key + ' ' + s.folder for s in STAGES]}")


def select(only: str | None) -> list[StageSpec]:
    """Stages to run: all, one key (``"03"``) or an inclusive range (``"02-04"``)."""
    if not only:
        return list(STAGES)
    first, _, last = only.partition("-")
    last = last or first
    keys = [spec.key for spec in STAGES]
    for key in (first, last):
        if key not in keys:
            raise ValueError(f"--only {only!r}: unknown stage {key!r}; stages: {keys}")
    return [spec for spec in STAGES if first <= spec.key <= last]
