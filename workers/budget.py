"""A CPU budget per message: past it, the message is judged `unscannable`, not retried.

A hostile message can be built to make a parser or scanner slow; without a
bound, Celery's time limit kills the pool process, the batch is sent again, and
after a few attempts the message is quarantined as an error, having cost every
worker minutes. With a budget the cost is bounded and the verdict says why.

Two ways of stopping, both raising OverBudget where the work is:

- in the main thread, an ITIMER_PROF timer (process CPU time) whose signal
  raises in whatever Python code is running; this is how a Celery prefork
  worker runs its tasks;
- everywhere, `check()`, which the parser calls in its loops (a thread cannot
  receive the signal).

A C routine that runs long without returning to Python (a regular expression
that backtracks) cannot be stopped by either: the parsers keep every such
routine linear or on bounded input, and the budget catches the rest.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["OverBudget", "cpu_budget", "check"]


class OverBudget(BaseException):
    """The message has used up its CPU budget.

    A BaseException, as KeyboardInterrupt is: the `except Exception` with which
    a scanner guards its own parsing must not swallow it."""


class _Deadlines(threading.local):
    def __init__(self) -> None:
        self.stack: list[float] = []    # process-time deadlines of the budgets in force


_local = _Deadlines()


def check() -> None:
    """Raise OverBudget if the innermost budget in force is used up."""
    stack = _local.stack
    if stack and time.process_time() > stack[-1]:
        raise OverBudget("more than its CPU budget")


def _on_signal(signum: int, frame: object) -> None:
    # The handler stays installed between budgets (installing and restoring it around
    # every step cost a worker about a tenth of its CPU on small mail): a tick that
    # arrives after a budget ended is nobody's, and is ignored.
    if _local.stack:
        raise OverBudget("more than its CPU budget")


def _install() -> None:
    if signal.getsignal(signal.SIGPROF) is not _on_signal:
        signal.signal(signal.SIGPROF, _on_signal)


@contextmanager
def cpu_budget(seconds: float) -> Iterator[None]:
    """Raise OverBudget in the block once it has used `seconds` of CPU time (0: no budget).

    Budgets do not nest: inside one, another is a no-op (the outer one rules).
    """
    stack = _local.stack
    if seconds <= 0 or stack:
        yield
        return
    main = threading.current_thread() is threading.main_thread()
    if main:
        _install()
    stack.append(time.process_time() + seconds)
    try:
        if main:
            # Repeating: code that swallows the first signal gets another.
            signal.setitimer(signal.ITIMER_PROF, seconds, 0.05)
        yield
    finally:
        if main:
            signal.setitimer(signal.ITIMER_PROF, 0)
        stack.pop()
