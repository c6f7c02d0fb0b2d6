"""Progress in batch runs: a few plain lines with rate and time left, never carriage-return redraws."""
from __future__ import annotations

import io
import os
import time

import pytest

from cqa_utils import frontend
from cqa_utils.progress import LineProgress, format_duration, line_mode, progress_bar


def lines_of(stream: io.StringIO) -> list[str]:
    text = stream.getvalue()
    assert "\r" not in text
    assert text.endswith("\n")
    return text.splitlines()


def test_line_progress_writes_a_first_line_one_per_tenth_and_a_last_line_with_the_total_time():
    out = io.StringIO()
    for _ in LineProgress(range(1000), desc="scoring base", unit="batch", min_gap=0, file=out):
        pass
    lines = lines_of(out)
    assert len(lines) == 11  # the first batch, 10 %, 20 %, … 90 %, then the final line instead of 100 %
    assert lines[0].startswith("scoring base: 1/1000 batch (0 %) · ")
    assert lines[1].startswith("scoring base: 100/1000 batch (10 %) · ")
    assert all("batch/s" in line and "left" in line for line in lines[:-1])
    assert lines[-1].startswith("scoring base: 1000/1000 batch in ")


def test_line_progress_waits_min_gap_between_lines():
    out = io.StringIO()
    for _ in LineProgress(range(1000), desc="fast", min_gap=3600, file=out):
        pass
    lines = lines_of(out)
    assert len(lines) == 2  # the first unit's line and the final one, when the whole run is shorter than the gap
    assert lines[0].startswith("fast: 1/1000 it") and lines[1].startswith("fast: 1000/1000 it in ")


def clock(seconds_per_reading: float, monkeypatch):
    """Make LineProgress's clock advance by ``seconds_per_reading`` at every reading: one per update."""
    from cqa_utils import progress

    ticks = (i * seconds_per_reading for i in range(10**6))
    monkeypatch.setattr(progress, "time", type("Clock", (), {"monotonic": staticmethod(lambda: next(ticks))}))


def test_the_first_line_comes_right_after_the_first_optimizer_step(monkeypatch):
    clock(20, monkeypatch)  # 20 s per step, so a tenth of 125 steps would take over four minutes
    out = io.StringIO()
    bar = LineProgress(total=125, desc="training", unit="step", file=out)
    bar.update()
    assert lines_of(out) == ["training: 1/125 step (1 %) · 20 s/step · 41 min 20 s left"]


@pytest.mark.parametrize("seconds_per_step", [0.5, 7, 25, 59])
def test_slow_work_is_never_silent_for_more_than_a_minute(monkeypatch, seconds_per_step):
    clock(seconds_per_step, monkeypatch)
    out = io.StringIO()
    for _ in LineProgress(range(400), desc="training", unit="step", file=out):  # a tenth: 40 steps
        pass
    done = [int(line.split(": ", 1)[1].split("/", 1)[0]) for line in lines_of(out)]  # steps done at each line
    seconds = [0, *(n * seconds_per_step for n in done)]  # each line's time; the clock reads n × step at step n
    assert max(b - a for a, b in zip(seconds, seconds[1:])) <= 60
    assert done[0] == 1 and done[-1] == 400


def test_an_update_slower_than_a_minute_writes_a_line_each_time(monkeypatch):
    clock(90, monkeypatch)
    out = io.StringIO()
    for _ in LineProgress(range(5), desc="training", unit="step", file=out):
        pass
    assert [line.split(" ·")[0].split(" in ")[0] for line in lines_of(out)] == [
        "training: 1/5 step (20 %)", "training: 2/5 step (40 %)", "training: 3/5 step (60 %)",
        "training: 4/5 step (80 %)", "training: 5/5 step"]


def test_a_resumed_run_counts_from_where_it_started_and_keeps_the_postfix():
    out = io.StringIO()
    bar = LineProgress(total=20, initial=15, desc="training", unit="step", min_gap=0, file=out)
    for _ in range(5):
        bar.set_postfix_str("epoch 5/5 · loss 1.234")
        bar.update()
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = lines_of(out)
    assert lines[0].startswith("training: 16/20 step (80 %)")
    assert lines[-1].startswith("training: 20/20 step in ") and lines[-1].endswith("· epoch 5/5 · loss 1.234")
    assert len(lines) == 3  # 80 %, 90 %, final


def test_disabled_line_progress_writes_nothing():
    out = io.StringIO()
    assert list(LineProgress(range(5), disable=True, file=out)) == [0, 1, 2, 3, 4]
    assert out.getvalue() == ""


def test_batch_runs_report_lines_and_the_batch_environment_is_restored(monkeypatch):
    monkeypatch.delenv(frontend.BATCH_VAR, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    with frontend.batch_environment():
        assert frontend.batch_run() and line_mode() and not frontend.interactive_notebook()
        assert isinstance(progress_bar(range(3)), LineProgress)
    assert frontend.BATCH_VAR not in os.environ
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"


def test_a_bad_batch_value_names_the_variable_and_the_accepted_values(monkeypatch):
    monkeypatch.setenv(frontend.BATCH_VAR, "yes")
    with pytest.raises(ValueError, match=r"CQA_BATCH='yes'; accepted values: 1"):
        frontend.batch_run()


def test_a_terminal_gets_tqdms_bar(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.delenv(frontend.BATCH_VAR, raising=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    bar = progress_bar(range(3), disable=True)
    assert isinstance(bar, tqdm)


def test_slow_work_reads_as_seconds_per_unit(monkeypatch):
    from cqa_utils import progress

    ticks = iter(range(0, 10_000, 115))  # each clock reading is one 115-second step later
    monkeypatch.setattr(progress, "time", type("Clock", (), {"monotonic": staticmethod(lambda: next(ticks))}))
    out = io.StringIO()
    for _ in LineProgress(range(4), desc="training", unit="step", file=out):
        pass
    lines = lines_of(out)
    assert lines[0] == "training: 1/4 step (25 %) · 115 s/step · 5 min 45 s left"
    assert lines[-1] == "training: 4/4 step in 9 min 35 s (144 s/step)"  # close() reads the clock once more


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (42, "42 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_durations_read_as_seconds_minutes_or_hours(seconds, text):
    assert format_duration(seconds) == text


def test_a_note_is_a_line_of_its_own_and_the_first_step_still_gets_its_line(monkeypatch):
    clock(20, monkeypatch)
    out = io.StringIO()
    bar = LineProgress(total=125, desc="training", unit="step", file=out)
    bar.note("125 optimizer steps over 5 epochs")
    bar.update()
    assert lines_of(out) == ["training: 125 optimizer steps over 5 epochs",  # the note read the clock: 40 s at step 1
                             "training: 1/125 step (1 %) · 40 s/step · 1 h 22 min left"]


def test_a_unit_longer_than_the_silence_limit_gets_still_working_lines_until_it_ends():
    """Real time, shrunk: a 0.2 s limit stands for the minute, and the step outlasts two of them."""
    out = io.StringIO()
    bar = LineProgress(total=2, desc="training", unit="step", max_silence=0.2, heartbeat=True, file=out)
    bar.update()
    deadline = time.monotonic() + 10  # a busy machine may fire the timers late, never not at all
    while len(out.getvalue().splitlines()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    heartbeats = out.getvalue().splitlines()[1:3]
    assert len(heartbeats) == 2 and all(h.startswith("training: still on step 2/2 · ") for h in heartbeats)
    bar.update()
    bar.close()
    time.sleep(0.3)  # no line after close
    assert out.getvalue().splitlines()[-1].startswith("training: 2/2 step in ")
