"""The dispatcher's upkeep besides scanning: recovery at its start, settling an
operation that failed half-way, expiring old quarantine entries, and the web's
requests and digests (dispatcher/webrequests.py) when the web is set up.

Each logs what it did in the dispatcher's log; none of them stops mail flowing.
"""

from __future__ import annotations

import logging

from dispatcher.journal import JournalError
from dispatcher.park import settle_parks
from dispatcher.quarantine import QuarantineStore
from dispatcher.spool import Spool
from dispatcher.status import Stats
from dispatcher.webrequests import WebRequests
from shared.logging import event

log = logging.getLogger("holdscan.dispatcher")     # these are the dispatcher's lines


class Upkeep:
    def __init__(self, spool: Spool, stats: Stats, quarantine_days: int = 0,
                 web: WebRequests | None = None) -> None:
        self.spool = spool
        self.web = web
        self.stats = stats
        self.store = QuarantineStore(spool)
        self.quarantine_days = quarantine_days      # 0: keep entries for ever
        self.next_expiry = 0.0

    def recover(self) -> None:
        """At every start: finish or undo what a crash left (dispatcher/journal.py), in
        the spool, the quarantine store and interrupted parks."""
        report = self.spool.recover()
        if report.finished or report.undone or report.orphans_removed \
                or report.returned_to_hold:
            event(log, logging.INFO, "recovered after an unclean stop",
                  finished=len(report.finished), undone=len(report.undone),
                  orphans_removed=len(report.orphans_removed),
                  returned_to_hold=len(report.returned_to_hold))
        try:
            for what in self.store.recover(wait=False):
                event(log, logging.INFO, "quarantine recovered", what=what)
            with self.store.locked(wait=False) as got:
                for what in settle_parks(self.spool) if got else []:
                    event(log, logging.INFO, "settled an interrupted park", what=what)
        except OSError as e:
            # Mail must flow even if the quarantine store has a problem; say so loudly.
            self.stats.error(f"quarantine recovery: {e}")
            event(log, logging.ERROR, "cannot recover the quarantine store", error=str(e))

    def tick(self, now: float) -> None:
        """The web's requests (it paces itself); and once a day (by the monotonic clock
        `now`) expire old quarantine entries."""
        if self.web is not None:
            self.web.tick(now)
        if not self.quarantine_days or now < self.next_expiry:
            return
        self.next_expiry = now + 86400
        try:
            gone = self.store.expire(self.quarantine_days, wait=False)
        except OSError as e:
            self.stats.error(f"quarantine expiry: {e}")
            event(log, logging.ERROR, "quarantine expiry failed", error=str(e))
            return
        if gone:
            event(log, logging.INFO, "expired quarantine entries", count=len(gone),
                  days=self.quarantine_days)


def settle(spool: Spool, queue_id: str) -> bool:
    """Settle an operation that failed half-way; True once nothing is pending."""
    try:
        entry = spool.journal.get(queue_id)
        if entry is not None:
            outcome = spool.settle(entry)
            event(log, logging.INFO, "settled an interrupted operation", queue_id=queue_id,
                  kind=entry.kind, outcome=outcome)
    except (OSError, JournalError) as e:
        event(log, logging.ERROR, "cannot settle an interrupted operation yet",
              queue_id=queue_id, error=str(e))
        return False
    return True
