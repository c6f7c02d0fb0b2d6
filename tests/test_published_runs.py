"""Published runs are read-only to the pipeline, and a user's run can be set beside one (``cqa compare``)."""
import shutil

import pandas as pd
import pytest

from cqa_utils import runs
from cqa_utils.cli import main
from cqa_utils.compare import compare_runs, comparison_text, write_comparison
from cqa_utils.config import load_config
from cqa_utils.runs import REFERENCE_DIR

PUBLISHED = REFERENCE_DIR / "default"


def published_files():
    return {p: p.read_bytes() for p in PUBLISHED.rglob("*") if p.is_file()}


@pytest.fixture
def untouched():
    """The published run's bytes before the test; the test fails if any changed or a file appeared."""
    before = published_files()
    yield
    assert published_files() == before


def test_forcing_a_stage_of_a_published_run_is_refused_with_how_to_copy_it(untouched):
    cfg = load_config("default", {"run.results_dir": "reference", "run.name": "default"})
    with pytest.raises(PermissionError, match=r"cp -r reference/default results/default"):
        runs.open_stage(cfg, "04", force=True)


def test_reading_a_published_run_skips_its_stages_and_writes_nothing(untouched):
    cfg = load_config("default", {"run.results_dir": "reference", "run.name": "default"})
    assert runs.open_stage(cfg, "04").skipped
    from cqa_utils.run_lock import run_lock

    with run_lock(runs.run_dir(cfg), "a reader"):  # no lock file is written into a published run
        assert not (PUBLISHED / ".lock").exists()


def test_running_the_pipeline_into_a_published_run_is_refused(untouched):
    from cqa_utils.pipeline import run_pipeline

    with pytest.raises(PermissionError, match="executed notebooks"):
        run_pipeline("default", "default", only="04", overrides={"run.results_dir": "reference"})


def test_notebook_06_may_not_write_beside_the_published_grid():
    from cqa_utils.robustness import output_dir

    with pytest.raises(PermissionError, match="leave results_dir at 'results'"):
        output_dir("controls", results_dir="reference")
    assert output_dir("controls").parts[-3:] == ("sweeps", "controls", "06_robustness")


def copy_of_published(tmp_path, name="default"):
    run = tmp_path / "results" / name
    shutil.copytree(PUBLISHED, run)
    return run


def test_a_run_compared_with_itself_is_identical_everywhere(tmp_path):
    result = compare_runs(copy_of_published(tmp_path), PUBLISHED)
    assert (result["spread"]["identical"] == result["spread"]["n"]).all()
    assert (result["spread"]["max_abs_difference"] == 0).all()
    assert result["items"]["difference"].abs().max() == 0
    row = result["verdicts"].loc["primary endpoint"]
    assert row["run"] == row["published"]
    assert (result["kind"], result["epoch"]) == ("specific", 5)


def test_a_trained_score_that_moved_shows_first_and_base_scores_stay_identical(tmp_path):
    run = copy_of_published(tmp_path)
    scores = pd.read_csv(run / "03_logprobs" / "scores.csv")
    item = scores.loc[scores.group == "literary", "item_id"].iloc[-1]
    moved = (scores.item_id == item) & (scores.variant == "x") & (scores.epoch == 5)
    scores.loc[moved, "delta_i_specific"] += 0.25
    scores.to_csv(run / "03_logprobs" / "scores.csv", index=False)
    result = compare_runs(run, PUBLISHED)
    top = result["items"].iloc[0]
    assert (top.item_id, round(top.difference, 9)) == (item, 0.25)
    spread = result["spread"].set_index(["scores", "quantity"])
    assert spread.loc[("base model", "delta_i_specific"), "max_abs_difference"] == 0
    assert spread.loc[("trained epochs", "delta_i_specific"), "max_abs_difference"] == pytest.approx(0.25)
    assert item in comparison_text(result)
    written = write_comparison(result, tmp_path / "out")
    assert [p.name for p in written] == ["compare.csv", "compare.json"]


def test_runs_that_scored_different_items_are_an_error_naming_one(tmp_path):
    run = copy_of_published(tmp_path)
    scores = pd.read_csv(run / "03_logprobs" / "scores.csv")
    dropped = scores.loc[scores.group == "factual", "item_id"].iloc[0]
    scores[scores.item_id != dropped].to_csv(run / "03_logprobs" / "scores.csv", index=False)
    with pytest.raises(ValueError, match=rf"only the published run scored \(item '{dropped}'"):
        compare_runs(run, PUBLISHED)


def test_cqa_compare_prints_both_verdicts_and_names_a_missing_stage(tmp_path, capsys):
    run = copy_of_published(tmp_path)
    assert main(["compare", str(run), "--to", str(PUBLISHED)]) == 0
    out = capsys.readouterr().out
    assert "Verdicts side by side" in out and out.count("The primary endpoint") == 2
    shutil.rmtree(run / "04_stats")
    assert main(["compare", str(run), "--to", str(PUBLISHED)]) == 1
    assert "finish stage 04" in capsys.readouterr().err


def test_report_into_the_run_leaves_the_project_readme_and_figures_as_published(tmp_path, untouched, agg_backend):
    from cqa_utils.config import PROJECT_ROOT
    from cqa_utils.report import report_into_run

    readme, figures = PROJECT_ROOT / "README.md", PROJECT_ROOT / "figures"
    before = readme.read_bytes(), {p.name: p.read_bytes() for p in figures.iterdir()}
    stats = copy_of_published(tmp_path, "mine") / "04_stats" / "stats.json"
    stats.write_text(stats.read_text(encoding="utf-8").replace('"name": "default"', '"name": "mine"'), encoding="utf-8")
    cfg = load_config("default", {"run.results_dir": str(tmp_path / "results"), "run.name": "mine"})
    out = report_into_run(cfg)
    assert (readme.read_bytes(), {p.name: p.read_bytes() for p in figures.iterdir()}) == before
    assert "Run `mine`" in (out / "README.md").read_text(encoding="utf-8")
    assert (out / "figures" / "fig_c_paired_delta_i.png").is_file()


def test_a_recorded_reproduction_fills_the_readme_table(tmp_path):
    from cqa_utils.compare import BEGIN, END, record_reproduction, update_readme_reproductions

    run = copy_of_published(tmp_path)
    env = run / "02_finetune" / "environment.json"
    env.write_text(env.read_text(encoding="utf-8").replace('"train_dtype": "bfloat16"', '"train_dtype": "float32"'),
                   encoding="utf-8")
    record_reproduction(compare_runs(run, PUBLISHED), "copy", tmp_path / "records")
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\n{BEGIN}\n{END}\n", encoding="utf-8")
    update_readme_reproductions(readme, tmp_path / "records")
    row = readme.read_text(encoding="utf-8").splitlines()[5]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["copy", "AVX512 · float32", "AVX512 · bfloat16"]  # the published run's CPU, as recorded
    identical, of_n = cells[3].split(" of ")
    assert identical == of_n and cells[4:7] == ["0", "0", "0"] and cells[-1] == "yes"


def test_base_scores_of_cqa_score_compare_with_the_published_base_model(tmp_path):
    from cqa_utils.compare import record_reproduction, reproductions_markdown

    scored = tmp_path / "scored"
    scored.mkdir()
    scores = pd.read_csv(PUBLISHED / "03_logprobs" / "scores.csv")
    scores[scores.epoch == 0].to_csv(scored / "scores.csv", index=False)
    shutil.copy(PUBLISHED / "03_logprobs" / "environment.json", scored / "environment.json")
    result = compare_runs(scored, PUBLISHED)
    assert set(result["scores"]["epoch"]) == {0} and result["items"].empty
    assert (result["verdicts"]["run"] == "–").all()
    row = reproductions_markdown([__import__("json").loads(record_reproduction(result, "base", tmp_path).read_text())])
    assert "| base | " in row and "· none |" in row and "| – / " in row
