"""The dispatcher: claim held mail, send it for scanning, apply the verdicts.

One thread runs this loop and owns every claim; the watcher and the verdict
listener only put events on its queue. The hold file stays the source of
truth throughout: a message is in flight only while we hold its flock, and
whatever happens to the broker, the workers or this process, the message is
still in hold until a verdict has been applied by a spool operation.

    verdict      what happens (by default)                      spool operation
    clean        delivered as is, or with the status header     release / rewrite
    spam         delivered with its tags                        rewrite
    infected     stored aside                                   quarantine
    blocked      stored aside                                   quarantine
    unscannable  stored aside                                   quarantine
    error        stays in hold, tried again with backoff        (none)
    none in time sent again; after max_attempts sends without
                 a verdict (a message that kills workers) the
                 policy's `error` action                        quarantine / leave

[policy] (dispatcher/policy.py) may choose another action per verdict and
recipient: deliver (with the status header), deliver-tagged (and a Subject
tag), strip (delivered without the parts the worker found bad, only if the
worker scanned that stripped message clean), quarantine, discard. When the
recipients of one message get different actions, the message is split: one
new queue file per delivered group with only its recipients, and the
original in the quarantine for the quarantined group, all in one journaled
rewrite (Spool.rewrite with a quarantine copy). Notices go out afterwards
(dispatcher/notify.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import signal
import socket
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dispatcher import queuefile
from dispatcher.attempts import Attempts
from dispatcher.durable import fsync_dir
from dispatcher.journal import JournalError
from dispatcher.metrics import Metrics
from dispatcher.notify import Notice, Notifier
from dispatcher.park import settle_parks
from dispatcher.policy import Group, Policy, policy_verdict, subject_tag
from dispatcher.quarantine import QuarantineStore
from dispatcher.spool import Claim, MessageGone, Spool
from dispatcher.status import Status
from dispatcher.transport import TransportError, reply_key
from dispatcher.watcher import Watcher
from shared import mimeparts
from shared.config import Config
from shared.contract import ContractError, Finding, HeaderEdit, ScanRequest, Started, Verdict
from shared.crashpoints import crashpoint
from shared.logging import event

log = logging.getLogger("holdscan.dispatcher")

# What a group of recipients gets, as the outcome logged and counted.
OUTCOMES = {"deliver": "delivered", "deliver-tagged": "delivered", "strip": "stripped",
            "quarantine": "quarantined", "discard": "discarded"}


class Transport(Protocol):
    def key(self, queue_id: str) -> str: ...
    def start(self, on_verdicts: Any, on_state: Any) -> None: ...
    def submit(self, batch: list[tuple[ScanRequest, bytes]], expires: float) -> None: ...
    def forget(self, keys: list[str]) -> None: ...
    def close(self) -> None: ...


# How long after a worker started a batch its verdict may take: the worker's hard time
# limit (broker.task_time_limit) plus this, for the verdict's way back.
VERDICT_MARGIN = 30.0


@dataclass
class InFlight:
    claim: Claim
    qf: queuefile.QueueFile
    message: bytes
    sha256: str = ""
    request: ScanRequest | None = None
    sent_at: float = 0.0          # 0: not handed over yet
    started_at: float = 0.0       # 0: no worker has said it started this message
    solo: bool = False            # send alone: its last batch died without a verdict


@dataclass
class Stats:
    verdicts: dict[str, int] = field(default_factory=dict)
    workers_seen: dict[str, float] = field(default_factory=dict)
    last_errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        self.last_errors = (self.last_errors + [f"{time.strftime('%F %T')} {text}"])[-20:]


class Dispatcher:
    def __init__(self, cfg: Config, spool: Spool, transport: Transport,
                 dispatcher_id: str = "", once: bool = False) -> None:
        self.cfg = cfg
        self.d = cfg.dispatcher
        self.spool = spool
        self.transport = transport
        self.id = dispatcher_id or default_dispatcher_id()
        self.once = once
        self.metrics = Metrics()
        self.policy = Policy.from_config(cfg)
        self.notifier = Notifier(cfg.notify, spool.settings.config_directory, spool.state_dir)
        self.quarantine_store = QuarantineStore(spool)
        self.attempts = Attempts(spool.state_dir / "attempts.sqlite")
        self.status = Status(spool.state_dir / "status.json")
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.candidates: OrderedDict[Path, None] = OrderedDict()
        self.in_flight: dict[str, InFlight] = {}
        self.unsent: list[str] = []                    # claimed, waiting for the next batch
        self.retry_at: dict[str, float] = {}           # queue ID -> not before (error backoff)
        self.errors_in_a_row: dict[str, int] = {}
        self.left_for_human: set[tuple[str, int]] = set()   # unparseable, or policy "hold"
        self.parked: dict[str, list[str]] = {}      # queue ID -> its Postfix logs
        self.waiting: dict[str, str] = {}           # queue ID -> why it waits (error verdicts)
        self.unsettled: set[str] = set()            # journal entries to settle again
        self.component_state: dict[str, str] = {}
        self.stats = Stats()
        self._dirty_dirs: set[Path] = set()            # directories to fsync (_finish_batch)
        self._forget_keys: list[str] = []
        self._forget_attempts: list[str] = []
        self.stopping = False
        self.watcher = Watcher(spool.hold_dir, lambda p: self.events.put(("path", p)))
        self._submit_backoff_until = 0.0
        self._submit_backoff = 0.5

    # -- life cycle -------------------------------------------------------------------
    def run(self) -> int:
        self.spool.lock_dispatcher()
        report = self.spool.recover()
        if report.finished or report.undone or report.orphans_removed \
                or report.returned_to_hold:
            event(log, logging.INFO, "recovered after an unclean stop",
                  finished=len(report.finished), undone=len(report.undone),
                  orphans_removed=len(report.orphans_removed),
                  returned_to_hold=len(report.returned_to_hold))
        try:
            for what in self.quarantine_store.recover(wait=False):
                event(log, logging.INFO, "quarantine recovered", what=what)
            with self.quarantine_store.locked(wait=False) as got:
                for what in settle_parks(self.spool) if got else []:
                    event(log, logging.INFO, "settled an interrupted park", what=what)
        except OSError as e:
            # Mail must flow even if the quarantine store has a problem; say so loudly.
            self.stats.error(f"quarantine recovery: {e}")
            event(log, logging.ERROR, "cannot recover the quarantine store", error=str(e))
        if self.d.metrics_address:
            self.metrics.serve(self.d.metrics_address)
        self.transport.start(lambda vs: self.events.put(("verdicts", vs)),
                             lambda c, s: self.events.put(("state", (c, s))))
        if not self.once:
            self.watcher.start()
        signal.signal(signal.SIGTERM, lambda *a: self.events.put(("stop", None)))
        signal.signal(signal.SIGINT, lambda *a: self.events.put(("stop", None)))
        self.rescan()
        event(log, logging.INFO, "dispatcher started", id=self.id, hold=self.spool.hold_dir,
              candidates=len(self.candidates))
        total = len(self.candidates)
        next_rescan = time.monotonic() + self.d.rescan_interval
        next_housekeeping = 0.0
        next_expiry = 0.0
        batch_started = 0.0
        try:
            while True:
                self._drain_events(timeout=self._wait_time(batch_started))
                if self.stopping:
                    break
                self._claim_candidates()
                if self.unsent and not batch_started:
                    batch_started = time.monotonic()
                batch_due = self.unsent and (
                    len(self.unsent) >= self.d.batch_size
                    or time.monotonic() - batch_started >= self.d.batch_wait
                    or (self.once and not self.candidates))
                if batch_due and self._flush():
                    batch_started = 0.0
                now = time.monotonic()
                if now >= next_housekeeping:
                    self._resend_overdue()
                    self._housekeeping()
                    next_housekeeping = now + 1.0
                if now >= next_rescan:
                    self.rescan()
                    next_rescan = now + self.d.rescan_interval
                if self.d.quarantine_days and now >= next_expiry:
                    self._expire_quarantine()
                    next_expiry = now + 86400
                if self.once:
                    self._progress(total)
                    if not self.candidates and not self.in_flight and not self.unsent:
                        break
        finally:
            self._shutdown()
        if self.once:
            return self._once_summary()
        return 0

    def _once_summary(self) -> int:
        """--once: say what was done, and fail if anything had to stay in hold."""
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        waiting = len(self.retry_at)
        unparseable = len(self.left_for_human)
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.stats.verdicts.items()))
        print(f"holdscan: {outcomes or 'nothing to do'}", file=sys.stderr)
        if waiting or unparseable:
            print(f"holdscan: {waiting} message(s) stay in hold after a scan error and "
                  f"{unparseable} are left for a human (unparseable, or policy `hold`); see "
                  "the log above, then run again", file=sys.stderr)
            return 1
        return 0

    def _wait_time(self, batch_started: float) -> float:
        if self.candidates and len(self.in_flight) < self.d.max_in_flight:
            return 0.0
        if self.unsent:
            return max(0.0, self.d.batch_wait - (time.monotonic() - batch_started))
        return 0.2

    def _drain_events(self, timeout: float) -> None:
        try:
            kind, value = self.events.get(timeout=timeout) if timeout > 0 else \
                self.events.get_nowait()
        except queue.Empty:
            return
        verdicts: list[Any] = []
        while True:
            if kind == "path":
                if value is None:
                    self.rescan()
                else:
                    self.candidates[value] = None
            elif kind == "verdicts":
                verdicts.extend(value if isinstance(value, list) else [value])
            elif kind == "state":
                self._state_change(*value)
            elif kind == "stop":
                event(log, logging.INFO, "stopping: applying the verdicts in hand")
                self.stopping = True
            try:
                kind, value = self.events.get_nowait()
            except queue.Empty:
                break
        if verdicts:
            self._apply_all(verdicts)

    def _shutdown(self) -> None:
        self.watcher.stop() if not self.once else None
        # Verdicts that already arrived are applied; everything else stays in hold.
        self._drain_events(timeout=0)
        keys = [self.transport.key(q) for q in self.in_flight]
        for inf in self.in_flight.values():
            inf.claim.close()
        self.in_flight.clear()
        self.transport.forget(keys)
        self.transport.close()
        self._housekeeping()
        self.attempts.close()
        self.notifier.close()
        event(log, logging.INFO, "dispatcher stopped")

    # -- finding and claiming -----------------------------------------------------------
    def rescan(self) -> None:
        """Every file in hold, oldest first, as candidates (the safety net under inotify)."""
        found = []
        for p in self.spool.hold_files():
            try:
                found.append((p.stat().st_mtime, p))
            except FileNotFoundError:
                continue
        found.sort()
        for _, p in found:
            self.candidates[p] = None
        self.metrics.hold_depth.set(len(found))
        self._hold_depth = len(found)

    def _claim_candidates(self) -> None:
        now = time.monotonic()
        while self.candidates and len(self.in_flight) < self.d.max_in_flight and \
                not self.stopping:
            path, _ = self.candidates.popitem(last=False)
            qid = path.name
            if qid in self.in_flight or self.retry_at.get(qid, 0) > now:
                continue
            if qid in self.unsettled and not self._settle(qid):
                continue
            claim = self.spool.claim(path)
            if claim is None:
                continue
            if (qid, claim.inode) in self.left_for_human:
                claim.close()
                continue
            logs = self.spool.message_logs(qid)
            if logs and not self._scan_requested(qid, claim.inode):
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
                self.metrics.errors.labels("unparseable").inc()
                self.stats.error(f"{qid}: cannot parse: {e}")
                event(log, logging.ERROR, "cannot parse queue file; leaving it in hold for a "
                      "human (inspect with `postcat -q ID`, release unscanned with "
                      "`postsuper -H ID`)", queue_id=qid, error=str(e))
                continue
            self.in_flight[qid] = InFlight(claim, qf, message,
                                           hashlib.sha256(message).hexdigest())
            self.unsent.append(qid)
        self.metrics.in_flight.set(len(self.in_flight))

    # -- submitting ----------------------------------------------------------------------
    def _flush(self) -> bool:
        """Hand the unsent messages to the workers. False: try again later (backoff)."""
        if time.monotonic() < self._submit_backoff_until:
            return False
        ids = [q for q in self.unsent if q in self.in_flight]
        self.unsent = []
        if not ids:
            return True
        now = time.time()
        batch: list[tuple[ScanRequest, bytes]] = []
        for qid in ids:
            inf = self.in_flight[qid]
            qf = inf.qf
            inf.request = ScanRequest(
                queue_id=qid, attempt=self.attempts.get(qid, inf.claim.inode) + 1,
                sender=qf.sender, recipients=[r.address for r in qf.recipients if not r.done],
                content_key=self.transport.key(qid), size=len(inf.message),
                reply_to=reply_key(self.id), submitted_at=now, inode=inf.claim.inode,
                sha256=inf.sha256)
            batch.append((inf.request, inf.message))
        # A message whose batch died without a verdict goes alone, so that one poison
        # message cannot use up the attempts of the others it was batched with.
        chunks = [[item] for item in batch if self.in_flight[item[0].queue_id].solo]
        rest = [item for item in batch if not self.in_flight[item[0].queue_id].solo]
        chunks += [rest[i:i + self.d.batch_size] for i in range(0, len(rest), self.d.batch_size)]
        for n, chunk in enumerate(chunks):
            try:
                self.transport.submit(chunk, expires=now + self.d.verdict_deadline)
            except TransportError as e:
                # Not handed over: keep the claims, try again after a pause.
                unsent = [r.queue_id for c in chunks[n:] for r, _ in c]
                self.unsent = unsent + self.unsent
                self._state_change("broker", f"down: {e}")
                self._submit_backoff_until = time.monotonic() + self._submit_backoff
                self._submit_backoff = min(self._submit_backoff * 2, 30)
                return False
            crashpoint("dispatch.after_submit")
            for r, _ in chunk:
                inf = self.in_flight[r.queue_id]
                inf.sent_at, inf.started_at = time.monotonic(), 0.0
            self.metrics.attempts.inc(len(chunk))
        self._state_change("broker", "up")
        self._submit_backoff = 0.5
        return True

    def _started(self, notice: Started) -> None:
        """A worker has started scanning these: from now on each counts as an attempt."""
        mine = [q for q in notice.queue_ids if q in self.in_flight
                and self.in_flight[q].request is not None]
        if not mine:
            return
        self._state_change("workers", "up")
        if notice.worker:
            self.stats.workers_seen[notice.worker] = time.time()
        counts = self.attempts.increment_many([(q, self.in_flight[q].claim.inode)
                                               for q in mine])
        now = time.monotonic()
        for qid in mine:
            self.in_flight[qid].started_at = now
            if counts[qid] > self.d.max_attempts:
                # Started more often than allowed, never a verdict: it kills its workers.
                self._give_up(self.in_flight[qid], counts[qid] - 1)

    def _resend_overdue(self) -> None:
        """No verdict in time. Started by a worker and past its time limit: that worker
        died on it (an attempt, already counted); send it again, alone. Never started:
        no worker took it (stopped, hung, another queue): send again without counting,
        and say loudly that nobody is scanning."""
        now = time.monotonic()
        started_deadline = self.cfg.broker.task_time_limit + VERDICT_MARGIN
        idle = 0
        for qid, inf in self.in_flight.items():
            if not inf.sent_at:
                continue
            if inf.started_at:
                if now - inf.started_at <= started_deadline:
                    continue
                inf.solo = True
                event(log, logging.WARNING, "a worker started this message and gave no "
                      "verdict; sending it again, alone", queue_id=qid,
                      attempts=self.attempts.get(qid, inf.claim.inode))
            elif now - inf.sent_at > self.d.verdict_deadline:
                idle += 1
            else:
                continue
            inf.sent_at = inf.started_at = 0.0
            if qid not in self.unsent:
                self.unsent.append(qid)
        if idle:
            self._state_change("workers", f"down: no worker started {idle} message(s) within "
                               f"{self.d.verdict_deadline:g}s; they wait in hold and are sent "
                               "again (is any `holdscan worker` consuming queue "
                               f"{self.cfg.broker.queue!r}?)")

    def _give_up(self, inf: InFlight, attempts: int, reason: str = "") -> None:
        qid = inf.claim.queue_id
        reason = reason or f"no verdict after {attempts} attempts (a message that kills scanners?)"
        self.metrics.errors.labels("gave_up").inc()
        # The policy's `error` action decides, as if a worker had said so.
        v = Verdict(queue_id=qid, attempt=attempts, action="error",
                    findings=[Finding("dispatcher", "error", reason)],
                    header_edits=self._status_edit(f"unscanned ({reason})"),
                    error_kind="message")
        self._finish_batch(self._apply_safely(inf, v, gave_up=True))

    def _status_edit(self, text: str) -> list[HeaderEdit]:
        h = self.cfg.headers
        return [HeaderEdit("replace", f"{h.prefix}-Status", text)] if h.add_status_header else []

    # -- verdicts -------------------------------------------------------------------------
    def _apply_all(self, raw_verdicts: list[Any]) -> None:
        released = False
        for raw in raw_verdicts:
            try:
                if isinstance(raw, dict) and "started" in raw:
                    self._started(Started.from_dict(raw))
                    continue
                verdict = Verdict.from_dict(raw)
            except ContractError as e:
                self.metrics.errors.labels("bad_verdict").inc()
                self.stats.error(f"bad verdict: {e}")
                event(log, logging.ERROR, "ignoring a malformed verdict", error=str(e))
                continue
            inf = self.in_flight.get(verdict.queue_id)
            if inf is None or inf.request is None:
                continue        # late, duplicate, or for a message already handled
            if (verdict.inode, verdict.sha256) != (inf.claim.inode, inf.sha256):
                # From an earlier claim, a redelivery, or a recycled queue ID: about other
                # bytes than the ones we hold. Never apply it; this message is scanned again.
                self.metrics.errors.labels("stale_verdict").inc()
                event(log, logging.WARNING, "refusing a verdict computed for other bytes; "
                      "scanning again", queue_id=verdict.queue_id, verdict_inode=verdict.inode,
                      inode=inf.claim.inode, verdict_sha256=verdict.sha256[:16],
                      sha256=inf.sha256[:16])
                if inf.sent_at and verdict.worker:
                    inf.sent_at = inf.started_at = 0.0
                    if verdict.queue_id not in self.unsent:
                        self.unsent.append(verdict.queue_id)
                continue
            if verdict.worker:
                self.stats.workers_seen[verdict.worker] = time.time()
            self.metrics.scan_latency.observe(max(0.0, time.time() - inf.request.submitted_at))
            released |= self._apply_safely(inf, verdict)
        self._finish_batch(released)

    def _apply_safely(self, inf: InFlight, verdict: Verdict, gave_up: bool = False) -> bool:
        """Apply one verdict; whatever goes wrong costs this message a retry, never the
        dispatcher its life. True if something went into incoming."""
        qid = inf.claim.queue_id
        try:
            if gave_up:
                return self._carry_out(inf, verdict, gave_up=True)
            return self._apply(inf, verdict)
        except MessageGone as e:
            # postsuper -d/-H/-r while it was scanned: Postfix's again, untouched by us.
            event(log, logging.WARNING, "message left hold while it was scanned; verdict "
                  "dropped, nothing done", queue_id=qid, action=verdict.action, why=str(e))
            self._done(qid, verdict.action, "gone")
            return False
        except Exception as e:  # noqa: BLE001  (any one message's failure is that message's)
            self.metrics.errors.labels("apply").inc()
            self.stats.error(f"{qid}: {type(e).__name__}: {e}")
            event(log, logging.ERROR, "could not apply verdict; message stays in hold, tried "
                  "again in 30s", queue_id=qid, action=verdict.action,
                  error=f"{type(e).__name__}: {e}")
            if self.spool.journal.path(qid).exists():
                self.unsettled.add(qid)
            inf.claim.close()
            self.retry_at[qid] = time.monotonic() + 30
            self._done(qid, verdict.action, "failed", keep_attempts=True)
            return False

    def _settle(self, qid: str) -> bool:
        """Settle an operation that failed half-way; True once nothing is pending."""
        try:
            entry = self.spool.journal.get(qid)
            if entry is not None:
                outcome = self.spool.settle(entry)
                event(log, logging.INFO, "settled an interrupted operation", queue_id=qid,
                      kind=entry.kind, outcome=outcome)
        except (OSError, JournalError) as e:
            event(log, logging.ERROR, "cannot settle an interrupted operation yet",
                  queue_id=qid, error=str(e))
            return False
        self.unsettled.discard(qid)
        return True

    def _finish_batch(self, released: bool) -> None:
        """Once per batch of verdicts, not per message: make the renames durable before
        qmgr is told about them, and drop content keys and attempt rows in one go."""
        if released:
            for d in self._dirty_dirs:
                fsync_dir(d)
            self._dirty_dirs.clear()
            self.spool.wake_qmgr()
        if self._forget_keys:
            self.transport.forget(self._forget_keys)
            self._forget_keys = []
        if self._forget_attempts:
            self.attempts.forget_many(self._forget_attempts)
            self._forget_attempts = []

    def _apply(self, inf: InFlight, v: Verdict) -> bool:
        """Apply one verdict. True if something went into incoming."""
        qid = v.queue_id
        crashpoint("apply.before")
        if v.action == "error" and v.error_kind == "message":
            # These bytes broke a scanner: an attempt (counted when it started). After
            # max_attempts, the policy's `error` action, as for a message that kills workers.
            n = self.attempts.get(qid, inf.claim.inode)
            reason = "; ".join(v.reasons) or "error"
            self.attempts.note_error(qid, reason)
            if n >= self.d.max_attempts:
                self.waiting.pop(qid, None)
                return self._carry_out(inf, v, gave_up=True, why=f"scanners failed on it "
                                       f"{n} times: {reason}")
            return self._wait(inf, v, n, f"scanner failed on it ({n} of "
                                        f"{self.d.max_attempts}): {reason}")
        if v.action == "error":
            # A component is down: nobody's fault here, so it does not count; wait.
            self.attempts.uncount_many([qid])
            self._state_change("scanning", f"down: {'; '.join(v.reasons) or 'error'}")
            return self._wait(inf, v, self.errors_in_a_row.get(qid, 0) + 1,
                              f"waiting for a scanner: {'; '.join(v.reasons) or 'error'}")
        self._state_change("scanning", "up")
        self.errors_in_a_row.pop(qid, None)
        self.waiting.pop(qid, None)
        return self._carry_out(inf, v)

    def _wait(self, inf: InFlight, v: Verdict, n: int, why: str) -> bool:
        qid = v.queue_id
        self.errors_in_a_row[qid] = n
        delay = min(2.0 ** n, 300.0)
        self.retry_at[qid] = time.monotonic() + delay
        self.waiting[qid] = why
        inf.claim.close()
        event(log, logging.INFO, "scan error; message stays in hold", queue_id=qid,
              retry_in=f"{delay:.0f}s", kind=v.error_kind, reasons="; ".join(v.reasons))
        self._done(qid, v.action, "held", keep_attempts=True)
        return False

    def _carry_out(self, inf: InFlight, v: Verdict, gave_up: bool = False,
                   why: str = "") -> bool:
        """Do what the policy says for each recipient. True if something went into incoming."""
        qid = inf.claim.queue_id
        if why:
            v = Verdict(queue_id=qid, attempt=v.attempt, action="error",
                        findings=[Finding("dispatcher", "error", why)],
                        header_edits=self._status_edit(f"unscanned ({why})"),
                        error_kind="message")
        verdict = policy_verdict(v.action, v.extra)
        rcpts = [r.address for r in inf.qf.recipients if not r.done]
        groups = self.policy.groups(inf.qf.sender, rcpts, verdict) or \
            [Group("deliver", [], ["nothing left to deliver"])]
        stripped = self._stripped(inf, v, groups)
        action_name = "gave_up" if gave_up else v.action
        if any(g.action == "hold" for g in groups):
            # One recipient's hold keeps the whole message: a human decides for all.
            event(log, logging.WARNING, "left in hold for a human", queue_id=qid,
                  reason="; ".join(v.reasons))
            self.left_for_human.add((qid, inf.claim.inode))
            inf.claim.close()
            self._done(qid, action_name, "held", keep_attempts=True)
            return False
        delivered = [g for g in groups if g.action in ("deliver", "deliver-tagged", "strip")]
        quarantined = next((g for g in groups if g.action == "quarantine"), None)
        split = len(groups) > 1
        edits = self._edits_for(groups[0].action, v)
        if groups[0].action == "deliver" and not split and not edits:
            hold_parent = inf.claim.path.parent
            target = self.spool.release(inf.claim, sync=False)
            self._dirty_dirs.update((target.parent, hold_parent))   # fsync'd by _finish_batch
            event(log, logging.INFO, "released", queue_id=qid, action=v.action)
            self._done(qid, v.action, "released")
            return True
        meta = self._quarantine_meta(inf, v, gave_up, quarantined) if quarantined else None
        if quarantined and not delivered and not split:
            entry = self.spool.quarantine(inf.claim, meta or {})
            new_ids: list[str] = []
        else:
            files = [self._file_for(inf, v, g, stripped, split) for g in delivered]
            new_ids = self.spool.rewrite(inf.claim, files, quarantine=meta)
            entry = self.spool.quarantine_id(inf.claim) if meta else ""
        # One line tells the message's story: what each group of recipients got and why.
        outcome = "split" if split else OUTCOMES[groups[0].action]
        if outcome == "delivered":
            outcome = "rewritten"       # a new file with the status header (and tag)
        event(log, logging.INFO, {"rewritten": "delivered with headers"}.get(outcome, outcome),
              queue_id=qid, action=action_name, reasons="; ".join(v.reasons),
              new_queue_id=",".join(new_ids), quarantine_id=entry,
              policy="; ".join(f"{g.action} {len(g.recipients)} ({', '.join(g.sources)})"
                               for g in groups))
        self._notify(inf, v, groups, entry, stripped)
        self._done(qid, action_name, outcome)
        return bool(new_ids)

    def _stripped(self, inf: InFlight, v: Verdict, groups: list[Group]) -> bytes | None:
        """The message without its bad parts, if some group is to get that and the worker
        scanned exactly these bytes clean; else those groups are quarantined instead."""
        if not any(g.action == "strip" for g in groups):
            return None
        plan = v.extra.get("strip")
        why = "the scanners could not name removable parts that leave the rest clean"
        if plan:
            try:
                data = mimeparts.strip(inf.message, {p["part"]: p["note"] for p in plan["parts"]})
                if mimeparts.sha256(data) == plan["sha256"]:
                    return data
                why = "the stripped message is not the one the worker scanned"
            except mimeparts.StripError as e:
                why = str(e)
        event(log, logging.WARNING, "cannot strip; quarantined instead",
              queue_id=inf.claim.queue_id, why=why)
        for g in groups:
            if g.action == "strip":
                g.action = "quarantine"
        # Two quarantined groups are one: the original is stored once.
        merged: list[Group] = []
        for g in groups:
            same = next((m for m in merged if m.action == g.action), None)
            if same is None:
                merged.append(g)
            else:
                same.recipients += g.recipients
                same.sources += [s for s in g.sources if s not in same.sources]
        groups[:] = merged
        return None

    def _edits_for(self, action: str, v: Verdict) -> list[HeaderEdit]:
        """Header edits for a delivered group: the verdict's own for clean mail; else its
        status header, and for deliver-tagged a Subject tag."""
        if v.action == "clean":
            return list(v.header_edits)
        edits = [e for e in v.header_edits if e.op != "subject_tag"]
        if action == "deliver-tagged":
            tag = next((e.value for e in v.header_edits if e.op == "subject_tag"), None) or \
                subject_tag(self.cfg.headers.subject_tags, policy_verdict(v.action, v.extra))
            if tag:
                edits.append(HeaderEdit("subject_tag", "Subject", tag))
        return edits

    def _file_for(self, inf: InFlight, v: Verdict, g: Group, stripped: bytes | None,
                  split: bool) -> bytes:
        """One new queue file: the group's message, edits, and (split) only its recipients."""
        qf = inf.qf
        if g.action == "strip" and stripped is not None:
            qf = qf.with_message(stripped)
        if split:
            members = set(g.recipients)
            qf = qf.with_recipients(lambda r: not r.done and r.address in members)
        return self._edited(qf, self._edits_for(g.action, v))

    def _edited(self, qf: queuefile.QueueFile, edits: list[HeaderEdit]) -> bytes:
        add = [(e.name, e.value) for e in edits if e.op == "add"]
        replace = [(e.name, e.value) for e in edits if e.op == "replace"]
        tags = [e.value for e in edits if e.op == "subject_tag"]
        edited = qf.with_headers(add=add, replace=replace, subject_tag=tags[0] if tags else None)
        return queuefile.serialize(edited, self.spool.settings.line_length_limit)

    def _quarantine_meta(self, inf: InFlight, v: Verdict, gave_up: bool,
                         group: Group) -> dict[str, Any]:
        qf = inf.qf
        everyone = [r.address for r in qf.recipients if not r.done]
        meta = {
            "time": time.time(),
            "sender": qf.sender,
            # Whom it was stopped for: a release delivers to them (the others of a
            # split message had their own copies).
            "recipients": group.recipients or everyone,
            "verdict": None if gave_up else v.to_dict(),
            "action": "gave_up" if gave_up else v.action,
            "reason": "; ".join(v.reasons),
            "subject": _subject(inf.message),
            "policy": group.sources,
        }
        if set(group.recipients) != set(everyone):
            meta["all_recipients"] = everyone
        return meta

    def _notify(self, inf: InFlight, v: Verdict, groups: list[Group], entry: str,
                stripped: bytes | None) -> None:
        removed = "\n".join(p["note"] for p in v.extra.get("strip", {}).get("parts", [])) \
            if stripped is not None else ""
        for g in groups:
            outcome = OUTCOMES[g.action]
            if outcome == "delivered" or not self.notifier.wanted(outcome):
                continue
            self.notifier.notify(Notice(outcome, {
                "outcome": outcome, "verdict": policy_verdict(v.action, v.extra),
                "reasons": "\n".join(v.reasons), "queue_id": inf.claim.queue_id,
                "quarantine_id": entry if outcome == "quarantined" else "",
                "removed": removed if outcome == "stripped" else "",
                "sender": inf.qf.sender or "<>", "subject": _subject(inf.message),
                "message_id": _header(inf.message, b"message-id"),
            }, g.recipients))

    def _expire_quarantine(self) -> None:
        try:
            gone = self.quarantine_store.expire(self.d.quarantine_days, wait=False)
        except OSError as e:
            self.stats.error(f"quarantine expiry: {e}")
            event(log, logging.ERROR, "quarantine expiry failed", error=str(e))
            return
        if gone:
            event(log, logging.INFO, "expired quarantine entries", count=len(gone),
                  days=self.d.quarantine_days)

    def _done(self, qid: str, action: str, outcome: str, keep_attempts: bool = False) -> None:
        inf = self.in_flight.pop(qid, None)
        self._forget_keys.append(self.transport.key(qid))
        if not keep_attempts:
            self._forget_attempts.append(qid)
            self.retry_at.pop(qid, None)
            self.waiting.pop(qid, None)
            self.errors_in_a_row.pop(qid, None)
            self._scan_request_done(qid)
        self.stats.verdicts[outcome] = self.stats.verdicts.get(outcome, 0) + 1
        self.metrics.verdicts.labels(action, outcome).inc()
        self.metrics.in_flight.set(len(self.in_flight))
        if inf is not None:
            inf.claim.close()

    # -- mail parked by someone else --------------------------------------------------------
    def _scan_requested(self, qid: str, inode: int) -> bool:
        """`holdscan scan ID` asked for this parked message to be scanned as new mail."""
        try:
            text = (self.spool.scan_requests_dir / qid).read_text().strip()
        except FileNotFoundError:
            return False
        return text in ("", str(inode))

    def _scan_request_done(self, qid: str) -> None:
        try:
            os.unlink(self.spool.scan_requests_dir / qid)
        except FileNotFoundError:
            pass

    # -- state and status -------------------------------------------------------------------
    def _state_change(self, component: str, state: str) -> None:
        """One log line per change of a component's state ("up" or "down: why"), not one
        per message: a clamd outage with 5,000 messages waiting is two lines."""
        up = state == "up"
        previous = self.component_state.get(component)
        self.component_state[component] = state
        if previous is not None and (previous == "up") == up:
            return
        if up:
            if previous is not None:
                event(log, logging.WARNING, f"{component} is back", component=component)
        else:
            self.stats.error(f"{component} {state}")
            event(log, logging.ERROR, f"{component} unavailable; mail waits in hold",
                  component=component, state=state)

    def _housekeeping(self) -> None:
        self.status.write({
            "pid": os.getpid(), "id": self.id, "time": time.time(),
            "hold_depth": getattr(self, "_hold_depth", 0), "in_flight": len(self.in_flight),
            "waiting_retry": sum(1 for t in self.retry_at.values() if t > time.monotonic()),
            "waiting": dict(self.waiting),
            "parked": dict(self.parked),
            "components": self.component_state, "outcomes": self.stats.verdicts,
            "workers_seen": self.stats.workers_seen, "last_errors": self.stats.last_errors,
            "notices_last_hour": self.notifier.limit.summary() if self.notifier.enabled else {},
        })

    def _progress(self, total: int) -> None:
        if sys.stderr.isatty():
            done = sum(self.stats.verdicts.values())
            sys.stderr.write(f"\rholdscan: {done}/{max(total, done)} handled, "
                             f"{len(self.in_flight)} in flight ")
            sys.stderr.flush()


def default_dispatcher_id() -> str:
    """This host's name: the dispatcher's ID, and so the name of its reply list."""
    return socket.gethostname()


def _subject(message: bytes) -> str:
    return _header(message, b"subject")


def _header(message: bytes, name: bytes) -> str:
    head = message.split(b"\r\n\r\n", 1)[0]
    prefix = name + b":"
    for line in head.split(b"\r\n"):
        if line[:len(prefix)].lower() == prefix:
            return line[len(prefix):].strip().decode("utf-8", "replace")
    return ""
