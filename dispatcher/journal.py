"""The rewrite/quarantine journal: one small JSON file per operation in progress.

Releasing a message is one rename and needs no journal. Rewriting it (new
queue file(s) replace the original) and quarantining it (a copy is stored,
then the original removed) take several steps; a crash between them must
leave enough on disk for the next start to finish the job, never to guess.

A journal entry is written — and fsync'd, with its directory — at the single
commit point of such an operation: after the new files (or the quarantine
copy) are complete on stable storage, before the original is touched. So:

  * no entry   -> the operation never committed: the original is still in
                  hold and is scanned again; half-written new files in the
                  temporary directory are orphans and are removed.
  * an entry   -> the operation committed: recovery rolls it forward (remove
                  the original if it is still there, move the new files into
                  incoming), then deletes the entry.

Every step of the roll-forward is idempotent, so a crash during recovery is
recovered by the next recovery. One entry is named after the original's
queue ID, which is what an operator greps for.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Entry:
    kind: str                 # "rewrite", "quarantine" or "split" (rewrite + quarantine)
    original: str             # the hold queue ID being replaced
    inode: int                # its inode, so we never remove a different file of the same name
    new_ids: list[str] = field(default_factory=list)   # rewrite: files in the temp dir
    quarantine_id: str = ""   # quarantine: the entry in the quarantine store


class Journal:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, original: str) -> Path:
        return self.dir / f"{original}.json"

    def commit(self, entry: Entry, owner: tuple[int, int] | None = None) -> None:
        """Durably record that `entry` is to be carried out (the commit point)."""
        final = self.path(entry.original)
        tmp = self.dir / f".{entry.original}.{os.getpid()}.tmp"
        data = json.dumps(asdict(entry)).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            if owner:
                os.fchown(fd, *owner)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        fsync_dir(self.dir)

    def done(self, original: str) -> None:
        # No fsync: an entry that survives a crash is replayed, and replaying is harmless.
        try:
            os.unlink(self.path(original))
        except FileNotFoundError:
            pass

    def entries(self) -> list[Entry]:
        out = []
        for p in sorted(self.dir.glob("*.json")):
            out.append(Entry(**json.loads(p.read_text())))
        return out

    def remove_temporaries(self) -> None:
        for p in self.dir.glob(".*.tmp"):
            p.unlink(missing_ok=True)
