"""The quarantine store: one directory per stopped message, as written by Spool.quarantine.

QUARANTINE/<id>/queuefile   the queue file exactly as Postfix wrote it
QUARANTINE/<id>/meta.json   envelope, verdict, reason, time
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class QuarantineEntry:
    id: str
    path: Path
    meta: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        m = self.meta
        return {
            "id": self.id, "queue_id": m.get("queue_id", ""), "sender": m.get("sender", ""),
            "recipients": m.get("recipients", []), "verdict": m.get("action", ""),
            "reason": m.get("reason", ""), "time": m.get("time", 0),
            "subject": m.get("subject", ""),
        }


def entries(directory: Path) -> list[QuarantineEntry]:
    out = []
    if not directory.is_dir():
        return out
    for p in directory.iterdir():
        if p.name.startswith(".") or not p.is_dir():
            continue     # .tmp-* are entries being written; recovery removes leftovers
        try:
            meta = json.loads((p / "meta.json").read_text())
        except (FileNotFoundError, ValueError):
            meta = {"reason": "meta.json missing or unreadable"}
        out.append(QuarantineEntry(p.name, p, meta))
    out.sort(key=lambda e: e.meta.get("time", 0))
    return out
