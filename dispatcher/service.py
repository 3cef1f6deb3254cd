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
recipient (deliver, deliver-tagged, strip, quarantine, discard; recipients
with different actions split the message). dispatcher/disposition.py decides
what each message gets, dispatcher/inflight.py when to send again, retry or
give up; this is the loop that carries it out.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from dispatcher import disposition
from dispatcher.attempts import Attempts
from dispatcher.handover import Handover
from dispatcher.inbox import Inbox
from dispatcher.inflight import InFlight, Retry, Tracker, scanning_state
from dispatcher.intake import Intake
from dispatcher.notify import Notifier
from dispatcher.policy import Policy
from dispatcher.progress import Progress
from dispatcher.spool import MessageGone, Spool
from dispatcher.status import Stats, StatusFile
from dispatcher.transport import Transport, TransportError, default_dispatcher_id, reply_key
from dispatcher.upkeep import Upkeep
from dispatcher.watcher import Watcher
from dispatcher.webrequests import WebIdentity, WebRequests
from shared.config import Config
from shared.contract import ContractError, Started, Verdict
from shared.crashpoints import crashpoint
from shared.logging import event

log = logging.getLogger("holdscan.dispatcher")


class Dispatcher:
    def __init__(self, cfg: Config, spool: Spool, transport: Transport,
                 dispatcher_id: str = "", once: bool = False,
                 web: WebIdentity | None = None) -> None:
        self.cfg = cfg
        self.options = cfg.dispatcher
        self.spool = spool
        self.transport = transport
        self.id = dispatcher_id or default_dispatcher_id()
        self.once = once
        self.stats = Stats()
        self.metrics = self.stats.metrics
        self.policy = Policy.from_config(cfg)
        self.notifier = Notifier(cfg.notify, spool.settings.config_directory, spool.state_dir)
        self.attempts = Attempts(spool.state_dir / "attempts.sqlite")
        self.in_flight = Tracker.from_config(self.attempts, cfg)
        self.intake = Intake(spool, self.stats, self.options.rescan_interval)
        self.upkeep = Upkeep(spool, self.stats, self.options.quarantine_days,
                             web=WebRequests(spool, cfg, web) if web is not None else None)
        self.status = StatusFile(spool.state_dir / "status.json")
        self.inbox = Inbox()
        self.watcher = Watcher(spool.hold_dir, self.inbox.paths)
        self.handover = Handover(spool.wake_qmgr)
        self.stopping = False
        self.progress = Progress.for_stderr() if once else None     # --once on a terminal
        self._dirty_dirs: set[Path] = set()         # directories to fsync (_finish_batch)

    def run(self) -> int:
        self.spool.lock_dispatcher()
        self.upkeep.recover()
        if self.options.metrics_address:
            self.metrics.serve(self.options.metrics_address)
        self.transport.start(self.inbox.replies, self.inbox.state)
        self.handover.start()
        if not self.once:
            self.watcher.start()
        signal.signal(signal.SIGTERM, self.inbox.stop)
        signal.signal(signal.SIGINT, self.inbox.stop)
        self.intake.start()
        total = len(self.intake)
        if self.progress:
            self.progress.wipe_before_logs()
        event(log, logging.INFO, "dispatcher started", id=self.id, hold=self.spool.hold_dir,
              candidates=total)
        next_housekeeping = 0.0
        try:
            while True:
                self._drain_events(timeout=self._wait_time())
                if self.stopping:
                    break
                self.intake.claim(self.in_flight, self.options.max_in_flight)
                if self.in_flight.batch_due(self.options.batch_size, self.options.batch_wait,
                                            self.once and not self.intake) and self._flush():
                    self.in_flight.batch_started = 0.0
                now = time.monotonic()
                if now >= next_housekeeping:
                    self._resend_overdue()
                    self._housekeeping()
                    next_housekeeping = now + 1.0
                self.intake.tick(now)
                self.upkeep.tick(now)
                if self.once:
                    if self.progress:
                        self.progress.update(self.stats.handled, total, len(self.in_flight))
                    if not self.intake and not self.in_flight and not self.in_flight.unsent:
                        break
        finally:
            self._shutdown()
            if self.progress:
                self.progress.finish(self.stats.handled(), total, len(self.in_flight))
        return self.stats.once_summary(len(self.in_flight.retry_at),
                                       len(self.intake.left_for_human)) if self.once else 0

    def _wait_time(self) -> float:
        if self.intake and len(self.in_flight) < self.options.max_in_flight:
            return 0.0
        return self.in_flight.batch_wait(self.options.batch_wait) if self.in_flight.unsent \
            else 0.2

    def _drain_events(self, timeout: float) -> None:
        events = self.inbox.take(timeout)
        for path in events.paths:
            self.intake.add(path)
        for component, state in events.states:
            self.stats.state_change(component, state)
        if events.stop:
            event(log, logging.INFO, "stopping: applying the verdicts in hand")
            self.stopping = True
        if events.replies:
            self._apply_all(events.replies)

    def _shutdown(self) -> None:
        self.watcher.stop() if not self.once else None
        # Verdicts that already arrived are applied; everything else stays in hold.
        self._drain_events(timeout=0)
        self.handover.stop()        # the releases made so far: durable, and qmgr told
        self.transport.forget([self.transport.key(q) for q in self.in_flight.drop_all()])
        self.transport.close()
        self._housekeeping()
        self.attempts.close()
        self.notifier.close()
        event(log, logging.INFO, "dispatcher stopped")

    def _flush(self) -> bool:
        """Hand the unsent messages to the workers. False: try again later (backoff)."""
        if not self.in_flight.may_submit():
            return False
        now = time.time()
        batches = self.in_flight.take_batches(self.options.batch_size)
        if not batches:
            return True
        for n, ids in enumerate(batches):
            batch = self.in_flight.requests(ids, now, self.transport.key, reply_key(self.id),
                                            self.cfg.broker.content_store)
            try:
                self.transport.submit(batch, expires=now + self.options.verdict_deadline)
            except TransportError as e:
                # Not handed over: keep the claims, try again after a pause.
                self.in_flight.not_sent([q for b in batches[n:] for q in b])
                self.stats.state_change("broker", f"down: {e}")
                return False
            crashpoint("dispatch.after_submit")
            self.in_flight.sent(ids)
            self.metrics.attempts.inc(len(ids))
        self.stats.state_change("broker", "up")
        self.in_flight.broker_took_all()
        return True

    def _resend_overdue(self) -> None:
        overdue = self.in_flight.overdue()
        for line in overdue.lines:
            line.write(log)
        if overdue.idle:
            self.stats.state_change("workers", overdue.workers)

    def _apply_all(self, replies: list[object]) -> None:
        released = False
        for raw in replies:
            try:
                if isinstance(raw, dict) and "started" in raw:
                    self._started(Started.from_dict(raw))
                    continue
                verdict = Verdict.from_dict(raw)
            except ContractError as e:
                self.stats.error(f"bad verdict: {e}", "bad_verdict")
                event(log, logging.ERROR, "ignoring a malformed verdict", error=str(e))
                continue
            inf, stale = self.in_flight.match(verdict)
            if stale is not None:
                self.metrics.errors.labels("stale_verdict").inc()
                stale.write(log)
            if inf is None or inf.request is None:
                continue
            self.stats.worker_seen(verdict.worker)
            self.metrics.scan_latency.observe(max(0.0, time.time() - inf.request.submitted_at))
            released |= self._apply(inf, verdict)
        self._finish_batch(released)

    def _started(self, notice: Started) -> None:
        """A worker has started scanning these: from now on each counts as an attempt."""
        mine = self.in_flight.sent_ids(notice.queue_ids)
        if not mine:
            return
        self.stats.state_change("workers", "up")
        self.stats.worker_seen(notice.worker)
        for give_up in self.in_flight.started(mine):
            self.metrics.errors.labels("gave_up").inc()
            self._finish_batch(self._apply(give_up.inf, give_up.verdict, gave_up=True))

    def _apply(self, inf: InFlight, v: Verdict, gave_up: bool = False) -> bool:
        """Apply a verdict (gave_up: the one made for a message given up on); whatever goes
        wrong costs this message a retry, never the dispatcher its life. True: incoming."""
        qid, found = inf.claim.queue_id, v.verdict
        try:
            if not gave_up:
                crashpoint("apply.before")
                if state := scanning_state(v):
                    self.stats.state_change("scanning", state)
                step = self.in_flight.verdict(inf, v)
                if isinstance(step, Retry):
                    step.line.write(log)
                    self._done(qid, found, "held", keep_attempts=True)
                    return False
                if step is not None:
                    v, gave_up = step.verdict, True
            return self._carry_out(inf, v, gave_up)
        except MessageGone as e:
            # postsuper -d/-H/-r while it was scanned: Postfix's again, untouched by us.
            event(log, logging.WARNING, "message left hold while it was scanned; verdict "
                  "dropped, nothing done", queue_id=qid, verdict=found, why=str(e))
            self._done(qid, found, "gone")
        except Exception as e:  # noqa: BLE001  (any one message's failure is that message's)
            self.stats.error(f"{qid}: {type(e).__name__}: {e}", "apply")
            event(log, logging.ERROR, "could not apply verdict; message stays in hold, tried "
                  "again in 30s", queue_id=qid, verdict=found, error=f"{type(e).__name__}: {e}")
            if self.spool.journal.path(qid).exists():
                self.intake.unsettled.add(qid)
            self.in_flight.retry_later(qid, 30)
            self._done(qid, found, "failed", keep_attempts=True)
        return False

    def _carry_out(self, inf: InFlight, v: Verdict, gave_up: bool) -> bool:
        """Do what the policy says for each recipient. True if mail went into incoming."""
        plan = disposition.plan(inf.qf, inf.message, v, self.policy, self.cfg.headers,
                                gave_up=gave_up, now=time.time(),
                                quarantine_id=self.spool.quarantine_id(inf.claim),
                                line_length_limit=self.spool.settings.line_length_limit)
        for line in plan.notes:
            line.write(log)
        new_ids: list[str] = []
        if plan.kind == "leave":
            self.intake.left_for_human.add((inf.claim.queue_id, inf.claim.inode))
        elif plan.kind == "release":
            hold_parent = inf.claim.path.parent
            target = self.spool.release(inf.claim, sync=False)
            self._dirty_dirs.update((target.parent, hold_parent))   # fsync'd by the handover
        elif plan.kind == "quarantine":
            self.spool.quarantine(inf.claim, plan.quarantine or {})
        else:
            new_ids = self.spool.rewrite(inf.claim, list(plan.files), quarantine=plan.quarantine)
        plan.story_with(new_ids).write(log)
        for notice in plan.notices:
            self.notifier.notify(notice)
        self._done(inf.claim.queue_id, plan.verdict, plan.outcome, plan.kind == "leave")
        return plan.kind == "release" or bool(new_ids)

    def _done(self, qid: str, verdict: str, outcome: str, keep_attempts: bool = False) -> None:
        self.in_flight.done(qid, keep_attempts)
        if not keep_attempts:
            self.intake.done(qid)
        self.stats.count(verdict, outcome)
        self.metrics.in_flight.set(len(self.in_flight))

    def _finish_batch(self, released: bool) -> None:
        """Once per batch of verdicts, not per message: have the renames made durable and
        then qmgr told (dispatcher/handover.py, on its own thread), and drop content keys
        and attempt rows in one go."""
        if released:
            self.handover.released(self._dirty_dirs)
            self._dirty_dirs = set()
        self.transport.forget([self.transport.key(q) for q in self.in_flight.take_done()])
        self.in_flight.forget_done()

    def _housekeeping(self) -> None:
        self.status.write({
            "pid": os.getpid(), "id": self.id, "time": time.time(), **self.intake.status(),
            **self.in_flight.status(), **self.stats.status(),
            "notices_last_hour": self.notifier.limit.summary() if self.notifier.enabled else {},
        })
