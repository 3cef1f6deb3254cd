"""The dispatcher's status file: what `holdscan status` shows, written every second.

A file in the state directory rather than a socket, so that it can be read
when the dispatcher is gone (its last words) and by anyone with `cat`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Status:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None
