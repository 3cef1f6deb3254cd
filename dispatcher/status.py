"""The dispatcher's status file: what `holdscan status` shows, written every second.

A file in the state directory rather than a socket, so that it can be read
when the dispatcher is gone (its last words) and by anyone with `cat`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dispatcher import durable


class Status:
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
