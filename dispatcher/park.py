"""Parked mail: messages a human wants kept out of delivery for now.

Postfix's hold queue is shared. `postsuper -h`, a milter's quarantine and
other HOLD rules park mail there too, and Postfix records no reason. holdscan
tells such mail apart by Postfix's own per-message logs: defer/, bounce/ and
trace/ files exist only for mail that was queued before (cleanup never makes
them), so held mail that has one was parked by someone else. The dispatcher
leaves it in hold, untouched, and lists it in `holdscan status`, until

    holdscan scan ID     asks the dispatcher to scan it and release it as new mail
                         (a request file STATE/scan/ID holding the file's inode)
    postsuper -H ID      releases it unscanned, as Postfix always did

Parking mail while holdscan runs is done with

    holdscan park ID     moves the queue file (from hold, incoming or deferred) into
                         the quarantine store, with the reason and who parked it;
                         `holdscan quarantine release` brings it back, once

A park is a spool operation like a quarantine (journaled; the rename of the
queue file into the entry is its commit point), run under the quarantine
store's lock. A park killed half-way is settled by the next park, and by the
dispatcher at its start; running the same park twice parks the message once.
"""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

from dispatcher import queuefile, queueid
from dispatcher.durable import write_file
from dispatcher.quarantine import QuarantineStore
from dispatcher.spool import Claim, MessageGone, Spool
from shared.headers import header_text

PARKABLE_QUEUES = ("hold", "incoming", "deferred")


class ParkError(ValueError):
    """park or scan cannot do what was asked; the message says why and what to do."""


def request_scan(spool: Spool, queue_id: str) -> Path:
    """Ask the dispatcher to scan a message parked in hold by someone else."""
    _check_id(queue_id)
    path = spool.find(queue_id, ("hold",))
    if path is None:
        raise ParkError(f"{queue_id} is not in hold (`postqueue -p` lists the queue)")
    request = spool.scan_requests_dir / queue_id
    write_file(request, f"{path.stat().st_ino}\n".encode(), mode=0o600,
               owner=spool.owner if os.geteuid() == 0 else None)
    return request


def scan_requested(spool: Spool, queue_id: str, inode: int) -> bool:
    """`holdscan scan ID` asked for this parked message to be scanned as new mail."""
    try:
        text = (spool.scan_requests_dir / queue_id).read_text().strip()
    except FileNotFoundError:
        return False
    return text in ("", str(inode))


def scan_request_done(spool: Spool, queue_id: str) -> None:
    try:
        os.unlink(spool.scan_requests_dir / queue_id)
    except FileNotFoundError:
        pass


def park(spool: Spool, queue_id: str, reason: str = "", wait: float = 10.0) -> tuple[str, bool]:
    """Move a queued message into the quarantine store. Returns (entry ID, parked now);
    parked now is False when an earlier park of it had already done so."""
    _check_id(queue_id)
    spool.prepare()
    store = QuarantineStore(spool)
    with store.locked():
        settle_parks(spool)
        path = spool.find(queue_id, PARKABLE_QUEUES)
        if path is None:
            earlier = [e for e in store.entries() if e.meta.get("queue_id") == queue_id
                       and e.meta.get("action") == "parked" and not e.meta.get("released_as")]
            if earlier:
                return earlier[-1].id, False
            raise ParkError(f"{queue_id} is in none of Postfix's queues "
                            f"({', '.join(PARKABLE_QUEUES)}); `postqueue -p` lists them")
        claim = _claim(spool, path, wait)
        try:
            qf = queuefile.parse(claim.read_bytes())
        except queuefile.QueueFileError as e:
            claim.close()
            raise ParkError(f"{queue_id} is not a queue file holdscan can read ({e}); "
                            "leave it to postsuper") from None
        meta = {"time": time.time(), "sender": qf.sender, "action": "parked",
                "recipients": [r.address for r in qf.recipients if not r.done],
                "reason": reason or "parked by an administrator", "parked_by": _who(),
                "subject": _subject(qf), "verdict": None, "policy": []}
        try:
            return spool.quarantine(claim, meta, kind="park"), True
        except MessageGone:
            raise ParkError(f"{queue_id} left {claim.queue} while it was being parked "
                            "(postsuper or qmgr); nothing was done") from None


def settle_parks(spool: Spool) -> list[str]:
    """Finish or undo parks that were killed half-way (call under the store's lock)."""
    done = []
    for entry in spool.journal.entries():
        if entry.kind == "park":
            done.append(f"{entry.original}: {spool.settle(entry)}")
    return done


def _claim(spool: Spool, path: Path, wait: float) -> Claim:
    # The dispatcher holds a held message's lock while it is scanned, qmgr an incoming
    # one's while it looks at it: both are short, so wait a little.
    deadline = time.monotonic() + wait
    while True:
        claim = spool.claim(path)
        if claim is not None:
            return claim
        if not path.exists():
            raise ParkError(f"{path.name} left {path.parent.name} meanwhile; look for it "
                            "with `postqueue -p`")
        if time.monotonic() > deadline:
            raise ParkError(f"{path.name} is locked (being scanned or delivered); try again "
                            "in a minute")
        time.sleep(0.2)


def _check_id(queue_id: str) -> None:
    if not queueid.is_valid(queue_id):
        raise ParkError(f"{queue_id!r} is not a Postfix queue ID (as `postqueue -p` shows)")


def _subject(qf: queuefile.QueueFile) -> str:
    return header_text(qf.message_bytes(b"\r\n"), "Subject")


def _who() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
