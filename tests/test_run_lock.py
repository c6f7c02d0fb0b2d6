"""One writer per run: a second writer fails at once naming the holder; stale locks clear."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from cqa_utils.run_lock import LOCK_NAME, PARENT_ENV, RunLocked, run_lock

HOLD = textwrap.dedent("""
    import sys, time
    from cqa_utils.run_lock import run_lock
    with run_lock(sys.argv[1], "test holder"):
        print("held", flush=True)
        time.sleep(60)
""")


def _holder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(RunLocked, match=rf"being written by pid {proc.pid} on {socket.gethostname()} "
                                            rf"since .*\(test holder: "):
            with run_lock(tmp_path, "second"):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_left_by_a_killed_process_is_cleared_with_a_message(tmp_path, capsys):
    proc = _holder(tmp_path)
    proc.kill()                                   # SIGKILL: no chance to release
    proc.wait()
    assert (tmp_path / LOCK_NAME).exists()
    with run_lock(tmp_path, "after the kill"):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"clearing a stale lock on {tmp_path}: pid {proc.pid}" in capsys.readouterr().out
    assert not (tmp_path / LOCK_NAME).exists()    # released at the end of the block


def test_the_lock_is_reentrant_and_released_on_error(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with run_lock(tmp_path, "outer"):
            with run_lock(tmp_path, "inner"):     # the same process: no self-deadlock
                assert (tmp_path / LOCK_NAME).exists()
            assert (tmp_path / LOCK_NAME).exists()  # still held by the outer block
            1 / 0
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_kernel_of_the_holding_cqa_run_and_other_ranks_write_under_it(tmp_path, monkeypatch):
    proc = _holder(tmp_path)
    try:
        monkeypatch.setenv(PARENT_ENV, str(proc.pid))
        with run_lock(tmp_path, "kernel"):
            pass
        monkeypatch.delenv(PARENT_ENV)
        monkeypatch.setenv("RANK", "1")
        with run_lock(tmp_path, "rank 1"):
            pass
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == proc.pid  # untouched
    finally:
        proc.kill()
        proc.wait()
