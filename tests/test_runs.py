import json
import os

import pytest

from cqa_utils.config import load_config
from cqa_utils.runs import atomic_dir, inside, open_stage, require_done, write_text


@pytest.fixture
def cfg(tmp_path):
    return load_config("smoke", {"run.results_dir": str(tmp_path), "run.name": "t"})


def test_stage_writes_config_environment_and_done_last(cfg):
    stage = open_stage(cfg, "04")
    assert (stage.path / "config.yaml").is_file() and (stage.path / "environment.json").is_file()
    assert not (stage.path / "DONE").exists()
    out = write_text(stage.file("a.txt"), "x")
    assert stage.finish({"a": out}) == {"a": out}
    assert json.loads((stage.path / "DONE").read_text())["outputs"] == {"a": "a.txt"}
    env = json.loads((stage.path / "environment.json").read_text())
    assert env["seeds"]["run"] == cfg.run.seed and "torch" in env["packages"]
    assert env["stage_seconds"] >= 0 and env["peak_rss_gib"] > 0


def test_only_rank_zero_of_a_multi_process_job_writes_the_stage_record(cfg, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    stage = open_stage(cfg, "00")
    assert stage.path.is_dir() and not any(stage.path.iterdir())
    monkeypatch.setenv("RANK", "0")
    assert {p.name for p in open_stage(cfg, "00").path.iterdir()} == {"config.yaml", "environment.json"}


def test_the_stage_record_holds_the_peak_memory_in_gib(cfg):
    stage = open_stage(cfg, "04")
    held = bytearray(512 * 2 ** 20)  # 0.5 GiB, touched page by page so it is resident
    for offset in range(0, len(held), 4096):
        held[offset] = 1
    stage.finish({"a": write_text(stage.file("a.txt"), "x")})
    assert json.loads((stage.path / "environment.json").read_text())["peak_rss_gib"] >= 0.5


def test_finished_stage_is_skipped_unless_forced(cfg):
    stage = open_stage(cfg, "04")
    stage.finish({"a": write_text(stage.file("a.txt"), "x")})
    again = open_stage(cfg, "04")
    assert again.skipped and again.outputs() == {"a": stage.path / "a.txt"}
    forced = open_stage(cfg, "04", force=True)
    assert not forced.skipped and not (forced.path / "DONE").exists()


def test_later_stage_refuses_an_unfinished_earlier_stage(cfg):
    open_stage(cfg, "02")  # started, never finished
    with pytest.raises(FileNotFoundError, match="no DONE marker"):
        require_done(cfg, "02")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        require_done(cfg, "03")


def test_failed_atomic_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        from cqa_utils.runs import atomic_path

        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert not target.exists() and os.listdir(tmp_path) == []


def test_failed_atomic_dir_keeps_the_previous_version(tmp_path):
    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "w").write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "w").write_text("half")
            raise RuntimeError("crash")
    assert (target / "w").read_text() == "good"
    assert sorted(os.listdir(tmp_path)) == ["adapter"]


def test_paths_cannot_escape_the_stage(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        inside(tmp_path, "../x")
    with pytest.raises(ValueError, match="escapes"):
        inside(tmp_path, "/etc/passwd")
