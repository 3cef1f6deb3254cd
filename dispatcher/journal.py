"""The operations journal: one small JSON file per spool operation in progress.

Releasing a message is one rename and needs no journal. Replacing it (a
rewrite: new queue file(s) instead of the original; a quarantine: the
original into the quarantine store; a split: both) takes several steps. The
entry is written — fsync'd, with its directory — after everything new is
complete on stable storage and before the original is touched, and it names
everything the operation made, so that recovery can finish or undo it:

  * no entry   -> nothing was touched: the original is still in hold and is
                  scanned again; files in the temporary directory that no
                  entry names are leftovers and are removed.
  * an entry   -> recovery looks where the original is (Spool.settle): taken
                  into holdscan's custody means finish the operation; not
                  taken means undo it (remove what it made), whoever has the
                  message now.

The entry is named after the original's queue ID, which is what an operator
greps for.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dispatcher import durable

KINDS = ("rewrite", "quarantine", "split", "park")


@dataclass
class Entry:
    kind: str                 # one of KINDS; "split" is rewrite + quarantine
    original: str             # the queue ID being replaced
    inode: int                # its inode, so we never act on a different file of the same name
    new_ids: list[str] = field(default_factory=list)   # new queue files, in the temp dir
    quarantine_id: str = ""   # the entry in the quarantine store, if any
    queue: str = "hold"       # the queue the original was in (park takes from any)


class JournalError(ValueError):
    """A journal entry that cannot be read; the message says which file to look at."""


class Journal:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, original: str) -> Path:
        return self.dir / f"{original}.json"

    def commit(self, entry: Entry, owner: tuple[int, int] | None = None) -> None:
        """Durably record that `entry` is in progress (before the original is touched)."""
        durable.write_file(self.path(entry.original), json.dumps(asdict(entry)).encode(),
                           owner=owner)

    def done(self, original: str) -> None:
        # No fsync: an entry that survives a crash is settled again, and settling a
        # finished operation finds nothing left to do (Spool.settle).
        try:
            os.unlink(self.path(original))
        except FileNotFoundError:
            pass

    def get(self, original: str) -> Entry | None:
        p = self.path(original)
        try:
            return _load(p)
        except FileNotFoundError:
            return None

    def entries(self) -> list[Entry]:
        return [_load(p) for p in sorted(self.dir.glob("*.json"))]

    def remove_temporaries(self) -> None:
        for p in self.dir.glob(".*.tmp"):
            p.unlink(missing_ok=True)


def _load(p: Path) -> Entry:
    try:
        d = json.loads(p.read_text())
        entry = Entry(**d)
    except (ValueError, TypeError) as e:
        raise JournalError(f"journal entry {p} is unreadable ({e}); it names an operation "
                           "on a message in progress: move it aside and check that message "
                           "with `postqueue -p` and `holdscan quarantine list`") from None
    if entry.kind not in KINDS:
        raise JournalError(f"journal entry {p} has an unknown kind {entry.kind!r}")
    return entry
