"""The notebooks: structure checks (fast) and a papermill smoke run of the whole pipeline."""

import io
import json

import nbformat
import pytest

from cqa_utils.pipeline import NOTEBOOK_DIR, NotebookFailed, StageEcho, export_html, run_pipeline
from cqa_utils.registry import GRID_NOTEBOOKS, STAGES

MAX_STREAM_OUTPUTS = 20  # per cell of an executed notebook: a few progress lines, not one output per update

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


def test_the_echo_tags_each_line_with_its_stage_and_keeps_the_last_state_of_a_redrawn_line():
    out = io.StringIO()
    echo = StageEcho("03", out)
    for chunk in ("scoring base: 3/10 batch", " (30 %)\nwarn", "ing: x\n\n", "\r 10%|#\r100%|###", "\n", "tail"):
        echo.write(chunk)
    echo.close()
    assert out.getvalue() == ("  [03] scoring base: 3/10 batch (30 %)\n  [03] warning: x\n  [03] 100%|###\n"
                              "  [03] tail\n")


def test_an_executed_notebook_is_exported_as_an_html_page(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "print('hi')", outputs=[nbformat.v4.new_output("stream", name="stdout", text="ΔI = +1.25 nats\n")])])
    executed = tmp_path / "03_demo.ipynb"
    nbformat.write(nb, executed)
    page = export_html(executed, tmp_path / "html")
    assert page == tmp_path / "html" / "03_demo.html"
    assert "ΔI = +1.25 nats" in page.read_text(encoding="utf-8")
    assert sorted(p.name for p in page.parent.iterdir()) == ["03_demo.html"]  # no temp file left


def stream_outputs(executed) -> dict[int, list[str]]:
    """Cell index -> the texts of its stream outputs."""
    nb = nbformat.read(executed, as_version=4)
    return {i: [o.text for o in c.outputs if o.output_type == "stream"]
            for i, c in enumerate(nb.cells) if c.cell_type == "code"}


@pytest.mark.slow
def test_smoke_pipeline_runs_every_notebook(smoke_run):
    results, run, terminal = smoke_run
    assert [r.executed.name for r in results] == [spec.notebook for spec in STAGES]
    for spec in STAGES:
        assert (run / spec.folder / "DONE").is_file(), f"stage {spec.key} wrote no DONE marker"
        assert (run / "html" / spec.notebook.replace(".ipynb", ".html")).is_file()
        for cell, texts in stream_outputs(run / "notebooks" / spec.notebook).items():
            assert len(texts) <= MAX_STREAM_OUTPUTS, f"{spec.notebook} cell {cell}: {len(texts)} stream outputs"
            assert not any("\r" in t for t in texts), f"{spec.notebook} cell {cell}: a carriage-return bar"
    assert "  [02] training: " in terminal and " step in " in terminal  # progress reached the terminal
    assert "  [03] scoring epoch-" in terminal
    assert "=== wall time per stage" in terminal and "  total" in terminal
    # The run's efficiency: each stage's own wall time against this machine's bound on its work.
    efficiency = {s["stage"]: s for s in json.loads((run / "efficiency.json").read_text(encoding="utf-8"))["stages"]}
    for spec in STAGES:
        env = json.loads((run / spec.folder / "environment.json").read_text(encoding="utf-8"))
        assert efficiency[spec.key]["seconds"] == env["stage_seconds"]
    assert all(efficiency[k]["gflop"] > 0 and efficiency[k]["bound_seconds"] > 0 for k in ("02", "03"))
    assert "=== efficiency against this machine's matmul bound" in terminal
    # A second run is a no-op for every stage: nothing is recomputed.
    records = [*run.rglob("DONE"), run / "efficiency.json"]  # nor is the bound measured again
    before = {p: p.stat().st_mtime_ns for p in records}
    run_pipeline("smoke", overrides={"run.results_dir": str(run.parent)})
    assert before == {p: p.stat().st_mtime_ns for p in records}


def test_failing_notebook_is_named_with_its_cell_and_readable_as_html(tmp_path):
    with pytest.raises(NotebookFailed, match=r"00_environment_check.ipynb failed in cell \d+") as failed:
        run_pipeline("smoke", only="00", overrides={"run.results_dir": str(tmp_path), "model.name": str(tmp_path / "nope")})
    assert (tmp_path / "smoke" / "notebooks" / "00_environment_check.ipynb").is_file()
    error_name = str(failed.value).split("): ", 1)[1].split(":", 1)[0]  # "… (execution count 3): OSError: …"
    page = (tmp_path / "smoke" / "html" / "00_environment_check.html").read_text(encoding="utf-8")
    assert error_name in page  # the page shows the traceback of the failing cell
