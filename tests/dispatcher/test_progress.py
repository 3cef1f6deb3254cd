"""The --once progress bar's arithmetic and drawing (dispatcher/progress.py), by a clock the
test moves; tests/integration/test_progress_terminal.py shows it on a real terminal."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from dispatcher.progress import CLEAR, INTERVAL, WINDOW, Progress, format_eta, render


@pytest.mark.parametrize("seconds, shown", [
    (0, "0:00"), (0.4, "0:00"), (59.6, "1:00"), (61, "1:01"), (3599, "59:59"),
    (3600, "1:00:00"), (36000 + 62, "10:01:02"), (None, "--:--"), (-1, "--:--"),
    (float("nan"), "--:--"), (1e9, "--:--"),
])
def test_eta_format(seconds, shown):
    assert format_eta(seconds) == shown


def test_render_shows_count_rate_eta_and_in_flight():
    line = render(25_000, 50_000, 312.4, 5000, width=100)
    assert "25000/50000" in line and "312 msg/s" in line and "in flight 5000" in line
    assert "ETA 1:20" in line                   # 25,000 left at 312.4/s: 80 s
    bar = line[line.index("[") + 1:line.index("]")]
    assert bar.count("#") == bar.count(".") == len(bar) // 2


def test_render_finished_and_stalled():
    done = render(50, 50, 0.0, 0, width=80)
    assert "ETA 0:00" in done and "." not in done[done.index("["):done.index("]")]
    assert "ETA --:--" in render(10, 50, 0.0, 40, width=80)


@pytest.mark.parametrize("width", [0, 20, 45, 60, 80, 200])
def test_render_fits_the_width(width):
    line = render(123_456, 1_000_000, 9876.5, 5000, width=width)
    assert len(line) <= width
    if width >= 80:
        assert "[" in line and "123456/1000000" in line


def test_render_total_below_handled_counts_the_handled():
    # A message retried after an error counts again; the total never shows less.
    assert "12/12" in render(12, 10, 1.0, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bar(stream: io.StringIO) -> list[str]:
    return stream.getvalue().split(CLEAR)[1:]


def test_redrawn_at_most_every_interval_and_counts_only_when_drawn():
    out, clock, counted = io.StringIO(), Clock(), []

    def handled() -> int:
        counted.append(1)
        return len(counted)

    p = Progress(out, clock=clock, width=lambda: 100)
    for _ in range(10_000):                     # one loop turn per message, no time passing
        p.update(handled, 100, 5)
    assert len(bar(out)) == 1 and len(counted) == 1
    clock.now += INTERVAL / 2
    p.update(handled, 100, 5)
    assert len(bar(out)) == 1
    clock.now += INTERVAL / 2
    p.update(handled, 100, 5)
    assert len(bar(out)) == 2 and len(counted) == 2


def test_rate_is_over_the_recent_window():
    out, clock = io.StringIO(), Clock()
    p = Progress(out, clock=clock, width=lambda: 100)
    handled = 0
    for per_second, seconds in ((100, 30), (10, 2 * WINDOW)):
        for _ in range(int(seconds)):
            for _ in range(int(1 / INTERVAL)):
                clock.now += INTERVAL
                p.update(handled, 10_000, 5)
            handled += per_second
        assert p.rate() == pytest.approx(per_second, rel=0.15)
    assert len(p.history) <= WINDOW / INTERVAL + 2


def test_finish_leaves_the_final_state_on_its_own_line():
    out, clock = io.StringIO(), Clock()
    p = Progress(out, clock=clock, width=lambda: 100)
    p.update(0, 40, 40)
    clock.now += 2
    p.finish(40, 40, 0)
    last = bar(out)[-1]
    assert last.endswith("\n") and "40/40" in last and "20 msg/s" in last


def test_a_log_line_wipes_the_bar_first():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        p = Progress(out, clock=Clock(), width=lambda: 100)
        p.wipe_before_logs()
        p.update(1, 10, 1)
        logging.getLogger("holdscan.test").warning("a line")
        assert out.getvalue().endswith(CLEAR + "a line\n")
        assert not p.shown
    finally:
        root.removeHandler(handler)


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert Progress.for_stderr() is None
