"""The notebooks: structure checks (fast) and a papermill smoke run of the whole pipeline."""

import nbformat
import pytest

from cqa_utils.pipeline import NOTEBOOK_DIR, NotebookFailed, run_pipeline
from cqa_utils.registry import GRID_NOTEBOOKS, STAGES

NOTEBOOK_FILES = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))


def test_stage_registry_and_notebook_folder_agree():
    # every notebook is either a pipeline stage or a grid notebook, numbered after the stages
    assert [spec.notebook for spec in STAGES] + [g.notebook for g in GRID_NOTEBOOKS] == NOTEBOOK_FILES
    assert all(g.notebook.startswith(g.key + "_") for g in GRID_NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOK_FILES)
def test_notebook_is_committed_clean_with_one_parameters_cell(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "**Reads:**" in nb.cells[1].source and "**Writes:**" in nb.cells[1].source
    assert nb.cells[-1].cell_type == "markdown" and nb.cells[-1].source.startswith("## Summary")
    assert nb.metadata.kernelspec.name == "cqa-companion"


@pytest.mark.slow
def test_smoke_pipeline_runs_every_notebook(smoke_run):
    results, run = smoke_run
    assert [r.executed.name for r in results] == [spec.notebook for spec in STAGES]
    for spec in STAGES:
        assert (run / spec.folder / "DONE").is_file(), f"stage {spec.key} wrote no DONE marker"
    # A second run is a no-op for every stage: nothing is recomputed.
    before = {p: p.stat().st_mtime_ns for p in run.rglob("DONE")}
    run_pipeline("smoke", overrides={"run.results_dir": str(run.parent)})
    assert before == {p: p.stat().st_mtime_ns for p in run.rglob("DONE")}


def test_failing_notebook_is_named_with_its_cell(tmp_path):
    with pytest.raises(NotebookFailed, match=r"00_environment_check.ipynb failed in cell \d+"):
        run_pipeline("smoke", only="00", overrides={"run.results_dir": str(tmp_path), "model.name": str(tmp_path / "nope")})
    assert (tmp_path / "smoke" / "notebooks" / "00_environment_check.ipynb").is_file()
