"""cqa sweep: grid files are checked before anything runs; finished runs are skipped."""
import json

import pytest
import yaml

from cqa_utils import runs
from cqa_utils.config import load_config
from cqa_utils.sweep import finished, load_grid, publish_finished, run_config, run_sweep


def grid_file(tmp_path, **spec):
    spec = {"config": "smoke", "name": "g", "set": {"run.results_dir": str(tmp_path / "results")},
            "grid": {"train.arm": ["cot", "shuffled_cot"], "run.seed": [1, 2]}} | spec
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_grid_expands_blocks_into_named_runs(tmp_path):
    grid = load_grid(grid_file(tmp_path, run_name="{train.arm}-s{run.seed}", grid=[
        {"train.arm": ["cot", "shuffled_cot"], "run.seed": [1, 2]}, {"train.arm": ["passage_lm"], "run.seed": [1]}]))
    assert [r.name for r in grid.runs] == ["g-cot-s1", "g-cot-s2", "g-shuffled_cot-s1", "g-shuffled_cot-s2",
                                           "g-passage_lm-s1"]
    cfg = run_config(grid, grid.runs[2])
    assert (cfg.train.arm, cfg.run.seed, cfg.run.name) == ("shuffled_cot", 1, "g-shuffled_cot-s1")


@pytest.mark.parametrize("spec,message", [
    ({"grids": {}}, r"unknown key 'grids'; did you mean 'grid'\?"),
    ({"grid": {"train.lerning_rate": [1e-4]}}, r"run g-0.0001: overrides: unknown key train.lerning_rate"),
    ({"grid": {"train.arm": ["cot", "cot_shuffled"]}}, r"run g-cot_shuffled: .*train.arm"),
    ({"grid": [{"run.seed": [1]}, {"run.seed": [1]}]}, r"runs g-1 and g-1 have the same settings"),
    ({"grid": {"train.arm": "cot"}}, r"grid\[0\].train.arm must be a non-empty list"),
    ({"run_name": "{train.arm}", "grid": {"train.arm": ["cot"], "run.seed": [1, 2]}}, r"have the same name"),
])
def test_a_bad_grid_is_refused_before_anything_starts(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        load_grid(grid_file(tmp_path, **spec))


def test_an_existing_run_made_with_other_settings_is_refused(tmp_path):
    path = grid_file(tmp_path)
    grid = load_grid(path)
    other = load_config("smoke", {**grid.runs[0].overrides, "run.name": grid.runs[0].name, "train.epochs": 9})
    runs.open_stage(other, "02")               # a stage directory written with train.epochs 9
    with pytest.raises(ValueError, match=r"02_finetune exists with a different config \(train.epochs\)"):
        run_sweep(path, dry_run=True)


def test_a_dry_run_writes_the_manifest_and_runs_nothing(tmp_path):
    manifest = run_sweep(grid_file(tmp_path), dry_run=True)
    data = json.loads(manifest.read_text())
    assert data["grid"] == "g" and [r["status"] for r in data["runs"]] == ["pending"] * 4
    assert not finished(load_grid(grid_file(tmp_path)), load_grid(grid_file(tmp_path)).runs[0])


def test_a_published_run_counts_as_finished_so_a_grid_resumes_in_a_fresh_clone(tmp_path, monkeypatch):
    from cqa_utils import publish

    monkeypatch.setattr(publish, "REFERENCE_DIR", tmp_path / "reference")
    path = grid_file(tmp_path, stages="04")
    grid = load_grid(path)
    cfg = run_config(grid, grid.runs[1])
    stage = runs.open_stage(cfg, "04")
    stage.finish({"stats": runs.write_text(stage.file("stats.csv"), "x\n1\n")})
    publish.publish_run(cfg, publish.REFERENCE_DIR)
    import shutil
    shutil.rmtree(runs.run_dir(cfg))                         # a fresh clone: results/ is empty
    assert [finished(grid, r) for r in grid.runs] == [False, True, False, False]
    data = json.loads(run_sweep(path, dry_run=True).read_text())
    assert data["runs"][1]["status"] == "done" and data["runs"][1]["path"].endswith("reference/g-cot-2")


def test_publishing_a_grid_keeps_its_wall_times_for_a_fresh_clone(tmp_path, monkeypatch):
    import shutil

    from cqa_utils import publish

    monkeypatch.setattr(publish, "REFERENCE_DIR", tmp_path / "reference")
    path = grid_file(tmp_path, stages="04")
    grid = load_grid(path)
    for run in grid.runs[:2]:
        stage = runs.open_stage(run_config(grid, run), "04")
        stage.finish({"stats": runs.write_text(stage.file("stats.csv"), "x\n1\n")})
    manifest = run_sweep(path, dry_run=True)
    data = json.loads(manifest.read_text())
    data["runs"][0]["wall_s"], data["runs"][1]["wall_s"] = 3000.0, 3100.0   # as a real sweep records them
    data["runs"][1]["resumed"] = True
    manifest.write_text(json.dumps(data))
    publish_finished(grid)
    assert sorted(p.name for p in publish.REFERENCE_DIR.iterdir()) == ["g-cot-1", "g-cot-2", "sweeps"]
    shutil.rmtree(tmp_path / "results")                       # a fresh clone: only reference/ is left
    data = json.loads(run_sweep(path, dry_run=True).read_text())
    assert [r["wall_s"] for r in data["runs"]] == [3000.0, 3100.0, None, None]
    assert [r["resumed"] for r in data["runs"]] == [False, True, False, False]
    assert [r["status"] for r in data["runs"]] == ["done", "done", "pending", "pending"]
    published = json.loads(publish_finished(grid).read_text())  # nothing here to copy; the manifest still is
    assert published["runs"][0]["path"] == "reference/g-cot-1"
    shutil.rmtree(tmp_path / "results")                       # no dry run: notebook 06 alone on the published runs
    runs.write_json(tmp_path / "results" / "sweeps" / "g" / "06_robustness" / "robustness.json", {"verdict": "v"})
    assert json.loads(publish_finished(grid).read_text()) == published
    copied = json.loads((publish.REFERENCE_DIR / "sweeps" / "g" / "06_robustness" / "robustness.json").read_text())
    assert copied == {"verdict": "v", "manifest": "reference/sweeps/g.json"}
    shutil.rmtree(publish.REFERENCE_DIR / "sweeps")
    with pytest.raises(FileNotFoundError, match="grid 'g' has no manifest"):
        publish_finished(grid)


def test_a_published_run_is_copied_again_only_when_its_files_changed(tmp_path, monkeypatch):
    from cqa_utils import publish

    monkeypatch.setattr(publish, "REFERENCE_DIR", tmp_path / "reference")
    grid = load_grid(grid_file(tmp_path, stages="04"))
    cfg = run_config(grid, grid.runs[0])
    stage = runs.open_stage(cfg, "04")
    stage.finish({"stats": runs.write_text(stage.file("stats.csv"), "x\n1\n")})
    run_sweep(grid_file(tmp_path, stages="04"), dry_run=True)
    publish_finished(grid)
    manifest = publish.REFERENCE_DIR / cfg.run.name / "MANIFEST.json"
    first = manifest.read_text()
    monkeypatch.setattr(publish, "git_commit", lambda: "a later commit")
    publish_finished(grid)                                   # unchanged: the first copy's provenance stays
    assert manifest.read_text() == first
    runs.write_text(stage.file("stats.csv"), "x\n2\n")     # a stage redone: published again
    publish_finished(grid)
    assert json.loads(manifest.read_text())["git_commit"] == "a later commit"
    assert (publish.REFERENCE_DIR / cfg.run.name / "04_stats" / "stats.csv").read_text() == "x\n2\n"


@pytest.mark.slow
def test_the_smoke_grid_runs_then_resumes_a_killed_run_and_feeds_notebook_06(tmp_path, monkeypatch):
    """CI's grid: 2 arms × 2 seeds, tiny, through cqa sweep and notebook 06 (real training and scoring)."""
    from cqa_utils import publish

    monkeypatch.setattr(publish, "REFERENCE_DIR", tmp_path / "reference")
    spec = yaml.safe_load(open("configs/sweeps/smoke.yaml"))
    spec["set"]["run.results_dir"] = str(tmp_path / "results")
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    manifest = json.loads(run_sweep(path).read_text())
    assert [r["status"] for r in manifest["runs"]] == ["done"] * 4 and all(r["wall_s"] for r in manifest["runs"])
    grid = load_grid(path)
    later = [json.loads((runs.stage_dir(run_config(grid, r), "03") / "DONE").read_text())["summary"]
             for r in grid.runs[1:]]
    assert all(s["cached_base_requests"] > 0 for s in later)     # the base model was scored once
    report = json.loads((tmp_path / "results" / "sweeps" / "smoke-grid" / "06_robustness" / "robustness.json").read_text())
    assert report["seeds_per_arm"] == {"cot": 2, "shuffled_cot": 2} and report["verdict"]
    # a run killed in stage 04: its DONE marker is gone; the rerun redoes that stage only
    victim = runs.stage_dir(run_config(grid, grid.runs[2]), "04")
    (victim / "DONE").unlink()
    assert [finished(grid, r) for r in grid.runs] == [True, True, False, True]
    resumed = json.loads(run_sweep(path, publish_each=True).read_text())
    assert (victim / "DONE").is_file()
    published = json.loads((tmp_path / "reference" / "sweeps" / "smoke-grid" / "06_robustness"
                            / "robustness.json").read_text())  # notebook 06 ran after the resumed run
    assert published["manifest"] == "reference/sweeps/smoke-grid.json" and published["seeds_per_arm"]["cot"] == 2
    assert all((tmp_path / "reference" / r.name / "MANIFEST.json").is_file() for r in grid.runs)
    assert [r["resumed"] for r in resumed["runs"]] == [False, False, True, False]  # its time is one session's
    assert runs.is_done(runs.stage_dir(run_config(grid, grid.runs[2]), "02"))
