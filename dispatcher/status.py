"""The dispatcher's status file: what `holdscan status` shows, written every second.

A file in the state directory rather than a socket, so that it can be read
when the dispatcher is gone (its last words) and by anyone with `cat`.
Stats is what the dispatcher counts and remembers for it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatcher import durable
from dispatcher.metrics import Metrics
from shared.logging import event

log = logging.getLogger("holdscan.dispatcher")     # these are the dispatcher's lines


class StatusFile:
    """status.json in the state directory: what `holdscan status` shows, written whole."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, data: dict[str, Any]) -> None:
        # Written whole and renamed into place: a reader never sees half of it.
        durable.write_file(self.path, json.dumps(data, indent=1, sort_keys=True).encode(),
                           mode=0o644, sync_dir=False)

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None


@dataclass
class Stats:
    """What the dispatcher counts and remembers: for the status file, and as Prometheus
    metrics (served when dispatcher.metrics_address is set)."""

    metrics: Metrics = field(default_factory=Metrics)
    outcomes: dict[str, int] = field(default_factory=dict)        # outcome -> messages
    workers_seen: dict[str, float] = field(default_factory=dict)
    last_errors: list[str] = field(default_factory=list)
    components: dict[str, str] = field(default_factory=dict)      # -> "up" | "down: why"

    def error(self, text: str, kind: str = "") -> None:
        """Remember an error for `holdscan status`; count it by `kind` if given."""
        if kind:
            self.metrics.errors.labels(kind).inc()
        self.last_errors = (self.last_errors + [f"{time.strftime('%F %T')} {text}"])[-20:]

    def worker_seen(self, worker: str) -> None:
        if worker:
            self.workers_seen[worker] = time.time()

    def count(self, verdict: str, outcome: str) -> None:
        """A message done with: `outcome` (disposition.STORY), for `verdict` (or gave_up)."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.metrics.verdicts.labels(verdict, outcome).inc()

    def state_change(self, component: str, state: str) -> None:
        """One log line per change of a component's state ("up" or "down: why"), not one
        per message: a clamd outage with 5,000 messages waiting is two lines."""
        up = state == "up"
        previous = self.components.get(component)
        self.components[component] = state
        if previous is not None and (previous == "up") == up:
            return
        if up:
            if previous is not None:
                event(log, logging.WARNING, f"{component} is back", component=component)
        else:
            self.error(f"{component} {state}")
            event(log, logging.ERROR, f"{component} unavailable; mail waits in hold",
                  component=component, state=state)

    def status(self) -> dict[str, Any]:
        return {"components": self.components, "outcomes": self.outcomes,
                "workers_seen": self.workers_seen, "last_errors": self.last_errors}

    def handled(self) -> int:
        """Messages done with so far, whatever the outcome."""
        return sum(self.outcomes.values())

    def once_summary(self, waiting: int, unparseable: int) -> int:
        """--once: say what was done, and fail if anything had to stay in hold."""
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        print(f"holdscan: {outcomes or 'nothing to do'}", file=sys.stderr)
        if waiting or unparseable:
            print(f"holdscan: {waiting} message(s) stay in hold after a scan error and "
                  f"{unparseable} are left for a human (unparseable, or policy `hold`); see "
                  "the log above, then run again", file=sys.stderr)
            return 1
        return 0
