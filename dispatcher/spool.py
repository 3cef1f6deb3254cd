"""Operations on Postfix's spool, each obeying the rules in design.md.

claim      take a ready hold file under flock(LOCK_EX|LOCK_NB)         (rules 9, 10)
release    rename hold/ID -> incoming/ID: same inode, same name        (rules 4, 5)
rewrite    new file(s) named from their own inode, fsync'd, then 0700;
           the original is retired only after the journal commit      (rules 5, 7, 8, 9)
           (none: discard; with a quarantine copy too: a split)
quarantine an fsync'd copy in the quarantine store, then unlink        (rule 7)
recover    finish what a killed dispatcher left, from the journal      (rule 7)

Queue files are never modified in place, and never copied into a queue:
files enter Postfix's queues only by rename (rule 4). Everything holdscan
keeps (temp files, journal, quarantine) must be on the queue's file system
(rule 2), so those renames cannot turn into copies.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import pwd
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher import queueid
from dispatcher.crashpoints import crashpoint
from dispatcher.journal import Entry, Journal, fsync_dir
from dispatcher.postfix import PostfixSettings

log = logging.getLogger("holdscan.spool")

# Logs Postfix keeps per queue ID; stale ones must not follow a released message.
PER_MESSAGE_LOGS = ("defer", "bounce", "trace")


class SpoolError(RuntimeError):
    """The spool cannot be used as configured; the message says what to change."""


@dataclass
class Claim:
    """A hold file we have opened and locked. The lock lives as long as `fd`."""

    queue_id: str
    path: Path
    fd: int
    st: os.stat_result

    @property
    def inode(self) -> int:
        return self.st.st_ino

    def read_bytes(self) -> bytes:
        return os.pread(self.fd, self.st.st_size, 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class RecoveryReport:
    rolled_forward: list[str] = field(default_factory=list)
    orphans_removed: list[str] = field(default_factory=list)
    skipped_locked: list[str] = field(default_factory=list)


class Spool:
    def __init__(self, settings: PostfixSettings, state_dir: str | Path = "",
                 quarantine_dir: str | Path = "") -> None:
        self.settings = settings
        self.queue_dir = settings.queue_directory
        self.hold_dir = self.queue_dir / "hold"
        self.incoming_dir = self.queue_dir / "incoming"
        self.state_dir = Path(state_dir) if state_dir else self.queue_dir / "holdscan"
        self.tmp_dir = self.state_dir / "tmp"
        self.journal = Journal(self.state_dir / "journal")
        self.quarantine_dir = (Path(quarantine_dir) if quarantine_dir
                               else self.state_dir / "quarantine")
        try:
            pw = pwd.getpwnam(settings.mail_owner)
        except KeyError:
            raise SpoolError(f"mail_owner {settings.mail_owner!r} is not a user on this host; "
                             "check `postconf mail_owner`") from None
        self.owner = (pw.pw_uid, pw.pw_gid)

    # -- set-up ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Create holdscan's directories and check rule 2. Raises SpoolError."""
        for d in (self.hold_dir, self.incoming_dir):
            if not d.is_dir():
                raise SpoolError(f"{d} does not exist: is {self.queue_dir} Postfix's "
                                 "queue_directory? (`postconf -h queue_directory`)")
        for d in (self.state_dir, self.tmp_dir, self.journal.dir, self.quarantine_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(d, *self.owner)
        self.check_same_filesystem()

    def check_same_filesystem(self) -> None:
        """Rule 2: hold, incoming and holdscan's own directories share one file system,
        so that every move between them is an atomic rename, never a copy."""
        dirs = [self.hold_dir, self.incoming_dir, self.tmp_dir, self.journal.dir,
                self.quarantine_dir]
        devices = {d: os.stat(d).st_dev for d in dirs}
        if len(set(devices.values())) > 1:
            listing = ", ".join(f"{d} (device {dev})" for d, dev in devices.items())
            raise SpoolError(
                "hold, incoming and holdscan's state and quarantine directories must be on one "
                f"file system, so that messages move by rename only: {listing}. Put the "
                "state_dir and quarantine_dir inside Postfix's queue_directory file system.")

    # -- paths ----------------------------------------------------------------------
    def path(self, queue: str, queue_id: str) -> Path:
        s = self.settings
        return queueid.queue_path(self.queue_dir, queue, queue_id, s.hash_queue_names,
                                  s.hash_queue_depth)

    def hold_files(self) -> Iterator[Path]:
        """Every entry in hold that looks like a queue file (hashed or flat)."""
        depth = (self.settings.hash_queue_depth
                 if "hold" in self.settings.hash_queue_names else 0)
        yield from _walk(self.hold_dir, depth)

    # -- claim ----------------------------------------------------------------------
    def claim(self, path: Path) -> Claim | None:
        """Open and lock a hold file if, and only if, it is ours to take now.

        None means "not now" — not a regular file, not a queue ID, not ready
        (Postfix renames into hold before it sets the executable bit), more
        than one link, locked by someone else, or gone — and is not an error.
        """
        name = path.name
        if not queueid.is_valid(name):
            return None
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if (not stat.S_ISREG(st.st_mode) or (st.st_mode & 0o700) != 0o700
                    or st.st_nlink != 1):
                raise _NotNow
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _NotNow from None
            # Between open and lock the name may have been moved (postsuper -H, -d).
            try:
                if os.stat(path).st_ino != st.st_ino:
                    raise _NotNow
            except FileNotFoundError:
                raise _NotNow from None
            st = os.fstat(fd)     # size as of now, under the lock
        except _NotNow:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return Claim(name, path, fd, st)

    def still_ours(self, claim: Claim) -> bool:
        try:
            return os.stat(claim.path).st_ino == claim.inode
        except FileNotFoundError:
            return False

    # -- release --------------------------------------------------------------------
    def release(self, claim: Claim, sync: bool = True) -> Path:
        """Rename hold/ID to incoming/ID. Same inode, same name (rules 4, 5)."""
        target = self.path("incoming", claim.queue_id)
        now = time.time()
        if claim.st.st_mtime > now:
            # qmgr leaves files with a future mtime alone until that time.
            os.utime(claim.fd, (now, now))
        self._remove_message_logs(claim.queue_id)
        crashpoint("release.before_rename")
        _rename_making_dirs(claim.path, target, self._owner_if_root())
        crashpoint("release.after_rename")
        if sync:
            fsync_dir(target.parent)
            fsync_dir(claim.path.parent)
        claim.close()
        return target

    def _remove_message_logs(self, queue_id: str) -> None:
        for q in PER_MESSAGE_LOGS:
            try:
                os.unlink(self.path(q, queue_id))
            except (FileNotFoundError, NotADirectoryError):
                pass

    # -- rewrite --------------------------------------------------------------------
    def write_new_file(self, data: bytes, directory: Path | None = None) -> str:
        """Create a complete, ready queue file in the temp dir, named from its inode.

        Made the way Postfix's cleanup makes one: O_CREAT|O_EXCL under a temp
        name, mode 0600, renamed to the ID built from the time and its own
        inode; written and fsync'd; only then chmod 0700 (rule 9). `directory`
        (on the queue's file system) instead of the temp dir: a quarantine
        release keeps its file in the entry until it commits.
        """
        where = directory or self.tmp_dir
        now = time.time()
        sec, usec = int(now), int((now % 1) * 1_000_000)
        temp = where / f"{usec}.{os.getpid()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            ino = os.fstat(fd).st_ino
            new_id = queueid.make_id(sec, usec, ino, self.settings.long_queue_ids)
            os.rename(temp, where / new_id)
            crashpoint("rewrite.after_create")
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if os.geteuid() == 0:
                os.fchown(fd, *self.owner)
            crashpoint("rewrite.after_write")
            os.fsync(fd)
            os.fchmod(fd, 0o700)
            os.fsync(fd)
        finally:
            os.close(fd)
        return new_id

    def rewrite(self, claim: Claim, contents: list[bytes],
                quarantine: dict[str, object] | None = None) -> list[str]:
        """Replace the held file by new queue files (rules 5, 7, 8, 9).

        The original is never modified. New files are complete on stable
        storage before the journal commit; the original is retired only after
        it; the new files move into incoming last. No files: the message is
        discarded. With `quarantine` (its metadata), the original is also
        stored in the quarantine, in the same commit: a message split between
        recipients whose policies differ (op "split").

            build the quarantine copy (.tmp-ID) and the new files (tmp/)
            commit                  <- before: nothing happened; after: all of it will
            store the copy          (rename .tmp-ID -> ID)
            retire the original     (unlink hold/ID)
            move the new files      (rename tmp/NEW -> incoming/NEW)

        Returns the new queue IDs; the quarantine entry is quarantine_id(claim).
        """
        op = "split" if quarantine is not None else "rewrite"
        qid = self._prepare_quarantine(claim, quarantine) if quarantine is not None else ""
        new_ids = [self.write_new_file(data) for data in contents]
        fsync_dir(self.tmp_dir)
        crashpoint(f"{op}.before_commit")
        self.journal.commit(Entry(op, claim.queue_id, claim.inode, new_ids=new_ids,
                                  quarantine_id=qid), self._owner_if_root())
        crashpoint(f"{op}.after_commit")
        if qid:
            self._store_quarantined(qid)
            crashpoint("split.after_store")
        self._retire(claim)
        crashpoint(f"{op}.after_retire")
        self._move_into_incoming(new_ids)
        crashpoint(f"{op}.after_release")
        self.journal.done(claim.queue_id)
        return new_ids

    def _retire(self, claim: Claim) -> None:
        if self.still_ours(claim):
            os.unlink(claim.path)
            fsync_dir(claim.path.parent)
        claim.close()

    def _move_into_incoming(self, new_ids: list[str]) -> None:
        parents = set()
        for new_id in new_ids:
            src = self.tmp_dir / new_id
            target = self.path("incoming", new_id)
            try:
                _rename_making_dirs(src, target, self._owner_if_root())
            except FileNotFoundError:
                if not target.exists():
                    # Neither in tmp nor in incoming: qmgr has taken it already.
                    pass
            parents.add(target.parent)
        for p in parents:
            fsync_dir(p)

    def enter_incoming(self, src: Path) -> Path:
        """Rename a complete, ready queue file (named from its inode, on this file
        system) into incoming under its own name; fsync the directory."""
        target = self.path("incoming", src.name)
        _rename_making_dirs(src, target, self._owner_if_root())
        fsync_dir(target.parent)
        return target

    # -- quarantine -----------------------------------------------------------------
    def quarantine_id(self, claim: Claim) -> str:
        # Deterministic for one held file, so a repeated attempt finds its own entry.
        return f"{claim.queue_id}-{int(claim.st.st_mtime)}"

    def quarantine(self, claim: Claim, metadata: dict[str, object]) -> str:
        """Store an fsync'd copy of the queue file and its metadata, then unlink it.

        An entry is a directory QUARANTINE/<id>/ with `queuefile` (the bytes as
        Postfix wrote them) and `meta.json`. It is built complete under a
        temporary name, the journal commits, and only then is it renamed into
        place and the original removed; recovery finishes either step.
        """
        qid = self._prepare_quarantine(claim, metadata)
        crashpoint("quarantine.before_commit")
        self.journal.commit(Entry("quarantine", claim.queue_id, claim.inode, quarantine_id=qid),
                            self._owner_if_root())
        crashpoint("quarantine.after_commit")
        self._store_quarantined(qid)
        crashpoint("quarantine.after_store")
        self._retire(claim)
        crashpoint("quarantine.after_retire")
        self.journal.done(claim.queue_id)
        return qid

    def _prepare_quarantine(self, claim: Claim, metadata: dict[str, object]) -> str:
        """Build the entry complete under its temporary name; returns its ID."""
        qid = self.quarantine_id(claim)
        final = self.quarantine_dir / qid
        tmp = self.quarantine_dir / f".tmp-{qid}"
        if not final.exists():
            tmp.mkdir(mode=0o700, exist_ok=True)
            _write_synced(tmp / "queuefile", claim.read_bytes())
            meta = {**metadata, "id": qid, "queue_id": claim.queue_id, "inode": claim.inode,
                    "size": claim.st.st_size}
            _write_synced(tmp / "meta.json", json.dumps(meta, indent=1).encode())
            owner = self._owner_if_root()
            if owner:
                # The quarantine commands and the dispatcher (as mail_owner) must be
                # able to read and remove every entry, whoever stored it.
                for p in (tmp, tmp / "queuefile", tmp / "meta.json"):
                    os.chown(p, *owner)
            fsync_dir(tmp)
        return qid

    def _store_quarantined(self, qid: str) -> bool:
        """Move a committed entry into place. True if it is in place."""
        final = self.quarantine_dir / qid
        tmp = self.quarantine_dir / f".tmp-{qid}"
        if not final.exists() and tmp.exists():
            os.rename(tmp, final)
            fsync_dir(self.quarantine_dir)
        return final.exists()

    # -- the queue manager ------------------------------------------------------------
    def wake_qmgr(self) -> bool:
        """Ask qmgr to scan incoming now (`postkick public qmgr I`). False if it is not there."""
        path = self.queue_dir / "public" / "qmgr"
        try:
            st = os.stat(path)
            if stat.S_ISFIFO(st.st_mode):
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                try:
                    os.write(fd, b"I")
                finally:
                    os.close(fd)
            else:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect(str(path))
                    s.sendall(b"I\0")
            return True
        except OSError as e:
            log.warning("cannot wake the queue manager at %s: %s; it will find the mail at its "
                        "next periodic scan", path, e)
            return False

    # -- recovery ---------------------------------------------------------------------
    def recover(self) -> RecoveryReport:
        """Finish what a killed dispatcher left behind. Runs at every start.

        journal entry, original still in hold  -> remove it (rule 7: roll forward)
        journal entry, new file still in tmp    -> move it into incoming
        journal entry, quarantine copy          -> move the copy into place, remove the original
        journal entry, quarantine copy gone,    -> never remove the only copy: drop the entry
          original still in hold                   (and its new files); it is scanned again
        file in tmp that no entry names         -> never committed: remove it
                                                   (the original is still in hold)
        half-built quarantine entry (.tmp-*)    -> remove it
        """
        report = RecoveryReport()
        self.journal.remove_temporaries()
        committed: set[str] = set()
        for entry in self.journal.entries():
            if (entry.quarantine_id and not self._store_quarantined(entry.quarantine_id)
                    and self._find_held(entry.original) is not None):
                # Committed, but the copy is gone (removed by hand?) while the
                # original is still here: keep the only copy.
                self.journal.done(entry.original)
                continue
            committed.update(entry.new_ids)
            held = self._find_held(entry.original)
            if held is not None:
                claim = self.claim(held)
                if claim is None:
                    report.skipped_locked.append(entry.original)
                    continue
                if claim is not None:
                    if claim.inode == entry.inode:
                        self._retire(claim)
                    else:
                        claim.close()
            if entry.new_ids:
                self._move_into_incoming(entry.new_ids)
            self.journal.done(entry.original)
            report.rolled_forward.append(entry.original)
            log.info("recovered %s: %s rolled forward", entry.original, entry.kind)
        for p in self.tmp_dir.iterdir():
            if p.name not in committed:
                p.unlink()
                report.orphans_removed.append(p.name)
                log.info("removed %s from %s: a rewrite that never committed", p.name,
                         self.tmp_dir)
        for p in self.quarantine_dir.glob(".tmp-*"):
            for child in p.iterdir():
                child.unlink()
            p.rmdir()
            report.orphans_removed.append(p.name)
        if report.rolled_forward:
            self.wake_qmgr()
        return report

    def _find_held(self, queue_id: str) -> Path | None:
        depth = self.settings.hash_queue_depth if "hold" in self.settings.hash_queue_names else 0
        p = queueid.queue_path(self.queue_dir, "hold", queue_id,
                               {"hold"} if depth else set(), depth)
        return p if p.exists() else None

    def _owner_if_root(self) -> tuple[int, int] | None:
        return self.owner if os.geteuid() == 0 else None


class _NotNow(Exception):
    pass


def _walk(directory: Path, depth: int) -> Iterator[Path]:
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for e in entries:
        if depth > 0 and e.is_dir(follow_symlinks=False) and len(e.name) == 1:
            yield from _walk(Path(e.path), depth - 1)
        elif depth == 0:
            yield Path(e.path)


def _rename_making_dirs(src: Path, dst: Path, owner: tuple[int, int] | None = None) -> None:
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        if not src.exists():
            raise
        # A hashed queue's subdirectory may not exist yet; Postfix creates them on demand,
        # mode 0700 and owned by the mail owner, and so do we.
        missing = []
        d = dst.parent
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            d.mkdir(mode=0o700, exist_ok=True)
            if owner:
                os.chown(d, *owner)
        os.rename(src, dst)
    except OSError as e:
        if e.errno == errno.EXDEV:
            raise SpoolError(
                f"cannot rename {src} to {dst}: different file systems (rule 2)") from e
        raise


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
