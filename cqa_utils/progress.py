"""Progress reports that suit where the code runs: widget bars in Jupyter, plain lines in batch.

tqdm's text bar redraws itself with carriage returns. A terminal shows one moving line, but
a log file, and an executed notebook, keep every redraw: one output per update. So:

- in a Jupyter kernel or a terminal, a tqdm bar (``tqdm.auto``: ipywidgets in JupyterLab);
- in a batch run (``cqa run`` marks its notebook kernels, see :mod:`cqa_utils.frontend`)
  or when stderr is not a terminal, :class:`LineProgress`: one plain line after the first unit
  of work (the first optimizer step, the first batch), then one per tenth of the work and never
  more than a minute apart (where one unit alone takes longer, a "still on step n" line from a
  timer), each with rate and time left, and a last line with the total time — a few lines that
  read the same in a log file, a terminal and a notebook.

Used by the scoring loop (:func:`cqa_utils.scoring.score_requests`, notebooks 00 and 03) and
the training callback (:mod:`cqa_utils.training`, notebook 02); the pipeline forwards the lines.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Iterable

from .frontend import batch_run, in_jupyter_kernel


def line_mode() -> bool:
    """Whether progress is reported as plain lines (batch runs, logs) rather than redrawn bars."""
    return batch_run() or not (in_jupyter_kernel() or sys.stderr.isatty())


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, leave: bool = True):
    """A tqdm bar, or a :class:`LineProgress` in line mode; both iterate, ``update`` and ``close``."""
    if line_mode():
        return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, heartbeat=True)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave)


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``: how long something took or will take."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class LineProgress:
    """Progress as a few plain lines: after the first update, at each ``1/steps`` of the total (at
    most one line per ``min_gap`` seconds), before ``max_silence`` seconds pass without one, and at
    the end.

    A line is written at an update when waiting one more such update would end past ``max_silence``
    since the last line. Where one update alone takes longer than that (a slow optimizer step on a
    busy CPU), ``heartbeat=True`` has a timer write a "still on step n" line after ``max_silence`` of
    quiet, and again after each further ``max_silence``, until the next update or ``close``; its
    thread is a daemon, so it ends with the process.

    The subset of tqdm's interface this project uses: iterate, ``update``, ``set_postfix_str``,
    ``close``, ``n``. Rate and time left count only the work done since it started (``initial``
    is where a resumed run begins).

    Example line: ``scoring base: 6/12 batch (50 %) · 1.9 batch/s · 3 s left``.
    """

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False, steps: int = 10,
                 min_gap: float = 5.0, max_silence: float = 60.0, heartbeat: bool = False, file=None):
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n = self.initial = initial
        self.steps, self.min_gap, self.max_silence = steps, min_gap, max_silence
        self.file, self.postfix, self.closed, self.reported = file, "", False, False
        self.started = self.last_line = self.last_update = time.monotonic()
        self.step = self._step()  # the last 1/steps boundary passed
        self.heartbeat, self.timer = heartbeat, None
        self._arm(self.started)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix_str(self, postfix: str) -> None:
        self.postfix = postfix

    def note(self, text: str) -> None:
        """A line that is not a count, e.g. what is about to start: ``training: 125 optimizer steps …``."""
        if not (self.disable or self.closed):
            self._write(f"{self.desc}: {text}")
            self.last_line = time.monotonic()
            self._arm(self.last_line)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable or self.closed:
            return
        now, step = time.monotonic(), self._step()
        next_due = now - self.last_line + (now - self.last_update)  # silence at the next update, if it takes as long
        unfinished = not self.total or self.n < self.total  # the last line is close()'s
        if unfinished and (not self.reported or (step > self.step and now - self.last_line >= self.min_gap)
                           or next_due >= self.max_silence):
            self._write(self._status(now))
            self.last_line, self.reported = now, True
        self.step, self.last_update = step, now
        self._arm(now)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if not self.disable:
            elapsed = time.monotonic() - self.started
            done = f"{self.n}/{self.total}" if self.total else str(self.n)
            self._write(f"{self.desc}: {done} {self.unit} in {format_duration(elapsed)} "
                        f"({self._speed(self._rate(elapsed))}){self._tail()}")

    def _arm(self, now: float) -> None:
        """(Re)start the heartbeat timer: a line at ``max_silence`` after the last one, if no update comes first."""
        if self.timer is not None:
            self.timer.cancel()
        if not self.heartbeat or self.disable or self.closed or (self.total and self.n >= self.total):
            return
        self.timer = threading.Timer(self.max_silence - (now - self.last_line), self._still_working)
        self.timer.daemon = True
        self.timer.start()

    def _still_working(self) -> None:
        if self.closed:
            return
        now = time.monotonic()
        upcoming = f"{self.n + 1}/{self.total}" if self.total else str(self.n + 1)
        self._write(f"{self.desc}: still on {self.unit} {upcoming} · "
                    f"{format_duration(now - self.last_update)} into it{self._tail()}")
        self.last_line = now
        self._arm(now)

    def _step(self) -> int:
        return self.n * self.steps // self.total if self.total else 0

    def _rate(self, elapsed: float) -> float:
        return (self.n - self.initial) / elapsed if elapsed > 0 else 0.0

    def _status(self, now: float) -> str:
        rate = self._rate(now - self.started)
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f} %)"
                 if self.total else f"{self.desc}: {self.n} {self.unit}", self._speed(rate)]
        if self.total and rate > 0:
            parts.append(f"{format_duration((self.total - self.n) / rate)} left")
        return " · ".join(parts) + self._tail()

    def _speed(self, rate: float) -> str:
        """``"2.5 batch/s"``, or for slow work ``"115 s/step"`` (as tqdm does below one per second)."""
        return f"{rate:.3g} {self.unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.3g} s/{self.unit}"

    def _tail(self) -> str:
        return f" · {self.postfix}" if self.postfix else ""

    def _write(self, line: str) -> None:
        stream = self.file or sys.stderr  # looked up now: a notebook kernel replaces sys.stderr
        stream.write(line + "\n")
        stream.flush()
