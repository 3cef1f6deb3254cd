"""Operations on Postfix's spool, and the rules they obey.

The rules are Postfix's author's, numbered as he numbered them; docs/rules.md
has the same table with the test that proves each one.

 rule                                      what this module does
 2  one file system for every queue        prepare() refuses hold, incoming, state and
                                           quarantine directories on different devices
 4  move queue files only by rename        release, take, store and move_into_incoming
                                           are os.rename; nothing is copied into a queue
 5  name <-> inode                         released files keep their name; new files
                                           are named from their own inode (write_new_file)
 7  crash-proof, nothing to undo by hand   every operation is journaled and settled at
                                           start (recover); see the table below
 8  never modify a queue file in place     a rewrite writes new files; the original is
                                           only ever renamed, never written
 9  ready (0700) only once stable          new files are written 0600, fsync'd, then
                                           chmod 0700 and fsync'd again
 10 never touch a file under lock          claim() takes flock(LOCK_EX|LOCK_NB); busy = not now

What can happen to a held file while it is claimed, and by whom:

 actor                     what it does              what holdscan does
 postsuper -d ID           unlinks hold/ID           the take fails (ENOENT): the operation is
                                                     undone, nothing is delivered or stored
 postsuper -H ID / -r ID   renames it out of hold    the same: the message is Postfix's again
 postsuper -h, other HOLD  parks mail in hold        mail with defer/bounce/trace logs was queued
                                                     before: left alone (Intake.parked)
 qmgr                      flocks incoming files     our lock is let go just before the
                                                     release rename, never held in incoming
 a second dispatcher       the same operations       refused at start (lock_dispatcher)
 power loss                drops unsynced changes    every step is fsync'd in the order below

How an operation that replaces the held file runs (rewrite, quarantine, split):

    prepare   new files in tmp/ (0600, fsync, 0700), the quarantine entry's meta
    commit    journal entry naming all of it (fsync'd)
    take      rename hold/ID into custody: taken/ID, or the quarantine entry.
              While the claim's descriptor is open the inode is pinned, so a
              name that still exists is ours; ENOENT means somebody else
              (postsuper) moved the message first: undo, never roll forward.
    finish    store the quarantine entry, move new files into incoming,
              drop the custody copy, remove the journal entry

Recovery (recover, at every start, and settle after any failure) reads the
journal entry and looks where the original is:

 journal entry, original in custody        -> finish: entry stored, new files into
                                              incoming, custody copy removed
 journal entry, original not in custody    -> undo: remove its new files and its
                                              half-built entry; the message, if still
                                              in hold, is scanned again
 file in tmp/ that no entry names          -> never committed: remove it
 entry under construction, no journal      -> without a queue file: remove it; with one
                                              (cannot happen, but): store it, never lose it
 file in custody that no entry names       -> put it back into hold (scanned again)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pwd
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher import durable, queueid
from dispatcher.durable import fsync_dir
from dispatcher.journal import Entry, Journal
from dispatcher.postfix import PostfixSettings
from dispatcher.quarantine import QuarantineDir
from shared.crashpoints import crashpoint

log = logging.getLogger("holdscan.spool")

# Logs Postfix keeps per queue ID. Mail that has them was queued before (cleanup
# never makes them): it was parked in hold by someone else, and they stay with it.
PER_MESSAGE_LOGS = ("defer", "bounce", "trace")

class SpoolError(OSError):
    """The spool cannot be used as configured, or an operation could not be done;
    the message says what to change."""


class MessageGone(SpoolError):
    """The message left its queue while we held it (postsuper -d, -H, -r): it is
    not ours any more, and nothing was done to it."""


@dataclass
class Claim:
    """A queue file we have opened and locked. The lock lives as long as `fd`,
    and so does the inode: no other file can take this name meanwhile."""

    queue_id: str
    path: Path
    fd: int
    st: os.stat_result
    queue: str = "hold"

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
    finished: list[str] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    orphans_removed: list[str] = field(default_factory=list)
    returned_to_hold: list[str] = field(default_factory=list)


class Spool:
    def __init__(self, settings: PostfixSettings, state_dir: str | Path = "",
                 quarantine_dir: str | Path = "") -> None:
        self.settings = settings
        self.queue_dir = settings.queue_directory
        self.hold_dir = self.queue_dir / "hold"
        self.incoming_dir = self.queue_dir / "incoming"
        self.state_dir = Path(state_dir) if state_dir else self.queue_dir / "holdscan"
        self.tmp_dir = self.state_dir / "tmp"
        self.custody_dir = self.state_dir / "taken"
        self.scan_requests_dir = self.state_dir / "scan"     # `holdscan scan ID`
        self.journal = Journal(self.state_dir / "journal")
        self.quarantine_dir = (Path(quarantine_dir) if quarantine_dir
                               else self.state_dir / "quarantine")
        try:
            pw = pwd.getpwnam(settings.mail_owner)
        except KeyError:
            raise SpoolError(f"mail_owner {settings.mail_owner!r} is not a user on this host; "
                             "check `postconf mail_owner`") from None
        self.owner = (pw.pw_uid, pw.pw_gid)
        self.quarantine_entries = QuarantineDir(self.quarantine_dir, self._owner_if_root())
        self._lock_fd = -1

    # -- set-up ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Create holdscan's directories (durably) and check rule 2. Raises SpoolError."""
        for d in (self.hold_dir, self.incoming_dir):
            if not d.is_dir():
                raise SpoolError(f"{d} does not exist: is {self.queue_dir} Postfix's "
                                 "queue_directory? (`postconf -h queue_directory`)")
        for d in (self.state_dir, self.tmp_dir, self.custody_dir, self.journal.dir,
                  self.quarantine_dir, self.scan_requests_dir):
            durable.make_dirs(d, 0o700, self._owner_if_root())
            if os.geteuid() == 0:
                os.chown(d, *self.owner)    # also one that root made by hand
        self.check_same_filesystem()

    def check_same_filesystem(self) -> None:
        """Rule 2: hold, incoming and holdscan's own directories share one file system,
        so that every move between them is an atomic rename, never a copy."""
        dirs = [self.hold_dir, self.incoming_dir, self.tmp_dir, self.custody_dir,
                self.journal.dir, self.quarantine_dir]
        devices = {d: os.stat(d).st_dev for d in dirs}
        if len(set(devices.values())) > 1:
            listing = ", ".join(f"{d} (device {dev})" for d, dev in devices.items())
            raise SpoolError(
                "hold, incoming and holdscan's state and quarantine directories must be on one "
                f"file system, so that messages move by rename only: {listing}. Put the "
                "state_dir and quarantine_dir inside Postfix's queue_directory file system.")

    def lock_dispatcher(self) -> None:
        """One dispatcher per spool: a lock on the state directory, held for the life
        of the process (the descriptor is never closed). Raises SpoolError if taken."""
        if self._lock_fd >= 0:
            return
        path = self.state_dir / "dispatcher.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SpoolError(
                f"another dispatcher (pid {holder}) is running on this spool ({path} is "
                "locked); two would take each other's mail. Stop it first (systemctl stop "
                "holdscan-dispatcher), or run this one against its own Postfix instance") \
                from None
        if os.geteuid() == 0:
            os.fchown(fd, *self.owner)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    # -- paths ----------------------------------------------------------------------
    def path(self, queue: str, queue_id: str) -> Path:
        s = self.settings
        return queueid.queue_path(self.queue_dir, queue, queue_id, s.hash_queue_names,
                                  s.hash_queue_depth)

    def hold_files(self) -> Iterator[Path]:
        """Every entry in hold that looks like a queue file (hashed or flat)."""
        return (Path(p) for p in self.hold_paths())

    def hold_paths(self) -> Iterator[str]:
        """hold_files() as strings: a listing of a large hold without a Path for each."""
        depth = (self.settings.hash_queue_depth
                 if "hold" in self.settings.hash_queue_names else 0)
        yield from _walk(str(self.hold_dir), depth)

    def message_logs(self, queue_id: str) -> list[str]:
        """Which of Postfix's per-message logs (defer, bounce, trace) this ID has."""
        s = self.settings
        return [q for q in PER_MESSAGE_LOGS if os.path.exists(queueid.queue_path_str(
            self.queue_dir, q, queue_id, s.hash_queue_names, s.hash_queue_depth))]

    def find(self, queue_id: str, queues: tuple[str, ...] = ("hold",)) -> Path | None:
        for q in queues:
            p = self.path(q, queue_id)
            if p.exists():
                return p
        return None

    # -- claim ----------------------------------------------------------------------
    def claim(self, path: Path) -> Claim | None:
        """Open and lock a queue file if, and only if, it is ours to take now.

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
        queue = path.relative_to(self.queue_dir).parts[0] if path.is_relative_to(
            self.queue_dir) else "hold"
        return Claim(name, path, fd, st, queue)

    # -- release --------------------------------------------------------------------
    def release(self, claim: Claim, sync: bool = True) -> Path:
        """Rename hold/ID to incoming/ID. Same inode, same name (rules 4, 5).

        Postfix's per-message logs stay where they are, as postsuper -H leaves
        them. MessageGone if the file left hold meanwhile (postsuper). With
        sync=False the caller fsyncs both directories (the target's parent and
        claim.path.parent) before it tells qmgr.
        """
        target = self.path("incoming", claim.queue_id)
        now = time.time()
        if claim.st.st_mtime > now:
            # qmgr leaves files with a future mtime alone until that time.
            os.utime(claim.fd, (now, now))
        crashpoint("release.before_rename")
        # Unlocked before it lands in incoming: qmgr, scanning incoming at any moment under
        # load, puts a file it finds locked back with its time stamp a minute ahead and then
        # skips it; with no later wake-up the message waits for master's 300 s wake-up.
        # The open descriptor still pins the inode, so the name we rename is ours.
        fcntl.flock(claim.fd, fcntl.LOCK_UN)
        try:
            self._rename(claim.path, target)
        except FileNotFoundError:
            claim.close()
            raise MessageGone(f"{claim.queue_id} left {claim.queue} while it was being "
                              "scanned (postsuper?)") from None
        crashpoint("release.after_rename")
        if sync:
            fsync_dir(target.parent)
            fsync_dir(claim.path.parent)
        claim.close()
        return target

    def move_into_incoming(self, src: Path) -> Path:
        """Rename a complete, ready queue file (named from its inode, on this file
        system) into incoming under its own name; fsync both directories."""
        target = self.path("incoming", src.name)
        self._rename(src, target)
        fsync_dir(target.parent)
        fsync_dir(src.parent)
        return target

    # -- new queue files ---------------------------------------------------------------
    def write_new_file(self, data: bytes, directory: Path | None = None) -> str:
        """Create a complete, ready queue file in the temp dir, named from its inode.

        Made the way Postfix's cleanup makes one: O_CREAT|O_EXCL under a temp
        name, mode 0600, renamed to the ID built from the time and its own
        inode; written and fsync'd; only then chmod 0700 (rule 9). `directory`
        (on the queue's file system) instead of the temp dir: a quarantine
        release keeps its file in the entry until it commits. The caller
        fsyncs the directory.
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
            durable.write_all(fd, data)
            if os.geteuid() == 0:
                os.fchown(fd, *self.owner)
            crashpoint("rewrite.after_write")
            os.fsync(fd)
            os.fchmod(fd, 0o700)
            os.fsync(fd)
        finally:
            os.close(fd)
        return new_id

    # -- replacing a queue file: rewrite, quarantine, split, park ------------------------
    def rewrite(self, claim: Claim, contents: list[bytes],
                quarantine: dict[str, object] | None = None) -> list[str]:
        """Replace the held file by new queue files (rules 5, 7, 8, 9).

        No files: the message is discarded. With `quarantine` (its metadata)
        the original goes into the quarantine store in the same operation: a
        message split between recipients whose policies differ. Returns the
        new queue IDs; MessageGone if the original left hold meanwhile.
        """
        kind = "split" if quarantine is not None else "rewrite"
        return self._replace(claim, kind, contents, quarantine)

    def quarantine(self, claim: Claim, metadata: dict[str, object],
                   kind: str = "quarantine") -> str:
        """Move the queue file into the quarantine store. Returns the entry's ID."""
        self._replace(claim, kind, [], metadata)
        return self.quarantine_id(claim)

    def quarantine_id(self, claim: Claim) -> str:
        # Deterministic for one queue file, so a repeated attempt finds its own entry.
        return f"{claim.queue_id}-{int(claim.st.st_mtime)}"

    def _replace(self, claim: Claim, kind: str, contents: list[bytes],
                 metadata: dict[str, object] | None) -> list[str]:
        entry_id = ""
        if metadata is not None:
            entry_id = self.quarantine_id(claim)
            self.quarantine_entries.prepare(entry_id, {
                **metadata, "id": entry_id, "queue_id": claim.queue_id, "inode": claim.inode,
                "size": claim.st.st_size, "from_queue": claim.queue})
        new_ids = [self.write_new_file(data) for data in contents]
        fsync_dir(self.tmp_dir)
        entry = Entry(kind, claim.queue_id, claim.inode, new_ids=new_ids,
                      quarantine_id=entry_id, queue=claim.queue)
        crashpoint(f"{kind}.before_commit")
        self.journal.commit(entry, self._owner_if_root())
        crashpoint(f"{kind}.after_commit")
        try:
            self._take(entry, claim)
        except BaseException:
            claim.close()
            self.settle(entry)      # taken: finish; not taken: undo
            raise
        crashpoint(f"{kind}.after_take")
        claim.close()
        self._finish(entry)
        return new_ids

    def _custody(self, entry: Entry) -> Path:
        if entry.quarantine_id:
            return self.quarantine_entries.custody(entry.quarantine_id)
        return self.custody_dir / entry.original

    def _take(self, entry: Entry, claim: Claim) -> None:
        """The commit point: rename the original into our custody. Only a name that
        still points to the claimed inode can be renamed, so success proves the
        message was ours; ENOENT means somebody else had it first."""
        missing = [n for n in entry.new_ids if not (self.tmp_dir / n).exists()]
        if entry.quarantine_id and not self.quarantine_entries.is_prepared(entry.quarantine_id):
            missing.append(str(self.quarantine_entries.building(entry.quarantine_id)))
        if missing:
            raise SpoolError(f"{entry.original}: files prepared for the {entry.kind} are "
                             f"gone ({', '.join(missing)}); the message stays where it is")
        custody = self._custody(entry)
        try:
            os.rename(claim.path, custody)
        except FileNotFoundError:
            raise MessageGone(f"{entry.original} left {entry.queue} while it was being "
                              "scanned (postsuper?)") from None
        fsync_dir(custody.parent)
        fsync_dir(claim.path.parent)

    def _taken(self, entry: Entry) -> bool:
        """Is the original in our custody? Judged by its inode, never by a name alone."""
        if entry.quarantine_id:
            places = [self.quarantine_entries.custody(entry.quarantine_id),
                      self.quarantine_dir / entry.quarantine_id / "queuefile"]
        else:
            places = [self.custody_dir / entry.original]
        for p in places:
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_ino == entry.inode:
                return True
        return False

    def _finish(self, entry: Entry) -> None:
        """Everything after the take; each step idempotent."""
        if entry.quarantine_id:
            self.quarantine_entries.store(entry.quarantine_id)
            crashpoint(f"{entry.kind}.after_store")
        moved = False
        for new_id in entry.new_ids:
            src = self.tmp_dir / new_id
            if src.exists():
                target = self.path("incoming", new_id)
                self._rename(src, target)
                fsync_dir(target.parent)
                moved = True
        if moved:
            fsync_dir(self.tmp_dir)
        crashpoint(f"{entry.kind}.after_release")
        if not entry.quarantine_id:
            try:
                os.unlink(self.custody_dir / entry.original)
                fsync_dir(self.custody_dir)
            except FileNotFoundError:
                pass
        # The original's queue ID is gone from Postfix's queues, as after postsuper -d:
        # so are its per-message logs (a parked message's defer log, say).
        for q in PER_MESSAGE_LOGS:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(self.path(q, entry.original))
        self.journal.done(entry.original)

    def _undo(self, entry: Entry) -> None:
        """The original was not taken: remove what the operation made."""
        removed = False
        for new_id in entry.new_ids:
            try:
                os.unlink(self.tmp_dir / new_id)
                removed = True
            except FileNotFoundError:
                pass
        if removed:
            fsync_dir(self.tmp_dir)
        if entry.quarantine_id:
            self.quarantine_entries.abandon(entry.quarantine_id)
        self.journal.done(entry.original)

    def settle(self, entry: Entry) -> str:
        """Finish or undo a journaled operation, by where its original is. Returns
        "finished" or "undone"."""
        if self._taken(entry):
            self._finish(entry)
            return "finished"
        self._undo(entry)
        return "undone"

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
        """Settle what a killed dispatcher (or power cut) left. Runs at every start,
        under the dispatcher lock; the table is in this module's docstring."""
        report = RecoveryReport()
        self.journal.remove_temporaries()
        named: set[str] = set()
        entries_named: set[str] = set()
        custody_named: set[str] = set()
        for entry in self.journal.entries():
            named.update(entry.new_ids)
            entries_named.add(entry.quarantine_id)
            custody_named.add(entry.original)
            if entry.kind == "park":
                continue        # a `holdscan park` settles its own, under the store's lock
            outcome = self.settle(entry)
            (report.finished if outcome == "finished" else report.undone).append(entry.original)
            log.info("recovered %s: %s %s", entry.original, entry.kind, outcome)
        for p in self.tmp_dir.iterdir():
            if p.name not in named:
                p.unlink()
                report.orphans_removed.append(p.name)
                log.info("removed %s from %s: a rewrite that never committed", p.name,
                         self.tmp_dir)
        if report.orphans_removed:
            fsync_dir(self.tmp_dir)
        for entry_id in self.quarantine_entries.leftovers():
            if entry_id in entries_named:
                continue
            if self.quarantine_entries.is_taken(entry_id):
                # Cannot happen by the protocol; if it does, the entry holds the only copy.
                self.quarantine_entries.store(entry_id)
                log.warning("stored quarantine entry %s found under construction", entry_id)
            else:
                self.quarantine_entries.abandon(entry_id)
                report.orphans_removed.append(entry_id)
        for p in self.custody_dir.iterdir():
            if p.name in custody_named:
                continue
            # Cannot happen by the protocol either: never lose it, give it back to hold.
            target = self.path("hold", p.name)
            if not target.exists():
                self._rename(p, target)
                fsync_dir(target.parent)
                fsync_dir(self.custody_dir)
                report.returned_to_hold.append(p.name)
                log.warning("returned %s from %s to hold", p.name, self.custody_dir)
        if report.finished:
            self.wake_qmgr()
        return report

    def _rename(self, src: Path, dst: Path) -> None:
        """os.rename, creating a hashed queue's missing subdirectories (durably)."""
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            if not src.exists():
                raise
            # Postfix creates hashed subdirectories on demand, mode 0700, owned by the
            # mail owner, and so do we.
            durable.make_dirs(dst.parent, 0o700, self._owner_if_root())
            os.rename(src, dst)
        except OSError as e:
            if e.errno == errno.EXDEV:
                raise SpoolError(
                    f"cannot rename {src} to {dst}: different file systems (rule 2)") from e
            raise

    def _owner_if_root(self) -> tuple[int, int] | None:
        return self.owner if os.geteuid() == 0 else None


class _NotNow(Exception):
    pass


def _walk(directory: str, depth: int) -> Iterator[str]:
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for e in entries:
        if depth > 0 and e.is_dir(follow_symlinks=False) and len(e.name) == 1:
            yield from _walk(e.path, depth - 1)
        elif depth == 0:
            yield e.path
