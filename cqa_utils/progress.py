"""Progress reports that suit where the code runs: widget bars in Jupyter, plain lines in batch.

tqdm's text bar redraws itself with carriage returns. A terminal shows one moving line, but
a log file, and an executed notebook, keep every redraw: one output per update. So:

- in a Jupyter kernel or a terminal, a tqdm bar (``tqdm.auto``: ipywidgets in JupyterLab);
- in a batch run (``cqa run`` marks its notebook kernels, see :mod:`cqa_utils.frontend`)
  or when stderr is not a terminal, :class:`LineProgress`: one plain line per tenth of the
  work, with rate and time left, and a last line with the total time — a handful of lines
  that read the same in a log file, a terminal and a notebook.

Used by the scoring loop (:func:`cqa_utils.scoring.score_requests`, notebooks 00 and 03) and
the training callback (:mod:`cqa_utils.training`, notebook 02); the pipeline forwards the lines.
"""
from __future__ import annotations

import sys
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
        return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable)
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
    """Progress as a few plain lines: at each ``1/steps`` of the total (at most one line per
    ``min_gap`` seconds), after ``max_silence`` seconds without one, and at the end.

    The subset of tqdm's interface this project uses: iterate, ``update``, ``set_postfix_str``,
    ``close``, ``n``. Rate and time left count only the work done since it started (``initial``
    is where a resumed run begins).

    Example line: ``scoring base: 6/12 batch (50 %) · 1.9 batch/s · 3 s left``.
    """

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False, steps: int = 10,
                 min_gap: float = 5.0, max_silence: float = 60.0, file=None):
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n = self.initial = initial
        self.steps, self.min_gap, self.max_silence = steps, min_gap, max_silence
        self.file, self.postfix, self.closed = file, "", False
        self.started = self.last_line = time.monotonic()
        self.step = self._step()  # the last 1/steps boundary passed

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

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable or self.closed:
            return
        now, step = time.monotonic(), self._step()
        unfinished = not self.total or self.n < self.total  # the last line is close()'s
        if unfinished and ((step > self.step and now - self.last_line >= self.min_gap)
                           or now - self.last_line >= self.max_silence):
            self._write(self._status(now))
            self.last_line = now
        self.step = step

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.disable:
            elapsed = time.monotonic() - self.started
            done = f"{self.n}/{self.total}" if self.total else str(self.n)
            self._write(f"{self.desc}: {done} {self.unit} in {format_duration(elapsed)} "
                        f"({self._speed(self._rate(elapsed))}){self._tail()}")

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
