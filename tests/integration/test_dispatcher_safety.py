"""The dispatcher against what is not its own: a second dispatcher, verdicts for other
bytes, and error verdicts of both kinds (a component down; a message that breaks a
scanner). Real Postfix, Redis, clamd and workers; verdicts that no honest worker
sends are pushed into the reply list as a confused or stale peer would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from dispatcher import queuefile
from dispatcher.transport import content_key, reply_key
from holdscan.lab.cluster import HOLDSCAN, Cluster
from shared.contract import CONTRACT_VERSION, Started
from tests.support.mail import eicar_message, send, simple_message
from tests.support.spool import quarantined

pytestmark = [pytest.mark.postfix, pytest.mark.clamd, pytest.mark.redis]

DISPATCHER_ID = "safety-test"


def wait_paused(pause: Path, c: Cluster, timeout: float = 60) -> None:
    c.wait_for(pause.exists, timeout, f"pause at {pause}")


@pytest.mark.parametrize(("point", "infected"), [("rewrite.after_commit", False),
                                                  ("quarantine.after_commit", True)])
def test_second_dispatcher_refuses_in_one_line_and_nothing_is_lost(postfix, sink, cluster,
                                                                   tmp_path, point, infected):
    c = cluster(tables={"headers": {"status_header_on_clean": True}})
    if infected:
        send(postfix.port, "bad@example.test", ["r@example.test"], eicar_message(1))
    else:
        send(postfix.port, "s@example.test", ["r@example.test"], simple_message(1))
    postfix.wait_held(1)
    # The dispatcher writes it as mail_owner, who cannot reach pytest's 0700 temp root.
    pauses = Path(tempfile.mkdtemp(prefix="holdscan-pause-"))
    os.chmod(pauses, 0o777)
    pause = pauses / "paused"
    c.start_worker()
    c.start_dispatcher(env={"HOLDSCAN_PAUSE_AT": point, "HOLDSCAN_PAUSE_FILE": str(pause)})
    wait_paused(pause, c)
    # The first one holds an operation half-done: commit written, original not taken.
    second = subprocess.run([HOLDSCAN, "dispatch", "--once", "--config", str(c.config)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("holdscan: another dispatcher (pid ")
    assert "is running on this spool" in lines[0] and "Stop it first" in lines[0]
    # Nothing of the first one's was touched by the second.
    assert list((postfix.queue_dir / "holdscan" / "journal").glob("*.json"))
    pause.unlink()
    if infected:
        c.wait_for(lambda: len(quarantined(postfix)) == 1, 60, "quarantined")
        time.sleep(1)
        assert sink.count() == 0
    else:
        [d] = sink.wait_count(1, timeout=60)
        time.sleep(1)
        assert sink.count() == 1 and d.header("X-Holdscan-Status") == "clean"
        assert quarantined(postfix) == []
    postfix.wait_empty()
    shutil.rmtree(pauses)


def _bytes_of(path: Path) -> tuple[int, str]:
    qf = queuefile.parse(path.read_bytes())
    return path.stat().st_ino, hashlib.sha256(qf.message_bytes(b"\r\n")).hexdigest()


def _verdict(qid: str, inode: int, sha: str, found: str, error_kind: str = "",
             detail: str = "") -> dict:
    return {"v": CONTRACT_VERSION, "queue_id": qid, "attempt": 1, "verdict": found,
            "findings": [{"scanner": "clamav", "verdict": found, "detail": detail or found}],
            "header_edits": [], "scan_times": {}, "worker": "peer@test", "extra": {},
            "inode": inode, "sha256": sha, "error_kind": error_kind}


def _in_flight(r, qid: str) -> bool:
    return bool(r.exists(content_key(DISPATCHER_ID, qid)))


@pytest.mark.parametrize("which", ["other bytes", "other inode"])
def test_verdict_for_other_bytes_is_refused_and_the_message_scanned_again(
        postfix, sink, redis_server, cluster, which):
    c = cluster()
    send(postfix.port, "s@example.test", ["r@example.test"], simple_message(1))
    [path] = postfix.wait_held(1)
    inode, sha = _bytes_of(path)
    if which == "other bytes":
        sha = hashlib.sha256(b"some other message").hexdigest()
    else:
        inode += 1
    r = redis_server.client()
    c.start_dispatcher("--id", DISPATCHER_ID)
    c.wait_for(lambda: _in_flight(r, path.name), 30, "submitted")
    # A stale "infected" for the same queue ID: applied, it would quarantine clean mail.
    r.rpush(reply_key(DISPATCHER_ID), json.dumps([_verdict(path.name, inode, sha, "infected",
                                                           detail="Stale-Signature")]))
    c.wait_for(lambda: "refusing a verdict computed for other bytes" in c.logs("dispatcher"),
               30, "refusal logged")
    assert path.name in c.logs("dispatcher")
    assert quarantined(postfix) == [] and path.exists()
    c.start_worker()
    [d] = sink.wait_count(1, timeout=60)
    time.sleep(1)
    assert sink.count() == 1 and d.message_id == "<msg-1@holdscan.test>"
    assert quarantined(postfix) == []


def test_error_verdicts_a_component_down_waits_a_broken_message_is_given_up_on(
        postfix, sink, redis_server, cluster):
    c = cluster(max_attempts=2)
    send(postfix.port, "s@example.test", ["r@example.test"], simple_message(1))
    send(postfix.port, "s@example.test", ["r@example.test"], simple_message(2))
    held = postfix.wait_held(2)
    r = redis_server.client()
    c.start_dispatcher("--id", DISPATCHER_ID)
    broken, waiting = held
    notices = Counter[str]()

    def answer(path: Path, kind: str, detail: str) -> None:
        """As a worker would: started, then an error verdict of that kind."""
        c.wait_for(lambda: _in_flight(r, path.name), 60, f"{path.name} submitted")
        inode, sha = _bytes_of(path)
        r.rpush(reply_key(DISPATCHER_ID),
                json.dumps(Started([path.name], "peer@test").to_dict()),
                json.dumps([_verdict(path.name, inode, sha, "error", kind, detail)]))
        c.wait_for(lambda: not _in_flight(r, path.name), 30, f"{path.name} answered")
        notices[path.name] += 1

    # Three times "clamd unavailable" for one message: nobody's fault, never counted.
    for _ in range(3):
        answer(waiting, "unavailable", "clamd unavailable: connection refused")
    def status() -> str:
        return subprocess.run([HOLDSCAN, "status", "--config", str(c.config)],
                              capture_output=True, text=True).stdout

    # The status file is written once a second.
    c.wait_for(lambda: f"{waiting.name}  waiting for a scanner" in status(), 10, "listed")
    # Twice "a scanner failed on these bytes" (max_attempts 2) for the other: given up on.
    answer(broken, "message", "scanner failed: UnicodeDecodeError: bad name")
    c.wait_for(lambda: f"{broken.name}  scanner failed on it (1 of 2)" in status(), 10,
               "listed with its reason")
    answer(broken, "message", "scanner failed: UnicodeDecodeError: bad name")
    c.wait_for(lambda: len(quarantined(postfix)) == 1, 30, "the broken one quarantined")
    [q] = quarantined(postfix)
    assert q["queue_id"] == broken.name and q["action"] == "gave_up"
    assert "scanners failed on it 2 times" in q["reason"]
    assert waiting.exists() and quarantined(postfix)[0]["queue_id"] != waiting.name
    # A real worker comes: the one that waited is scanned and delivered, once.
    c.start_worker()
    [d] = sink.wait_count(1, timeout=60)
    time.sleep(1)
    assert sink.count() == 1 and d.message_id in ("<msg-1@holdscan.test>",
                                                   "<msg-2@holdscan.test>")
    assert notices == {waiting.name: 3, broken.name: 2}


def test_a_message_whose_operation_fails_costs_it_a_retry_not_the_dispatcher(postfix, sink,
                                                                             cluster):
    c = cluster(tables={"headers": {"status_header_on_clean": True}})
    send(postfix.port, "s@example.test", ["r@example.test"], simple_message(1))
    send(postfix.port, "s@example.test", ["r@example.test"], simple_message(2))
    first, second = postfix.wait_held(2)
    # Its rewrite cannot take it: a directory stands where its custody copy would go.
    blocker = postfix.queue_dir / "holdscan" / "taken" / first.name
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.mkdir()
    c.start_worker()
    c.start_dispatcher()
    [d] = sink.wait_count(1, timeout=60)
    assert d.message_id in ("<msg-1@holdscan.test>", "<msg-2@holdscan.test>")
    c.wait_for(lambda: "could not apply verdict" in c.logs("dispatcher"), 30, "error logged")
    assert first.name in c.logs("dispatcher") and first.exists()
    assert c.dispatcher is not None and c.dispatcher.poll() is None     # still running
    blocker.rmdir()
    sink.wait_count(2, timeout=90)          # retried after 30 s
    time.sleep(1)
    assert sorted(x.message_id for x in sink.deliveries()) == ["<msg-1@holdscan.test>",
                                                                "<msg-2@holdscan.test>"]
    postfix.wait_empty()
