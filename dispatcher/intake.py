"""Held mail to claim: the files in hold, oldest first, and which of them to scan.

inotify and the periodic rescan (the safety net under inotify) name candidates;
claim() takes them in order, flocks each (dispatcher/spool.py, rule 10) and
parses it, and puts what it could into flight. A candidate is passed over

    for now      while it is in flight or waits out a backoff (dispatcher/inflight.py),
                 while an operation on it that failed half-way cannot be settled yet,
                 or while somebody else holds its lock;
    for good     (this inode) when it cannot be parsed or a policy said `hold`: a
                 human decides (left_for_human);
    while parked by somebody else: Postfix's logs show it was queued before, until
                 `holdscan scan ID` (dispatcher/park.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path

from dispatcher import park, queuefile, upkeep
from dispatcher.inflight import InFlight, Tracker
from dispatcher.spool import Spool
from dispatcher.status import Stats
from shared.crashpoints import crashpoint
from shared.logging import event

log = logging.getLogger("holdscan.dispatcher")     # these are the dispatcher's lines


class Intake:
    def __init__(self, spool: Spool, stats: Stats, rescan_interval: float = 30.0) -> None:
        self.spool = spool
        self.stats = stats
        self.metrics = stats.metrics
        self.rescan_interval = rescan_interval
        self.next_rescan = 0.0
        # Paths as strings: a backlog of 100,000 held files costs ~15 MB here, not ~50.
        self.candidates: OrderedDict[str, None] = OrderedDict()
        self.left_for_human: set[tuple[str, int]] = set()   # unparseable, or policy "hold"
        self.parked: dict[str, list[str]] = {}      # queue ID -> its Postfix logs
        self.unsettled: set[str] = set()            # journal entries to settle again
        self.scan_requested: set[str] = set()       # parked, in flight by `holdscan scan`
        self.hold_depth = 0

    def __len__(self) -> int:
        return len(self.candidates)

    def add(self, path: Path | None) -> None:
        """A path to look at; None: everything in hold."""
        if path is None:
            self.rescan()
        else:
            self.candidates[str(path)] = None

    def start(self) -> None:
        self.rescan()
        self.next_rescan = time.monotonic() + self.rescan_interval

    def tick(self, now: float) -> None:
        """The periodic rescan, the safety net under inotify (by the monotonic clock).
        It also settles operations that failed half-way: one that failed after its take
        has its original in custody, out of hold, where no rescan would find it."""
        if now >= self.next_rescan:
            for qid in list(self.unsettled):
                self._settle(qid)
            self.rescan()
            self.next_rescan = now + self.rescan_interval

    def rescan(self) -> None:
        """Every file in hold as a candidate; those not already waiting to be claimed are
        added oldest first. Only those are stat'ed: with a backlog waiting, a rescan costs
        one listing of hold, not a stat and a new path for each of its files (at 50,000
        held that was a second of CPU per rescan, every rescan_interval)."""
        found, depth = [], 0
        for p in self.spool.hold_paths():
            depth += 1
            if p in self.candidates:
                continue
            try:
                found.append((os.stat(p).st_mtime, p))
            except FileNotFoundError:
                continue
        found.sort()
        self.candidates.update((p, None) for _, p in found)
        self.metrics.hold_depth.set(depth)
        self.hold_depth = depth

    def claim(self, in_flight: Tracker, max_in_flight: int) -> None:
        """Claim candidates into `in_flight` until it holds max_in_flight."""
        while self.candidates and len(in_flight) < max_in_flight:
            name, _ = self.candidates.popitem(last=False)
            path = Path(name)
            qid = path.name
            if not in_flight.may_claim(qid) or (qid in self.unsettled and not self._settle(qid)):
                continue
            claim = self.spool.claim(path)
            if claim is None:
                continue
            if (qid, claim.inode) in self.left_for_human:
                claim.close()
                continue
            # Postfix's logs: it was queued before (cleanup never writes them).
            logs = self.spool.message_logs(qid)
            if logs and park.scan_requested(self.spool, qid, claim.inode):
                self.scan_requested.add(qid)
            elif logs:
                # Queued before (cleanup never writes these logs): somebody parked it in
                # hold on purpose. Not ours until `holdscan scan ID`.
                claim.close()
                if qid not in self.parked:
                    event(log, logging.INFO, "parked by someone else; left in hold (holdscan "
                          "scan ID to scan and release it)", queue_id=qid, logs=",".join(logs))
                self.parked[qid] = logs
                continue
            self.parked.pop(qid, None)
            crashpoint("dispatch.after_claim")
            try:
                qf = queuefile.parse(claim.read_bytes())
                message = qf.message_bytes(b"\r\n")
            except queuefile.QueueFileError as e:
                self.left_for_human.add((qid, claim.inode))
                claim.close()
                self.stats.error(f"{qid}: cannot parse: {e}", "unparseable")
                event(log, logging.ERROR, "cannot parse queue file; leaving it in hold for a "
                      "human (inspect with `postcat -q ID`, release unscanned with "
                      "`postsuper -H ID`)", queue_id=qid, error=str(e))
                continue
            in_flight.add(InFlight(claim, qf, hashlib.sha256(message).hexdigest()))
        self.metrics.in_flight.set(len(in_flight))

    def done(self, qid: str) -> None:
        """Its message has left hold: a `holdscan scan` request for it is spent."""
        if qid in self.scan_requested:
            self.scan_requested.discard(qid)
            park.scan_request_done(self.spool, qid)

    def status(self) -> dict[str, object]:
        """For `holdscan status`."""
        return {"hold_depth": self.hold_depth, "parked": dict(self.parked)}

    def _settle(self, qid: str) -> bool:
        if not upkeep.settle(self.spool, qid):
            return False
        self.unsettled.discard(qid)
        return True
