"""One writer per run: ``results/<run>/.lock`` is held while a stage writes to the run.

Two writers on one run directory (a sweep on a multi-GPU box, two terminals, a notebook
open in JupyterLab on the batch run's name) would interleave files that each trusts. Every
stage runner is wrapped in :func:`locked`: a second writer fails at once, naming the holder
(pid, host, start time, what it runs); a lock left by a killed process on this host is
detected (its pid is gone), cleared with a message, and taken. The lock is re-entrant
within one process, a notebook kernel started by the ``cqa run`` holding the lock writes
under it (``CQA_RUN_LOCK_PARENT``), and only rank 0 of a multi-process job (``RANK`` set by torchrun or
accelerate) takes it, so the ranks of one training job are one writer. Written here
because ``filelock`` cannot name the holder or tell a stale lock from a live one.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .runs import is_published, is_rank_zero, run_dir

LOCK_NAME = ".lock"
PARENT_ENV = "CQA_RUN_LOCK_PARENT"  # pid of a `cqa run` holding the lock for the kernels it starts
_held: dict[Path, int] = {}  # lock path -> nesting depth in this process


class RunLocked(RuntimeError):
    """The run directory is held by another live writer."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _stale(holder: dict) -> bool:
    """A lock whose writer is gone: same host and its pid no longer runs (or unreadable)."""
    if not holder:
        return True
    return holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1)))


def _acquire(path: Path, what: str) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(sys.argv)[:300]}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if not _stale(holder):
                raise RunLocked(
                    f"{path.parent} is being written by pid {holder.get('pid')} on {holder.get('host')} "
                    f"since {holder.get('started')} ({holder.get('what')}: {holder.get('command')}). "
                    f"Wait for it to finish, or write to another run (--run NAME). If that process is "
                    f"gone and on another host, delete {path}.") from None
            print(f"[lock] clearing a stale lock on {path.parent}: pid {holder.get('pid')} "
                  f"({holder.get('what')}, since {holder.get('started')}) is no longer running")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        return
    raise RunLocked(f"{path}: another writer took the lock while a stale one was cleared")


@contextlib.contextmanager
def run_lock(run_path: Path, what: str) -> Iterator[None]:
    """Hold ``<run_path>/.lock`` for the block (no-op on ranks > 0 of a multi-process job)."""
    path = (Path(run_path) / LOCK_NAME).resolve()
    if not is_rank_zero() or is_published(path):  # published runs are never written: no lock
        yield
        return
    if str(_holder(path).get("pid")) == os.environ.get(PARENT_ENV):
        yield  # a notebook kernel of the `cqa run` that holds this run
        return
    if path not in _held:
        path.parent.mkdir(parents=True, exist_ok=True)
        _acquire(path, what)
    _held[path] = _held.get(path, 0) + 1
    try:
        yield
    finally:
        _held[path] -= 1
        if not _held[path]:
            del _held[path]
            if _holder(path).get("pid") == os.getpid():
                path.unlink(missing_ok=True)


def locked(runner):
    """Decorate a stage runner ``run_<stage>(cfg, ...)`` so it holds its run's lock."""
    @functools.wraps(runner)
    def wrapper(cfg, *args, **kwargs):
        with run_lock(run_dir(cfg), runner.__name__):
            return runner(cfg, *args, **kwargs)
    return wrapper
