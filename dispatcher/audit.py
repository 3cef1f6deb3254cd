"""The audit log: who asked for what to be done to the quarantine, and what came of it.

One JSON object per line in STATE/web/audit.log, appended (O_APPEND, fsync'd) by
the dispatcher only; the web group may read it, nobody but mail_owner may write it.
A line is written once a request has been carried out or refused, so the log says
what happened, never only what was asked.
"""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path
from typing import Any

from dispatcher.durable import write_all


def append(path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record, sort_keys=True, ensure_ascii=True).replace("\n", " ") + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        os.fchmod(fd, 0o640)        # whatever the umask: the web group reads it
        write_all(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def tail(path: Path, limit: int = 500) -> list[dict[str, Any]]:
    """The last `limit` records, newest first; lines that are not JSON are skipped."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = deque(f, maxlen=limit)
    except FileNotFoundError:
        return []
    out = []
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


__all__ = ["append", "tail"]
