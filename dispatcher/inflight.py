"""Messages in flight, and when each is sent again, tried again, or given up on.

A message is in flight from its claim until its verdict is applied (or it is
left in hold). The dispatcher's loop tells a Tracker what happened and does
what it answers, log lines included. A Tracker reads and writes the attempt
counts (dispatcher/attempts.py, which holds all the SQL) and lets go of a
claim when its message is done; it touches nothing else, and it reads the
time from the clock it is given, so each rule below is a unit test
(tests/dispatcher/test_inflight.py).

    what happened                      what then
    no verdict, no worker started it   sent again after dispatcher.verdict_deadline,
                                       uncounted (no worker took it)
    no verdict, a worker started it    sent again, alone, after broker.task_time_limit
                                       + VERDICT_MARGIN (the worker died on it: an
                                       attempt, counted when it started)
    started > max_attempts times       given up on
    error verdict blaming the message  counted; after max_attempts given up on, else
                                       tried again after 2**n seconds (at most 300)
    error verdict, a component down    not counted; tried again after 2**n seconds
    the broker refuses a batch         the batch waits: 0.5 s, doubling up to 30 s

Given up on, a message gets the verdict gave_up_verdict() makes, an error,
so that the policy's `error` action decides (dispatcher/disposition.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from dispatcher import queuefile
from dispatcher.attempts import Attempts
from dispatcher.spool import Claim
from shared.config import Config
from shared.contract import Finding, HeaderEdit, ScanRequest, Verdict
from shared.logging import LogLine

# How long after a worker started a batch its verdict may take: the worker's hard time
# limit (broker.task_time_limit) plus this, for the verdict's way back.
VERDICT_MARGIN = 30.0
MAX_RETRY_DELAY = 300.0


@dataclass
class InFlight:
    claim: Claim
    qf: queuefile.QueueFile
    sha256: str = ""              # of `message`
    request: ScanRequest | None = None
    sent_at: float = 0.0          # 0: not handed over yet
    started_at: float = 0.0       # 0: no worker has said it started this message
    solo: bool = False            # send alone: its last batch died without a verdict

    @property
    def message(self) -> bytes:
        """The message as the workers get it (CRLF). Made again when needed rather than
        kept: with thousands in flight its copy was a fifth of the dispatcher's memory."""
        return self.qf.message_bytes(b"\r\n")


@dataclass(frozen=True)
class Retry:
    """An error verdict: the message stays in hold and is tried again after `delay`."""

    delay: float
    why: str
    line: LogLine


@dataclass(frozen=True)
class GiveUp:
    """No verdict will come. `verdict` says so, an error blamed on the message as if a
    worker had said it, so that the policy's `error` action decides."""

    inf: InFlight
    verdict: Verdict


@dataclass(frozen=True)
class Overdue:
    """Messages sent again for want of a verdict."""

    lines: list[LogLine]            # one per message a worker started and died on
    idle: int                       # how many no worker started in time
    workers: str                    # if idle, the workers' state: "down: why"


class Tracker:
    """Every message in flight by queue ID, and the ones that wait to be tried again.
    len() is how many are in flight."""

    def __init__(self, attempts: Attempts, max_attempts: int, verdict_deadline: float,
                 task_time_limit: float, queue: str = "holdscan", status_header: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts = attempts
        self.queue = queue                          # the broker's, for messages
        self.status_header = status_header         # given up on: says "unscanned (why)"
        self.max_attempts = max_attempts
        self.verdict_deadline = verdict_deadline
        self.started_deadline = task_time_limit + VERDICT_MARGIN
        self.clock = clock
        self.messages: dict[str, InFlight] = {}
        self.unsent: list[str] = []                 # claimed, waiting for the next batch
        self.retry_at: dict[str, float] = {}        # queue ID -> not before (error backoff)
        self.errors_in_a_row: dict[str, int] = {}
        self.waiting: dict[str, str] = {}           # queue ID -> why it waits (error verdicts)
        self.batch_started = 0.0                    # when the oldest unsent was claimed
        self._done: list[str] = []                  # since take_done
        self._forget: list[str] = []                # attempt rows to drop (forget_done)
        self._broker_until = 0.0
        self._broker_backoff = 0.5

    @classmethod
    def from_config(cls, attempts: Attempts, cfg: Config) -> Tracker:
        h = cfg.headers
        return cls(attempts, cfg.dispatcher.max_attempts, cfg.dispatcher.verdict_deadline,
                   cfg.broker.task_time_limit, cfg.broker.queue,
                   f"{h.prefix}-Status" if h.add_status_header else "")

    def __len__(self) -> int:
        return len(self.messages)

    # -- claiming and sending ------------------------------------------------------------
    def may_claim(self, queue_id: str) -> bool:
        return queue_id not in self.messages and self.retry_at.get(queue_id, 0) <= self.clock()

    def add(self, inf: InFlight) -> None:
        self.messages[inf.claim.queue_id] = inf
        self.unsent.append(inf.claim.queue_id)

    def batch_due(self, size: int, wait: float, draining: bool) -> bool:
        """Whether to hand the unsent messages over now: a full batch, or the oldest has
        waited `wait` seconds, or nothing more is coming (draining)."""
        if not self.unsent:
            return False
        now = self.clock()
        self.batch_started = self.batch_started or now
        return len(self.unsent) >= size or now - self.batch_started >= wait or draining

    def batch_wait(self, wait: float) -> float:
        """How long the unsent may still wait for more."""
        return max(0.0, wait - (self.clock() - self.batch_started))

    def may_submit(self) -> bool:
        return self.clock() >= self._broker_until

    def take_batches(self, size: int) -> list[list[str]]:
        """The unsent messages' IDs, in batches of `size`; they are unsent no more
        (not_sent puts them back). A message whose batch died without a verdict goes
        alone, so that one poison message cannot use up the attempts of the others it was
        batched with. Only IDs: each batch's requests and bytes are made by `requests`
        when it is handed over, so that a backlog's thousands of claims never have their
        message bytes in memory all at once."""
        ids = [q for q in self.unsent if q in self.messages]
        self.unsent = []
        solo = [[q] for q in ids if self.messages[q].solo]
        rest = [q for q in ids if not self.messages[q].solo]
        return solo + [rest[i:i + size] for i in range(0, len(rest), size)]

    def requests(self, ids: list[str], now: float, content_key: Callable[[str], str],
                 reply_to: str, store: str = "") -> list[tuple[ScanRequest, bytes]]:
        """The scan requests for one batch from take_batches, with each message's bytes.
        `store` names the content store that holds the content keys and the reply list
        ("" for the workers' default)."""
        items = []
        for qid in ids:
            inf = self.messages[qid]
            message = inf.message
            inf.request = ScanRequest(
                queue_id=qid, attempt=self.attempts.get(qid, inf.claim.inode) + 1,
                sender=inf.qf.sender, content_key=content_key(qid), size=len(message),
                recipients=[r.address for r in inf.qf.recipients if not r.done],
                reply_to=reply_to, submitted_at=now, inode=inf.claim.inode, sha256=inf.sha256,
                store=store)
            items.append((inf.request, message))
        return items

    def sent(self, ids: list[str]) -> None:
        now = self.clock()
        for qid in ids:
            self.messages[qid].sent_at, self.messages[qid].started_at = now, 0.0

    def not_sent(self, ids: list[str]) -> None:
        """The broker refused these: they go first next time, after a pause that doubles."""
        self.unsent = ids + self.unsent
        self._broker_until = self.clock() + self._broker_backoff
        self._broker_backoff = min(self._broker_backoff * 2, 30)

    def broker_took_all(self) -> None:
        self._broker_backoff = 0.5

    def send_again(self, queue_id: str) -> None:
        """Unless it waits to be sent anyway. A message with sent_at is never in unsent
        (sent() sets it only after take_batches took it out), so no list search here:
        a worker outage sends thousands again at once."""
        inf = self.messages[queue_id]
        if inf.sent_at:
            inf.sent_at = inf.started_at = 0.0
            self.unsent.append(queue_id)

    # -- no verdict --------------------------------------------------------------------------
    def sent_ids(self, queue_ids: list[str]) -> list[str]:
        """Those of `queue_ids` that are in flight and were handed to the workers."""
        return [q for q in queue_ids if q in self.messages
                and self.messages[q].request is not None]

    def started(self, queue_ids: list[str]) -> list[GiveUp]:
        """A worker has started scanning these (from sent_ids): from now on each counts as
        an attempt. Those started more often than allowed, never a verdict, kill their
        workers: give them up."""
        counts = self.attempts.increment_many([(q, self.messages[q].claim.inode)
                                               for q in queue_ids])
        now = self.clock()
        out = []
        for qid in queue_ids:
            self.messages[qid].started_at = now
            if counts[qid] > self.max_attempts:
                out.append(self._give_up(qid, counts[qid] - 1, f"no verdict after "
                                         f"{counts[qid] - 1} attempts (a message that kills "
                                         "scanners?)"))
        return out

    def overdue(self) -> Overdue:
        """No verdict in time. Started by a worker and past its time limit: that worker
        died on it (an attempt, already counted); send it again, alone. Never started:
        no worker took it (stopped, hung, another queue); send it again, uncounted."""
        now = self.clock()
        lines, idle = [], 0
        for qid, inf in self.messages.items():
            if not inf.sent_at:
                continue
            if inf.started_at:
                if now - inf.started_at <= self.started_deadline:
                    continue
                inf.solo = True
                lines.append(LogLine(logging.WARNING, "a worker started this message and gave "
                                     "no verdict; sending it again, alone", {
                                         "queue_id": qid,
                                         "attempts": self.attempts.get(qid, inf.claim.inode)}))
            elif now - inf.sent_at > self.verdict_deadline:
                idle += 1
            else:
                continue
            self.send_again(qid)
        workers = f"down: no worker started {idle} message(s) within " \
            f"{self.verdict_deadline:g}s; they wait in hold and are sent again (is any " \
            f"`holdscan worker` consuming queue {self.queue!r}?)" if idle else ""
        return Overdue(lines, idle, workers)

    # -- verdicts ------------------------------------------------------------------------------
    def match(self, verdict: Verdict) -> tuple[InFlight | None, LogLine | None]:
        """The message in flight `verdict` is for; None if it is late, a duplicate, or for
        a message already handled. None and a line to log if it is about other bytes than
        the ones we hold (from an earlier claim, a redelivery, or a recycled queue ID):
        never applied; the message is sent again."""
        inf = self.messages.get(verdict.queue_id)
        if inf is None or inf.request is None:
            return None, None
        if (verdict.inode, verdict.sha256) == (inf.claim.inode, inf.sha256):
            return inf, None
        if verdict.worker:
            self.send_again(verdict.queue_id)
        return None, LogLine(logging.WARNING, "refusing a verdict computed for other bytes; "
                             "scanning again", {
                                 "queue_id": verdict.queue_id, "verdict_inode": verdict.inode,
                                 "inode": inf.claim.inode,
                                 "verdict_sha256": verdict.sha256[:16],
                                 "sha256": inf.sha256[:16]})

    def verdict(self, inf: InFlight, v: Verdict) -> Retry | GiveUp | None:
        """What to do with a verdict: wait and retry (error), give up (an error the
        message caused too often), or None: apply it."""
        qid = inf.claim.queue_id
        reasons = "; ".join(v.reasons) or "error"
        if v.verdict == "error" and v.error_kind == "message":
            # These bytes broke a scanner: an attempt (counted when it started). After
            # max_attempts, the policy's `error` action, as for a message that kills workers.
            n = self.attempts.get(qid, inf.claim.inode)
            self.attempts.note_error(qid, reasons)
            if n >= self.max_attempts:
                self.waiting.pop(qid, None)
                return self._give_up(qid, v.attempt, f"scanners failed on it {n} times: "
                                                     f"{reasons}")
            return self._retry(v, n, f"scanner failed on it ({n} of {self.max_attempts}): "
                                     f"{reasons}")
        if v.verdict == "error":
            # A component is down: nobody's fault here, so it does not count; wait.
            self.attempts.uncount_many([qid])
            return self._retry(v, self.errors_in_a_row.get(qid, 0) + 1,
                               f"waiting for a scanner: {reasons}")
        self.errors_in_a_row.pop(qid, None)
        self.waiting.pop(qid, None)
        return None

    def _give_up(self, qid: str, attempt: int, reason: str) -> GiveUp:
        return GiveUp(self.messages[qid],
                      gave_up_verdict(qid, attempt, reason, self.status_header))

    def _retry(self, v: Verdict, n: int, why: str) -> Retry:
        qid = v.queue_id
        self.errors_in_a_row[qid] = n
        delay = min(2.0 ** n, MAX_RETRY_DELAY)
        self.retry_at[qid] = self.clock() + delay
        self.waiting[qid] = why
        return Retry(delay, why, LogLine(logging.INFO, "scan error; message stays in hold", {
            "queue_id": qid, "retry_in": f"{delay:.0f}s", "kind": v.error_kind,
            "reasons": "; ".join(v.reasons)}))

    def retry_later(self, queue_id: str, delay: float) -> None:
        self.retry_at[queue_id] = self.clock() + delay

    def done(self, queue_id: str, keep_attempts: bool = False) -> None:
        """No longer in flight: its claim is let go. Unless keep_attempts (it stays in
        hold, to be tried again), its attempts and backoff are forgotten (the rows by
        forget_done)."""
        inf = self.messages.pop(queue_id, None)
        if inf is not None:
            inf.claim.close()
        self._done.append(queue_id)
        if not keep_attempts:
            self._forget.append(queue_id)
            self.retry_at.pop(queue_id, None)
            self.waiting.pop(queue_id, None)
            self.errors_in_a_row.pop(queue_id, None)

    def take_done(self) -> list[str]:
        """The queue IDs of the messages done since the last call."""
        done, self._done = self._done, []
        return done

    def forget_done(self) -> None:
        """Drop the attempt rows of the messages done, in one transaction."""
        if self._forget:
            self.attempts.forget_many(self._forget)
            self._forget = []

    def drop_all(self) -> list[str]:
        """Stopping: every message in flight stays in hold, its claim let go. Returns
        their queue IDs."""
        for inf in self.messages.values():
            inf.claim.close()
        left = list(self.messages)
        self.messages.clear()
        return left

    def status(self) -> dict[str, object]:
        """For `holdscan status`."""
        now = self.clock()
        return {"in_flight": len(self.messages), "waiting": dict(self.waiting),
                "waiting_retry": sum(1 for t in self.retry_at.values() if t > now)}


def gave_up_verdict(queue_id: str, attempt: int, reason: str, status_header: str = "") -> Verdict:
    """The verdict for a message given up on: an error blamed on the message, as if a
    worker had said so, so that the policy's `error` action decides; it sets the status
    header (if named) to "unscanned (reason)"."""
    edits = [HeaderEdit("replace", status_header, f"unscanned ({reason})")] \
        if status_header else []
    return Verdict(queue_id=queue_id, attempt=attempt, verdict="error", error_kind="message",
                   findings=[Finding("dispatcher", "error", reason)], header_edits=edits)


def scanning_state(v: Verdict) -> str:
    """What a verdict says of the scanners: "up", "down: why" (an error for a component
    that is down), or "" (an error these bytes caused says nothing about them)."""
    if v.verdict != "error":
        return "up"
    return "" if v.error_kind == "message" else f"down: {'; '.join(v.reasons) or 'error'}"
