"""cqa publish: compact outputs in the run's own layout, a manifest of hashes, no weights."""
import json

import pytest

from cqa_utils import runs
from cqa_utils.config import load_config
from cqa_utils.publish import publish_manifest, publish_run, verify_published


def finished_run(tmp_path):
    cfg = load_config("smoke", {"run.results_dir": str(tmp_path / "results"), "run.name": "r"})
    stage = runs.open_stage(cfg, "02")
    (stage.path / "epoch-1").mkdir()
    (stage.path / "epoch-1" / "adapter_model.safetensors").write_bytes(b"\0" * 1000)
    log = runs.write_text(stage.file("train_log.csv"), "step,loss\n1,4.0\n")
    stage.finish({"train_log": log, "adapter_epoch_1": stage.path / "epoch-1"})
    stage = runs.open_stage(cfg, "03")
    scores = runs.write_text(stage.file("scores.csv"), "item_id,delta_i\na,1.5\n")
    big = stage.file("tokens.parquet")
    big.write_bytes(b"x" * 3 * 2**20)
    stage.finish({"scores": scores, "tokens": big})
    return cfg


def test_publish_copies_the_compact_outputs_and_records_their_hashes(tmp_path):
    cfg = finished_run(tmp_path)
    dest = publish_run(cfg, tmp_path / "reference", max_file_mb=2)
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {f"{s}/{f}" for s in ("02_finetune", "03_logprobs")
                                      for f in ("DONE", "config.yaml", "environment.json")} | {
        "02_finetune/train_log.csv", "03_logprobs/scores.csv"}
    assert manifest["left_out"] == ["02_finetune/epoch-1/adapter_model.safetensors (model weights or checkpoint)",
                                    "03_logprobs/tokens.parquet (3.0 MB > 2 MB)"]
    assert len(manifest["model_weights_sha256"]) == 64
    assert verify_published(dest) == []
    (dest / "03_logprobs" / "scores.csv").write_text("item_id,delta_i\na,9.9\n")
    assert verify_published(dest) == ["03_logprobs/scores.csv"]


def test_a_published_run_reads_like_a_fresh_one(tmp_path):
    cfg = finished_run(tmp_path)
    publish_run(cfg, tmp_path / "reference")
    published = load_config("smoke", {"run.results_dir": str(tmp_path / "reference"), "run.name": "r"})
    assert runs.stage_outputs(published, "03")["scores"].read_text() == "item_id,delta_i\na,1.5\n"
    stage = runs.open_stage(published, "03")        # finished: skipped, nothing recomputed
    assert stage.skipped


def test_publishing_needs_a_finished_stage_and_an_unlocked_run(tmp_path):
    cfg = load_config("smoke", {"run.results_dir": str(tmp_path / "results"), "run.name": "empty"})
    with pytest.raises(FileNotFoundError, match="no finished stage to publish"):
        publish_run(cfg, tmp_path / "reference")


def test_a_grid_manifest_is_published_with_paths_into_reference(tmp_path):
    manifest = runs.write_json(tmp_path / "sweep.json", {"grid": "g", "runs": [
        {"name": "g-a", "path": "/x/g-a", "status": "done"}, {"name": "g-b", "path": "/x/g-b", "status": "running"}]})
    out = publish_manifest(manifest, tmp_path / "reference")
    assert out == tmp_path / "reference" / "sweeps" / "g.json"
    published = json.loads(out.read_text())["runs"]
    assert [(r["path"], r["status"]) for r in published] == [("reference/g-a", "done"), (None, "pending")]


def test_a_published_grid_carries_notebook_06_naming_the_published_manifest(tmp_path):
    manifest = runs.write_json(tmp_path / "results" / "sweeps" / "g" / "sweep.json", {"grid": "g", "runs": [
        {"name": "g-a", "path": "/x/g-a", "status": "done"}]})
    robustness = manifest.parent / "06_robustness"
    runs.write_json(robustness / "robustness.json", {"grid": "g", "manifest": "results/sweeps/g/sweep.json"})
    (robustness / "arms.csv").write_text("arm,seed\ncot,1\n")
    publish_manifest(manifest, tmp_path / "reference")
    published = tmp_path / "reference" / "sweeps" / "g" / "06_robustness"
    assert sorted(p.name for p in published.iterdir()) == ["arms.csv", "robustness.json"]
    assert json.loads((published / "robustness.json").read_text())["manifest"] == "reference/sweeps/g.json"
    assert (published / "arms.csv").read_text() == "arm,seed\ncot,1\n"
