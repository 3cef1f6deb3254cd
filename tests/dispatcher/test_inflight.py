"""The in-flight bookkeeping with a fake clock: deadlines, started notices, sending alone,
retries and their backoff, giving up, and what is forgotten when a message is done."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher import queuefile
from dispatcher.attempts import Attempts
from dispatcher.inflight import (
    VERDICT_MARGIN,
    GiveUp,
    InFlight,
    Retry,
    Tracker,
    gave_up_verdict,
    scanning_state,
)
from dispatcher.queuefile import QueueFile, Record
from dispatcher.spool import Claim
from shared.config import Config
from shared.contract import Finding, HeaderEdit, Verdict

MAX_ATTEMPTS = 3
DEADLINE = 300.0            # dispatcher.verdict_deadline
TIME_LIMIT = 600.0          # broker.task_time_limit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def attempts(tmp_path: Path) -> Iterator[Attempts]:
    a = Attempts(tmp_path / "attempts.sqlite")
    yield a
    a.close()


@pytest.fixture
def tracker(attempts: Attempts, clock: Clock) -> Tracker:
    return Tracker(attempts, MAX_ATTEMPTS, DEADLINE, TIME_LIMIT, "holdscan",
                   "X-Holdscan-Status", clock=clock)


@pytest.fixture
def claim(tmp_path: Path) -> Iterator[object]:
    made: list[Claim] = []

    def make(queue_id: str) -> Claim:
        path = tmp_path / queue_id
        path.write_bytes(b"x")
        fd = os.open(path, os.O_RDONLY)
        c = Claim(queue_id, path, fd, os.fstat(fd))
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


QF = queuefile.parse(queuefile.serialize(QueueFile(
    [1, 1, 2, 0, 1, 0], [Record("T", b"1700000000 1"), Record("S", b"s@example.test"),
                         Record("R", b"a@example.com"), Record("R", b"b@example.com")],
    [b"Subject: hi", b"", b"body"])))


def add(tracker: Tracker, claim: object, *queue_ids: str) -> list[InFlight]:
    out = []
    for qid in queue_ids:
        inf = InFlight(claim(qid), QF, f"sha-{qid}")  # type: ignore[operator]
        tracker.add(inf)
        out.append(inf)
    return out


def send(tracker: Tracker, size: int = 20) -> list[list[str]]:
    ids = tracker.take_batches(size)
    for b in ids:
        tracker.requests(b, 1_700_000_000.0, lambda q: f"key:{q}", "reply")
        tracker.sent(b)
    return ids


def error(queue_id: str, kind: str, detail: str = "boom", attempt: int = 1) -> Verdict:
    return Verdict(queue_id=queue_id, attempt=attempt, verdict="error",
                   findings=[Finding("clamav", "error", detail)], error_kind=kind)


def clean(queue_id: str) -> Verdict:
    return Verdict(queue_id=queue_id, attempt=1, verdict="clean")


# -- sending ----------------------------------------------------------------------------------

def test_requests_carry_the_message_and_its_next_attempt(tracker, claim, attempts) -> None:
    [inf] = add(tracker, claim, "Q1")
    attempts.increment_many([("Q1", inf.claim.inode)])
    [ids] = tracker.take_batches(20)
    [(request, message)] = tracker.requests(ids, 1_700_000_000.0, lambda q: f"key:{q}",
                                            "reply")
    assert message == QF.message_bytes()
    assert (request.queue_id, request.attempt, request.sender, request.recipients) == \
        ("Q1", 2, "s@example.test", ["a@example.com", "b@example.com"])
    assert (request.content_key, request.reply_to, request.size, request.inode,
            request.sha256, request.submitted_at) == \
        ("key:Q1", "reply", len(message), inf.claim.inode, "sha-Q1", 1_700_000_000.0)
    assert inf.request is request and tracker.unsent == []


def test_batches_of_the_size_and_a_solo_message_alone(tracker, claim) -> None:
    infs = add(tracker, claim, "Q1", "Q2", "Q3", "Q4", "Q5")
    infs[2].solo = True
    assert send(tracker, size=2) == [["Q3"], ["Q1", "Q2"], ["Q4", "Q5"]]


def test_a_batch_is_due_when_full_when_the_oldest_waited_or_when_draining(tracker, claim,
                                                                          clock) -> None:
    assert not tracker.batch_due(3, 0.02, draining=True)       # nothing to send
    add(tracker, claim, "Q1")
    assert not tracker.batch_due(3, 0.02, draining=False)
    assert tracker.batch_wait(0.02) == pytest.approx(0.02)
    assert tracker.batch_due(3, 0.02, draining=True)
    clock.now += 0.01
    assert tracker.batch_wait(0.02) == pytest.approx(0.01)
    add(tracker, claim, "Q2", "Q3")
    assert tracker.batch_due(3, 0.02, draining=False)          # full
    tracker.batch_started = 0.0
    tracker.unsent = ["Q1"]
    assert not tracker.batch_due(3, 0.02, draining=False)
    clock.now += 0.03
    assert tracker.batch_due(3, 0.02, draining=False)          # waited long enough


def test_a_refused_batch_waits_longer_each_time(tracker, claim, clock) -> None:
    add(tracker, claim, "Q1", "Q2")
    tracker.take_batches(20)
    waits = []
    for _ in range(8):
        tracker.not_sent(["Q1", "Q2"])
        assert not tracker.may_submit()
        start = clock.now
        while not tracker.may_submit():
            clock.now += 0.25
        waits.append(clock.now - start)
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert tracker.unsent[:2] == ["Q1", "Q2"]
    tracker.broker_took_all()
    tracker.not_sent(["Q1"])
    clock.now += 0.5
    assert tracker.may_submit()


# -- no verdict ---------------------------------------------------------------------------------

def test_never_started_is_sent_again_after_the_deadline_uncounted(tracker, claim, clock,
                                                                  attempts) -> None:
    [inf] = add(tracker, claim, "Q1")
    send(tracker)
    clock.now += DEADLINE
    assert tracker.overdue().idle == 0 and tracker.unsent == []
    clock.now += 1
    overdue = tracker.overdue()
    assert (overdue.idle, overdue.lines, tracker.unsent) == (1, [], ["Q1"])
    assert overdue.workers == (
        "down: no worker started 1 message(s) within 300s; they wait in hold and are sent "
        "again (is any `holdscan worker` consuming queue 'holdscan'?)")
    assert (inf.sent_at, inf.solo) == (0.0, False)
    assert attempts.get("Q1", inf.claim.inode) == 0
    assert tracker.overdue().idle == 0                  # not sent again meanwhile


def test_started_and_silent_past_the_time_limit_is_sent_again_alone(tracker, claim,
                                                                    clock) -> None:
    [inf, _] = add(tracker, claim, "Q1", "Q2")
    send(tracker)
    assert tracker.started(tracker.sent_ids(["Q1", "other"])) == []
    clock.now += TIME_LIMIT + VERDICT_MARGIN
    # Q2, never started, is long past verdict_deadline: sent again, uncounted. Q1 is not.
    overdue = tracker.overdue()
    assert (overdue.lines, overdue.idle, tracker.unsent) == ([], 1, ["Q2"])
    clock.now += 1
    overdue = tracker.overdue()
    [line] = overdue.lines
    assert (line.level, line.message, line.fields) == (
        logging.WARNING, "a worker started this message and gave no verdict; sending it "
        "again, alone", {"queue_id": "Q1", "attempts": 1})
    assert overdue.idle == 0
    assert inf.solo and tracker.unsent == ["Q2", "Q1"]
    assert send(tracker, size=20) == [["Q1"], ["Q2"]]


def test_started_more_often_than_allowed_is_given_up(tracker, claim, clock) -> None:
    [inf] = add(tracker, claim, "Q1")
    for n in range(1, MAX_ATTEMPTS + 1):
        send(tracker)
        assert tracker.started(["Q1"]) == [], n
        clock.now += TIME_LIMIT + VERDICT_MARGIN + 1
        tracker.overdue()
    send(tracker)
    [give_up] = tracker.started(["Q1"])
    assert give_up.inf is inf
    v = give_up.verdict
    reason = "no verdict after 3 attempts (a message that kills scanners?)"
    assert (v.queue_id, v.attempt, v.verdict, v.error_kind) == ("Q1", 3, "error", "message")
    assert v.reasons == [f"dispatcher: {reason}"]
    assert v.header_edits == [HeaderEdit("replace", "X-Holdscan-Status", f"unscanned ({reason})")]


def test_only_messages_handed_over_are_started(tracker, claim) -> None:
    add(tracker, claim, "Q1", "Q2")
    assert tracker.sent_ids(["Q1", "Q2", "Q9"]) == []
    for ids in tracker.take_batches(1):
        tracker.requests(ids, 0.0, str, "reply")
    assert tracker.sent_ids(["Q1", "Q2", "Q9"]) == ["Q1", "Q2"]


# -- verdicts ------------------------------------------------------------------------------------

def test_a_verdict_for_other_bytes_is_refused_and_the_message_sent_again(tracker, claim) -> None:
    [inf] = add(tracker, claim, "Q1")
    assert tracker.match(clean("Q1")) == (None, None)              # not handed over yet
    send(tracker)
    good = Verdict(queue_id="Q1", attempt=1, verdict="clean", inode=inf.claim.inode,
                   sha256="sha-Q1", worker="w1")
    assert tracker.match(good) == (inf, None)
    stale = Verdict(queue_id="Q1", attempt=1, verdict="clean", inode=inf.claim.inode,
                    sha256="f" * 64, worker="w1")
    got, line = tracker.match(stale)
    assert got is None and line is not None
    assert (line.level, line.message, line.fields) == (
        logging.WARNING, "refusing a verdict computed for other bytes; scanning again",
        {"queue_id": "Q1", "verdict_inode": inf.claim.inode, "inode": inf.claim.inode,
         "verdict_sha256": "f" * 16, "sha256": "sha-Q1"})
    assert tracker.unsent == ["Q1"] and inf.sent_at == 0.0
    assert tracker.match(clean("Q9")) == (None, None)


def test_an_error_a_component_caused_waits_uncounted_longer_each_time(tracker, claim, clock,
                                                                      attempts) -> None:
    [inf] = add(tracker, claim, "Q1")
    delays = []
    for _ in range(10):
        send(tracker)
        tracker.started(["Q1"])
        step = tracker.verdict(inf, error("Q1", "scanner", "clamd unreachable"))
        assert isinstance(step, Retry)
        assert attempts.get("Q1", inf.claim.inode) == 0
        delays.append(step.delay)
        tracker.done("Q1", keep_attempts=True)
        assert not tracker.may_claim("Q1")
        clock.now += step.delay
        assert tracker.may_claim("Q1")
        tracker.add(inf)
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
    assert tracker.waiting == {"Q1": "waiting for a scanner: clamav: clamd unreachable"}
    assert (step.line.level, step.line.message, step.line.fields) == (
        logging.INFO, "scan error; message stays in hold",
        {"queue_id": "Q1", "retry_in": "300s", "kind": "scanner",
         "reasons": "clamav: clamd unreachable"})
    assert tracker.verdict(inf, clean("Q1")) is None
    assert tracker.errors_in_a_row == {} and tracker.waiting == {}


def test_an_error_the_message_caused_counts_and_is_given_up_after_max(tracker, claim,
                                                                       clock) -> None:
    [inf] = add(tracker, claim, "Q1")
    steps = []
    for n in range(1, MAX_ATTEMPTS + 1):
        send(tracker)
        tracker.started(["Q1"])
        step = tracker.verdict(inf, error("Q1", "message", "parser crashed", attempt=n))
        steps.append(step)
        if isinstance(step, Retry):
            assert tracker.waiting["Q1"] == f"scanner failed on it ({n} of 3): " \
                                            "clamav: parser crashed"
            tracker.done("Q1", keep_attempts=True)
            clock.now += step.delay
            tracker.add(inf)
    assert [type(s) for s in steps] == [Retry, Retry, GiveUp]
    assert [s.delay for s in steps[:2]] == [2.0, 4.0]          # type: ignore[union-attr]
    give_up = steps[2]
    assert isinstance(give_up, GiveUp) and give_up.inf is inf
    assert give_up.verdict.attempt == 3
    assert give_up.verdict.reasons == \
        ["dispatcher: scanners failed on it 3 times: clamav: parser crashed"]
    assert "Q1" not in tracker.waiting
    assert tracker.attempts.rows()[0][3] == "clamav: parser crashed"


def test_done_forgets_attempts_and_backoff_unless_kept(tracker, claim, attempts) -> None:
    q1, q2 = add(tracker, claim, "Q1", "Q2")
    send(tracker)
    tracker.started(["Q1", "Q2"])
    tracker.verdict(q1, error("Q1", "scanner"))
    tracker.verdict(q2, error("Q2", "scanner"))
    tracker.done("Q1", keep_attempts=True)
    tracker.done("Q2")
    assert q1.claim.fd == -1 and q2.claim.fd == -1 and len(tracker) == 0
    assert list(tracker.retry_at) == ["Q1"] and list(tracker.waiting) == ["Q1"]
    assert tracker.take_done() == ["Q1", "Q2"] and tracker.take_done() == []
    tracker.forget_done()
    assert [row[0] for row in attempts.rows()] == ["Q1"]


def test_a_failed_apply_waits_its_own_delay(tracker, claim, clock) -> None:
    add(tracker, claim, "Q1")
    tracker.retry_later("Q1", 30)
    tracker.done("Q1", keep_attempts=True)
    clock.now += 29
    assert not tracker.may_claim("Q1") and tracker.status()["waiting_retry"] == 1
    clock.now += 1
    assert tracker.may_claim("Q1") and tracker.status()["waiting_retry"] == 0


def test_stopping_lets_go_of_every_claim(tracker, claim) -> None:
    infs = add(tracker, claim, "Q1", "Q2")
    assert tracker.drop_all() == ["Q1", "Q2"]
    assert len(tracker) == 0 and all(i.claim.fd == -1 for i in infs)


def test_status(tracker, claim) -> None:
    [inf] = add(tracker, claim, "Q1")
    send(tracker)
    tracker.verdict(inf, error("Q1", "scanner"))
    assert tracker.status() == {"in_flight": 1, "waiting_retry": 1,
                                "waiting": {"Q1": "waiting for a scanner: clamav: boom"}}


def test_scanning_state_of_a_verdict() -> None:
    assert scanning_state(clean("Q1")) == "up"
    assert scanning_state(error("Q1", "scanner", "clamd down")) == "down: clamav: clamd down"
    assert scanning_state(Verdict(queue_id="Q1", attempt=1, verdict="error",
                                  error_kind="scanner")) == "down: error"
    assert scanning_state(error("Q1", "message")) == ""


def test_the_given_up_verdict_and_the_configured_status_header(attempts) -> None:
    v = gave_up_verdict("Q1", 2, "why", "")
    assert (v.verdict, v.error_kind, v.header_edits) == ("error", "message", [])
    cfg = Config()
    cfg.headers.prefix = "X-Scan"
    t = Tracker.from_config(attempts, cfg)
    assert t.status_header == "X-Scan-Status"
    assert (t.max_attempts, t.verdict_deadline, t.started_deadline, t.queue) == \
        (5, 300.0, 600 + VERDICT_MARGIN, "holdscan")
    cfg.headers.add_status_header = False
    assert Tracker.from_config(attempts, cfg).status_header == ""
