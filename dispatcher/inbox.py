"""The loop's inbox: what the other threads tell the one thread that does the work.

The watcher names paths in hold, a read's worth at a time (None: look at
everything), the transport's listener hands over the workers' replies
(verdicts and started notices) and the state of a component ("up", "down:
why"), and SIGTERM or SIGINT ask to stop. They only put events on one queue;
the dispatcher's loop takes them all at once, so that it alone claims, sends
and applies.
"""

from __future__ import annotations

import queue
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Events:
    """What arrived since the loop last looked, each kind in the order it came."""

    paths: list[Path | None] = field(default_factory=list)     # None: rescan hold
    replies: list[Any] = field(default_factory=list)
    states: list[tuple[str, str]] = field(default_factory=list)    # (component, state)
    stop: bool = False


class Inbox:
    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()

    def paths(self, paths: Iterable[Path | None]) -> None:
        self.queue.put(("paths", paths))

    def replies(self, replies: Any) -> None:
        self.queue.put(("replies", replies))

    def state(self, component: str, state: str) -> None:
        self.queue.put(("state", (component, state)))

    def stop(self, *signal_args: object) -> None:
        self.queue.put(("stop", None))

    def take(self, timeout: float) -> Events:
        """Everything queued, after waiting up to `timeout` seconds for the first."""
        events = Events()
        try:
            kind, value = self.queue.get(timeout=timeout) if timeout > 0 else \
                self.queue.get_nowait()
            while True:
                if kind == "paths":
                    events.paths.extend(value)
                elif kind == "replies":
                    events.replies.extend(value if isinstance(value, list) else [value])
                elif kind == "state":
                    events.states.append(value)
                elif kind == "stop":
                    events.stop = True
                kind, value = self.queue.get_nowait()
        except queue.Empty:
            pass
        return events
