"""Durable attempt counts per held queue file, so a message that kills workers
is given up on after N tries instead of looping forever.

What counts as an attempt: a worker started scanning the message (it said so,
contract.Started) and then gave no verdict (it died, or hit its time limit),
or gave an `error` verdict that blames these bytes (error_kind "message").
What does not: a message no worker took (workers stopped), and an error
verdict for a component that is down (clamd unreachable) — those wait.

One row per queue file still in hold: (queue ID, inode, attempts, last error).
SQLite in WAL mode with synchronous=NORMAL survives a killed process (the
failure that matters here); a power cut may lose the last few increments,
which at worst grants a message one more try.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


class Attempts:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS attempts (queue_id TEXT PRIMARY KEY, inode INTEGER, "
            "attempts INTEGER NOT NULL, last_error TEXT NOT NULL DEFAULT '', updated REAL)")

    def get(self, queue_id: str, inode: int) -> int:
        row = self.db.execute("SELECT inode, attempts FROM attempts WHERE queue_id = ?",
                              (queue_id,)).fetchone()
        if row is None or row[0] != inode:
            return 0
        return int(row[1])

    def increment_many(self, items: list[tuple[str, int]]) -> dict[str, int]:
        """Count one more attempt for each (queue_id, inode); returns the new counts."""
        out = {}
        self.db.execute("BEGIN")
        try:
            for queue_id, inode in items:
                n = self.get(queue_id, inode) + 1
                self.db.execute(
                    "INSERT OR REPLACE INTO attempts (queue_id, inode, attempts, last_error, "
                    "updated) VALUES (?, ?, ?, COALESCE((SELECT last_error FROM attempts WHERE "
                    "queue_id = ? AND inode = ?), ''), ?)",
                    (queue_id, inode, n, queue_id, inode, time.time()))
                out[queue_id] = n
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return out

    def uncount_many(self, queue_ids: list[str]) -> None:
        """Take back one attempt each: it turned out not to be the message's fault."""
        if queue_ids:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany(
                    "UPDATE attempts SET attempts = MAX(0, attempts - 1) WHERE queue_id = ?",
                    [(q,) for q in queue_ids])

    def note_error(self, queue_id: str, error: str) -> None:
        self.db.execute("UPDATE attempts SET last_error = ?, updated = ? WHERE queue_id = ?",
                        (error, time.time(), queue_id))

    def forget_many(self, queue_ids: list[str]) -> None:
        if queue_ids:
            # One transaction, one WAL commit, for the whole batch.
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("DELETE FROM attempts WHERE queue_id = ?",
                                    [(q,) for q in queue_ids])

    def rows(self) -> list[tuple[str, int, int, str, float]]:
        return list(self.db.execute(
            "SELECT queue_id, inode, attempts, last_error, updated FROM attempts "
            "ORDER BY updated DESC"))

    def close(self) -> None:
        self.db.close()
