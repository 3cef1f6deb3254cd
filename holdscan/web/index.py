"""The web's index of the quarantine: one SQLite row per entry, in the web's own directory.

The quarantine store is one directory per entry with a meta.json; listing and filtering
100,000 of them per page view would read 100,000 files. The index keeps what the list
shows and filters on, and is brought up to date by

    refresh()          when the store's directory changed (entries came or went): its
                       names only, meta.json read for the new ones
    refresh(full=True) every entry's directory stat'd, meta.json read again where it
                       changed (replacing meta.json, as a release does, changes it)
    refresh_entry(id)  one entry, after the web's own request for it was carried out

The store stays the truth: a page that acts on an entry reads its meta.json itself.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY, time REAL NOT NULL, verdict TEXT NOT NULL, sender TEXT NOT NULL,
    recipients TEXT NOT NULL, subject TEXT NOT NULL, reason TEXT NOT NULL,
    released_as TEXT NOT NULL, mtime INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS entries_time ON entries (time, id);
CREATE INDEX IF NOT EXISTS entries_verdict_time ON entries (verdict, time);
"""


@dataclass
class Filters:
    since: float | None = None
    until: float | None = None
    verdict: str = ""
    sender: str = ""
    recipient: str = ""
    text: str = ""          # in the subject

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if self.since is not None:
            clauses.append("time >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("time < ?")
            args.append(self.until)
        if self.verdict:
            clauses.append("verdict = ?")
            args.append(self.verdict)
        for column, value in (("sender", self.sender), ("recipients", self.recipient),
                              ("subject", self.text)):
            if value:
                clauses.append(f"{column} LIKE ? ESCAPE '\\'")
                args.append("%" + _like(value) + "%")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


@dataclass
class Page:
    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    verdicts: list[str] = field(default_factory=list)


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Index:
    def __init__(self, path: Path, quarantine_dir: Path) -> None:
        self.path = path
        self.quarantine_dir = quarantine_dir
        self._lock = threading.Lock()           # one refresh at a time
        self._dir_mtime = -2                    # the store's directory at the last refresh
        with self.db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        # A connection per use: the server's threads never share one.
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    # -- keeping it current -----------------------------------------------------------------
    def refresh(self, full: bool = False) -> int:
        """Bring the index up to date with the store. Returns how many rows changed."""
        with self._lock:
            try:
                dir_mtime = os.stat(self.quarantine_dir).st_mtime_ns
            except FileNotFoundError:
                dir_mtime = -1
            if not full and dir_mtime == self._dir_mtime:
                return 0
            with self.db() as db:
                known = dict(db.execute("SELECT id, mtime FROM entries").fetchall())
            seen: dict[str, int] = {}
            changed = []
            try:
                scan = os.scandir(self.quarantine_dir)
            except FileNotFoundError:
                scan = None
            if scan is not None:
                with scan:
                    for d in scan:
                        if d.name.startswith("."):
                            continue
                        if not full and d.name in known:
                            seen[d.name] = known[d.name]
                            continue
                        try:
                            mtime = d.stat(follow_symlinks=False).st_mtime_ns
                        except FileNotFoundError:
                            continue
                        seen[d.name] = mtime
                        if known.get(d.name) != mtime:
                            row = self._row(d.name, mtime)
                            if row is not None:
                                changed.append(row)
            gone = [k for k in known if k not in seen]
            self._dir_mtime = dir_mtime
            with self.db() as db:
                db.executemany("INSERT OR REPLACE INTO entries VALUES "
                               "(:id, :time, :verdict, :sender, :recipients, :subject, "
                               ":reason, :released_as, :mtime)", changed)
                db.executemany("DELETE FROM entries WHERE id = ?", [(g,) for g in gone])
            return len(changed) + len(gone)

    def refresh_entry(self, entry_id: str) -> None:
        with self._lock:
            try:
                mtime = os.stat(self.quarantine_dir / entry_id).st_mtime_ns
                row = self._row(entry_id, mtime)
            except (FileNotFoundError, ValueError):
                row = None
            with self.db() as db:
                if row is None:
                    db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
                else:
                    db.execute("INSERT OR REPLACE INTO entries VALUES (:id, :time, :verdict, "
                               ":sender, :recipients, :subject, :reason, :released_as, "
                               ":mtime)", row)

    def _row(self, entry_id: str, mtime: int) -> dict[str, Any] | None:
        try:
            meta = json.loads((self.quarantine_dir / entry_id / "meta.json").read_bytes())
        except (OSError, ValueError):
            return None             # not shared with us (yet), or being written
        if not isinstance(meta, dict):
            return None
        t = meta.get("time")
        recipients = meta.get("recipients") if isinstance(meta.get("recipients"), list) else []
        return {"id": entry_id, "time": float(t) if isinstance(t, (int, float)) else 0.0,
                "verdict": str(meta.get("action", "")), "sender": str(meta.get("sender", "")),
                "recipients": "\n".join(str(r) for r in recipients),
                "subject": str(meta.get("subject", "")), "reason": str(meta.get("reason", "")),
                "released_as": str(meta.get("released_as", "")), "mtime": mtime}

    def run(self, interval: float, stop: threading.Event, full_every: float = 60.0) -> None:
        """Refresh every `interval` seconds, fully every `full_every`, until `stop` (the
        web's background thread)."""
        next_full = time.monotonic() + full_every
        while not stop.wait(interval):
            full = time.monotonic() >= next_full
            if full:
                next_full = time.monotonic() + full_every
            try:
                self.refresh(full=full)
            except (OSError, sqlite3.Error):
                time.sleep(interval)

    # -- reading -----------------------------------------------------------------------------
    def page(self, filters: Filters, page: int = 1, size: int = 50) -> Page:
        where, args = filters.where()
        with self.db() as db:
            total = db.execute(f"SELECT COUNT(*) FROM entries{where}", args).fetchone()[0]
            pages = max(1, -(-total // size))
            page = min(max(1, page), pages)
            rows = db.execute(f"SELECT * FROM entries{where} ORDER BY time DESC, id DESC "
                              "LIMIT ? OFFSET ?", [*args, size, (page - 1) * size]).fetchall()
            verdicts = [v for (v,) in db.execute(
                "SELECT DISTINCT verdict FROM entries ORDER BY verdict")]
        return Page([_out(r) for r in rows], total, page, pages, verdicts)

    def per_hour(self, since: float) -> dict[tuple[int, str], int]:
        """Entries per (hour since the epoch, verdict) stored since `since`."""
        with self.db() as db:
            return {(int(h), v): n for h, v, n in db.execute(
                "SELECT CAST(time / 3600 AS INTEGER) AS h, verdict, COUNT(*) FROM entries "
                "WHERE time >= ? GROUP BY h, verdict", (since,))}

    def count(self) -> int:
        with self.db() as db:
            return int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])


def _out(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    d["recipients"] = d["recipients"].split("\n") if d["recipients"] else []
    return d


__all__ = ["Filters", "Index", "Page"]
