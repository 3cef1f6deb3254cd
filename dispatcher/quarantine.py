"""The quarantine store: one directory per stopped message.

QUARANTINE/<id>/queuefile   the queue file exactly as Postfix wrote it (the held
                            file itself, renamed here: never a copy)
QUARANTINE/<id>/meta.json   envelope, verdict, reason, time; after a release
                            also released_at, released_as, released_to

An entry is built by the spool's operations through QuarantineDir (below),
the only code that creates entries; QuarantineStore manages stored ones.

Managing it (`holdscan quarantine ...`) takes QUARANTINE/.lock, so two
commands, or a command and the dispatcher's daily expiry, never work on the
store at once. Each change has one commit point, so a crash anywhere leaves
something `recover()` (run first by release, delete and expire, and by the
dispatcher at start) finishes or undoes:

    release  write the new queue file inside the entry (named from its inode,
             fsync'd, then 0700)       crash: an uncommitted file; recover removes it
             commit: meta.json gets released_as = its queue ID (atomic rename)
                                       crash: recover moves the file into incoming
             rename it into incoming, wake qmgr
    delete   rename the entry to .deleted-<id> (the commit)
                                       crash: recover removes the rest
             remove it

Readers: when the store's directory is readable by a group (the web's, set up
by dispatcher/webrequests.py), each entry is shared with it as it is stored:
the entry's directory 0750, meta.json and queuefile 0640 in that group. The
group can read entries, never change them.

A second release of the same entry finds released_as and does nothing, so a
release repeated after a crash delivers the message once. The released file
is a new queue file in Postfix's incoming queue: it is never held, and so
never scanned again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatcher import durable, queuefile
from dispatcher.durable import fsync_dir
from shared.crashpoints import crashpoint

if TYPE_CHECKING:
    from dispatcher.spool import Spool

log = logging.getLogger("holdscan.quarantine")

LOCK = ".lock"
_BUILDING = ".tmp-"
_DELETED = ".deleted-"
_KEEP = frozenset({"queuefile", "meta.json"})
_ID_RE = re.compile(r"[0-9A-Za-z]+-[0-9]+")
_DURATION_RE = re.compile(r"([0-9]+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class QuarantineDir:
    """How an entry comes to be: the one writer of the store's layout.

    prepare  QUARANTINE/.tmp-<id>/meta.json, fsync'd     (before the journal commit)
    custody  QUARANTINE/.tmp-<id>/queuefile: the spool renames the held file
             here to take it (the take is the operation's commit point)
    store    rename .tmp-<id> -> <id>, fsync              (listed from now on)
    abandon  remove a .tmp-<id> that never received its queue file

    An entry is *taken* once its queue file is in the entry, built or stored:
    from then on it holds the only copy of the message and is never removed
    except by a delete.
    """

    def __init__(self, directory: Path, owner: tuple[int, int] | None) -> None:
        self.dir = directory
        self.owner = owner

    def building(self, entry_id: str) -> Path:
        return self.dir / f"{_BUILDING}{entry_id}"

    def custody(self, entry_id: str) -> Path:
        return self.building(entry_id) / "queuefile"

    def prepare(self, entry_id: str, meta: dict[str, Any]) -> None:
        final, tmp = self.dir / entry_id, self.building(entry_id)
        if final.exists():
            raise FileExistsError(f"quarantine entry {final} exists already")
        tmp.mkdir(mode=0o700, exist_ok=True)
        if self.owner:
            # The quarantine commands and the dispatcher (as mail_owner) must be
            # able to read and remove every entry, whoever stored it.
            os.chown(tmp, *self.owner)
        durable.write_file(tmp / "meta.json", json.dumps(meta, indent=1).encode(),
                           owner=self.owner, sync_dir=False)
        fsync_dir(tmp)
        fsync_dir(self.dir)

    def is_prepared(self, entry_id: str) -> bool:
        return (self.building(entry_id) / "meta.json").is_file()

    def is_taken(self, entry_id: str) -> bool:
        return self.custody(entry_id).exists() or (self.dir / entry_id / "queuefile").exists()

    def store(self, entry_id: str) -> None:
        """Move a taken entry into place (idempotent)."""
        tmp = self.building(entry_id)
        if tmp.exists() and not (self.dir / entry_id).exists():
            share(tmp, reader_group(self.dir))
            os.rename(tmp, self.dir / entry_id)
            fsync_dir(self.dir)

    def abandon(self, entry_id: str) -> None:
        """Remove an entry under construction that never got its queue file."""
        tmp = self.building(entry_id)
        if not tmp.exists():
            return
        if (tmp / "queuefile").exists():
            raise RuntimeError(f"refusing to remove {tmp}: it holds a message")
        shutil.rmtree(tmp)
        fsync_dir(self.dir)

    def leftovers(self) -> list[str]:
        """IDs of entries still under construction."""
        if not self.dir.is_dir():
            return []
        return [p.name[len(_BUILDING):] for p in self.dir.iterdir()
                if p.name.startswith(_BUILDING) and p.is_dir()]


class QuarantineError(ValueError):
    """A quarantine command cannot do what was asked; the message says why, in one line."""


@dataclass
class QuarantineEntry:
    id: str
    path: Path
    meta: dict[str, Any]

    @property
    def time(self) -> float:
        t = self.meta.get("time", 0)
        return float(t) if isinstance(t, (int, float)) else 0.0

    def summary(self) -> dict[str, Any]:
        m = self.meta
        return {
            "id": self.id, "queue_id": m.get("queue_id", ""), "sender": m.get("sender", ""),
            "recipients": m.get("recipients", []), "verdict": m.get("action", ""),
            "reason": m.get("reason", ""), "time": m.get("time", 0),
            "subject": m.get("subject", ""), "released_as": m.get("released_as", ""),
        }


def entries(directory: Path) -> list[QuarantineEntry]:
    out: list[QuarantineEntry] = []
    if not directory.is_dir():
        return out
    for p in directory.iterdir():
        if p.name.startswith(".") or not p.is_dir():
            continue     # .tmp-* are entries being written; recovery removes leftovers
        out.append(_entry(p))
    out.sort(key=lambda e: e.time)
    return out


def _entry(p: Path) -> QuarantineEntry:
    try:
        meta = json.loads((p / "meta.json").read_text())
    except (FileNotFoundError, ValueError):
        meta = {"reason": "meta.json missing or unreadable"}
    return QuarantineEntry(p.name, p, meta)


def parse_since(text: str, now: float | None = None) -> float:
    """`--since`: a duration back from now (30m, 12h, 7d, 2w) or a date (2024-05-01[T12:00],
    UTC unless it says otherwise). Returns seconds since the epoch."""
    now = time.time() if now is None else now
    m = _DURATION_RE.fullmatch(text.strip())
    if m:
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QuarantineError(f"--since {text!r}: give a duration (30m, 12h, 7d, 2w) or a "
                              "date (2024-05-01 or 2024-05-01T12:00)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True)
class Release:
    entry_id: str
    new_queue_id: str
    recipients: list[str]
    already: bool           # released earlier; nothing done now
    released_at: float


class QuarantineStore:
    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.dir = spool.quarantine_dir

    # -- locking and reading ------------------------------------------------------------------
    @contextmanager
    def locked(self, wait: bool = True) -> Iterator[bool]:
        """Hold the store's lock. With wait=False, yields False instead of waiting."""
        path = self.dir / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.geteuid() == 0:
                os.fchown(fd, *self.spool.owner)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def entries(self, since: float | None = None, reason: str = "") -> list[QuarantineEntry]:
        """Entries, oldest first; since: stored at or after; reason: in the reason or verdict."""
        want = reason.lower()
        return [e for e in entries(self.dir)
                if (since is None or e.time >= since)
                and (not want or want in str(e.meta.get("reason", "")).lower()
                     or want == str(e.meta.get("action", "")).lower())]

    def get(self, entry_id: str) -> QuarantineEntry:
        if not _ID_RE.fullmatch(entry_id):
            raise QuarantineError(f"{entry_id!r} is not a quarantine ID (QUEUEID-NUMBER, as "
                                  "`holdscan quarantine list` shows)")
        p = self.dir / entry_id
        if not (p / "queuefile").is_file():
            raise QuarantineError(f"no quarantine entry {entry_id} in {self.dir}")
        return _entry(p)

    def show(self, entry_id: str) -> dict[str, Any]:
        """Everything about an entry: its metadata, envelope and message headers."""
        e = self.get(entry_id)
        qf = self._queuefile(e)
        header = qf.content[:qf.header_end()]
        return {**e.summary(), "meta": e.meta, "envelope": {
            "sender": qf.sender,
            "recipients": [r.address for r in qf.recipients if not r.done],
            "done": [r.address for r in qf.recipients if r.done],
            "arrival_time": qf.arrival_time},
            "headers": [line.decode("utf-8", "replace") for line in header]}

    # -- release ---------------------------------------------------------------------------
    def release(self, entry_id: str, to: str = "") -> Release:
        """Put the original back into Postfix's incoming queue as a new queue file.

        Its recipients: those it was quarantined for (a split message's other
        recipients already had their copies), or only `to`. Released once:
        a second call reports the first release.
        """
        if to and (not re.fullmatch(r"[^\s<>,;@]+@[^\s<>,;@]+", to)):
            raise QuarantineError(f"--to {to!r}: give one address, like user@example.com")
        with self.locked():
            self._recover()
            e = self.get(entry_id)
            if e.meta.get("released_as"):
                return Release(e.id, str(e.meta["released_as"]),
                               list(e.meta.get("released_to", [])), True,
                               float(e.meta.get("released_at", 0)))
            qf = self._queuefile(e)
            if to:
                qf = qf.with_recipients(lambda r: False).with_recipient_added(to)
                recipients = [to]
            else:
                wanted = e.meta.get("recipients")
                keep = set(wanted) if isinstance(wanted, list) and wanted else None
                qf = qf.with_recipients(
                    lambda r: not r.done and (keep is None or r.address in keep))
                recipients = [r.address for r in qf.recipients]
                if not recipients:
                    raise QuarantineError(f"{entry_id} has no recipient left to release to; "
                                          "give one with --to ADDRESS")
            now = time.time()
            # Expiry counts from create_time: a message released after days in the
            # quarantine gets Postfix's whole queue lifetime, not what was left of it.
            qf = qf.with_attribute("create_time", str(int(now)))
            data = queuefile.serialize(qf, self.spool.settings.line_length_limit)
            new_id = self.spool.write_new_file(data, directory=e.path)
            fsync_dir(e.path)
            crashpoint("qrelease.before_commit")
            self._write_meta(e, {**e.meta, "released_at": now, "released_as": new_id,
                                 "released_to": recipients,
                                 "released_by": _who()})
            crashpoint("qrelease.after_commit")
            self.spool.move_into_incoming(e.path / new_id)
            self.spool.wake_qmgr()
            crashpoint("qrelease.after_move")
        log.info("released %s as %s to %s", entry_id, new_id, ", ".join(recipients))
        return Release(entry_id, new_id, recipients, False, now)

    @staticmethod
    def _queuefile(e: QuarantineEntry) -> queuefile.QueueFile:
        try:
            return queuefile.parse((e.path / "queuefile").read_bytes())
        except queuefile.QueueFileError as err:
            raise QuarantineError(f"{e.id}: the stored queue file is damaged ({err}); "
                                  f"look at it with postcat {e.path / 'queuefile'}") from None

    # -- delete and expire ---------------------------------------------------------------------
    def delete(self, entry_id: str) -> None:
        with self.locked():
            self._recover()
            self._delete(self.get(entry_id))

    def _delete(self, e: QuarantineEntry) -> None:
        # A committed release still waiting in the entry goes out first: it was promised.
        self._recover_entry(e.path)
        gone = self.dir / f"{_DELETED}{e.id}"
        os.rename(e.path, gone)
        fsync_dir(self.dir)
        crashpoint("qdelete.after_rename")
        shutil.rmtree(gone)
        fsync_dir(self.dir)
        log.info("deleted quarantine entry %s", e.id)

    def expire(self, days: int, now: float | None = None, wait: bool = True) -> list[str]:
        """Delete entries stored more than `days` days ago. Returns their IDs."""
        cutoff = (time.time() if now is None else now) - days * 86400
        gone: list[str] = []
        with self.locked(wait) as got:
            if not got:
                return gone
            self._recover()
            for e in entries(self.dir):
                if e.time < cutoff:
                    self._delete(e)
                    gone.append(e.id)
        return gone

    # -- recovery ---------------------------------------------------------------------------
    def recover(self, wait: bool = True) -> list[str]:
        """Finish or undo what an interrupted release or delete left. Returns what it did."""
        if not self.dir.is_dir():
            return []
        with self.locked(wait) as got:
            return self._recover() if got else []

    def _recover(self) -> list[str]:
        done: list[str] = []
        for p in self.dir.iterdir():
            if p.name.startswith(_DELETED) and p.is_dir():
                shutil.rmtree(p)
                done.append(f"removed {p.name}")
            elif not p.name.startswith(".") and p.is_dir():
                done += self._recover_entry(p)
        return done

    def _recover_entry(self, path: Path) -> list[str]:
        done = []
        meta = _entry(path).meta
        released_as = meta.get("released_as", "")
        for f in path.iterdir():
            if f.name in _KEEP:
                continue
            if f.name == released_as:
                self.spool.move_into_incoming(f)
                self.spool.wake_qmgr()
                done.append(f"released {path.name} as {f.name}")
                log.info("recovered: %s moved into incoming (release of %s)", f.name, path.name)
            else:
                f.unlink()          # a release or meta update that never committed
                done.append(f"removed {path.name}/{f.name}")
        return done

    def _write_meta(self, e: QuarantineEntry, meta: dict[str, Any]) -> None:
        durable.write_file(e.path / "meta.json", json.dumps(meta, indent=1).encode(),
                           owner=self.spool.owner if os.geteuid() == 0 else None)
        share(e.path, reader_group(self.dir), only=("meta.json",))
        e.meta = meta


def reader_group(directory: Path) -> int | None:
    """The group that may read the store (the web's): the store directory's group when
    that group may list it; None when the store is private."""
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return st.st_gid if st.st_mode & 0o050 == 0o050 else None


def share(entry: Path, gid: int | None, only: tuple[str, ...] = ("", *_KEEP)) -> None:
    """Let group `gid` read an entry (its directory 0750, meta.json and queuefile 0640).

    Best effort: whoever cannot change the group (a command run as mail_owner outside
    the web's group) leaves the entry private, and the web does not list it until the
    dispatcher shares it at its next start.
    """
    if gid is None:
        return
    for name in only:
        p = entry / name if name else entry
        try:
            st = os.lstat(p)
            if st.st_gid != gid:
                os.chown(p, -1, gid, follow_symlinks=False)
            want = 0o750 if name == "" else 0o640
            if stat.S_IMODE(st.st_mode) != want:
                os.chmod(p, want)
        except FileNotFoundError:
            continue
        except PermissionError as e:
            log.warning("cannot share quarantine entry %s with group %d: %s", entry, gid, e)
            return


def _who() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def format_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


__all__ = ["QuarantineEntry", "QuarantineError", "QuarantineStore", "Release", "entries",
           "format_time", "parse_since", "reader_group", "share"]
