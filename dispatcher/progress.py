"""`holdscan dispatch --once` on a terminal: a progress bar on stderr.

    holdscan [##########..........] 25000/50000  312 msg/s  ETA 1:20  in flight 5000

The rate is over the last WINDOW seconds, so that the ETA follows what the
workers do now rather than since the start. The bar is redrawn at most every
INTERVAL seconds: the loop may call update() as often as it likes, since all
it costs between two draws is a look at the clock. When stderr is not a
terminal there is no bar at all (for_stderr() gives None), so that logs stay
clean. Log lines on the same terminal first wipe the bar; the next draw puts
it back under them.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

INTERVAL = 0.25         # seconds between two draws, at the least
WINDOW = 10.0           # seconds of history the rate is taken over
CLEAR = "\r\x1b[K"      # to the start of the line, erase to its end


def format_eta(seconds: float | None) -> str:
    """m:ss, or h:mm:ss from an hour on; "--:--" while there is no rate to go by."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds > 99 * 3600:
        return "--:--"
    s = int(seconds + 0.5)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def render(handled: int, total: int, rate: float, in_flight: int, width: int = 80) -> str:
    """One line, at most `width` characters: the bar takes what the figures leave."""
    total = max(total, handled)
    eta = format_eta((total - handled) / rate if rate > 0 else (0 if handled >= total
                                                                  else None))
    figures = (f" {handled}/{total}  {rate:.0f} msg/s  ETA {eta}  in flight {in_flight}")
    label = "holdscan "
    room = width - len(label) - len(figures) - 2          # the brackets
    if room < 10:
        return (label.strip() + figures)[:max(width, 0)]
    bar = min(room, 40)
    filled = bar if total == 0 else bar * handled // total
    return f"{label}[{'#' * filled}{'.' * (bar - filled)}]{figures}"


class Progress:
    """The bar on one stream. update() as often as convenient; finish() once at the end."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic,
                 width: Callable[[], int] | None = None) -> None:
        self.stream = stream
        self.clock = clock
        self.width = width or (lambda: shutil.get_terminal_size().columns)
        self.next_draw = 0.0
        self.history: deque[tuple[float, int]] = deque()   # (time, handled) at each draw
        self.shown = False                  # the bar is on the screen's last line

    @classmethod
    def for_stderr(cls) -> Progress | None:
        """A bar on stderr if it is a terminal, else None."""
        try:
            tty = sys.stderr.isatty()
        except (AttributeError, ValueError):
            return None
        return cls(sys.stderr, width=lambda: os.get_terminal_size(2).columns) if tty else None

    def update(self, handled: int | Callable[[], int], total: int, in_flight: int) -> None:
        """Redraw if the last draw is INTERVAL old. `handled` may be a function, so that
        counting costs nothing between draws."""
        now = self.clock()
        if now < self.next_draw:
            return
        self.next_draw = now + INTERVAL
        self._draw(now, handled() if callable(handled) else handled, total, in_flight)

    def finish(self, handled: int, total: int, in_flight: int) -> None:
        """The final state, left on the screen, and the line ended."""
        self._draw(self.clock(), handled, total, in_flight)
        self.stream.write("\n")
        self.stream.flush()
        self.shown = False

    def rate(self) -> float:
        """msg/s over the history kept (the last WINDOW seconds)."""
        if len(self.history) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.history[0], self.history[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def clear(self) -> None:
        """Wipe the bar (a log line is about to be written), to be drawn again at the next
        draw: no sooner, so that a busy log does not make it cost a draw per line."""
        if self.shown:
            self.stream.write(CLEAR)
            self.shown = False

    def wipe_before_logs(self) -> None:
        """Log lines to the same stream wipe the bar first."""
        for handler in logging.getLogger().handlers:
            if getattr(handler, "stream", None) is self.stream:
                handler.addFilter(self._wipe)

    def _wipe(self, record: logging.LogRecord) -> bool:
        self.clear()
        return True

    def _draw(self, now: float, handled: int, total: int, in_flight: int) -> None:
        self.history.append((now, handled))
        # Keep one sample older than the window, so the rate spans all of it.
        while len(self.history) > 2 and self.history[1][0] <= now - WINDOW:
            self.history.popleft()
        line = render(handled, total, self.rate(), in_flight, self.width() - 1)
        self.stream.write(CLEAR + line)
        self.stream.flush()
        self.shown = True
