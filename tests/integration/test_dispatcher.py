"""The dispatcher end to end: real Postfix, Redis, clamd, and Celery workers as processes.

Every test counts at the sink: each clean message must arrive exactly once, with its
body intact, whatever was killed on the way.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest

from holdscan.lab.cluster import HOLDSCAN
from tests.support.mail import eicar_message, send, send_many, simple_message
from tests.support.spool import assert_exactly_once, assert_spool_clean, quarantined

pytestmark = [pytest.mark.postfix, pytest.mark.clamd, pytest.mark.redis]


def test_clean_delivered_once_and_eicar_quarantined(postfix, sink, cluster):
    c = cluster()
    for n in range(5):
        send(postfix.port, "sender@example.test", ["rcpt@example.test"],
             simple_message(n, body=f"line one of {n}\r\nline two\r\n"))
    send(postfix.port, "bad@example.test", ["rcpt@example.test"], eicar_message(1))
    postfix.wait_held(6)
    c.start_worker()
    c.start_dispatcher()
    got = sink.wait_count(5, timeout=60)
    c.wait_for(lambda: len(quarantined(postfix)) == 1, 30, "one quarantined message")
    time.sleep(1)
    assert_exactly_once(sink, [f"<msg-{n}@holdscan.test>" for n in range(5)])
    assert sink.count() == 5
    for d in got:
        n = d.message_id.split("-")[1].split("@")[0]
        assert d.body == f"line one of {n}\r\nline two\r\n".encode()
        assert d.header("X-Holdscan-Status") is None    # clean: released as it came
    [q] = quarantined(postfix)
    assert q["action"] == "infected" and "Eicar" in q["reason"]
    assert q["sender"] == "bad@example.test" and q["recipients"] == ["rcpt@example.test"]
    assert_spool_clean(postfix)
    out = subprocess.run([sys.executable, "-m", "holdscan.cli", "quarantine", "list", "--json",
                          "--config", str(c.config)], capture_output=True, text=True,
                         check=True).stdout
    [row] = json.loads(out)
    assert row["queue_id"] == q["queue_id"] and row["verdict"] == "infected"


# (crash point, how many times it passes before it fires, rewrite clean mail?)
CRASH_POINTS = [
    ("dispatch.after_claim", 3, False),     # per message claimed
    ("dispatch.after_submit", 0, False),    # per batch handed to the broker
    ("apply.before", 3, False),             # per verdict
    ("release.before_rename", 3, False),
    ("release.after_rename", 3, False),
    ("rewrite.after_write", 3, True),       # rewrites: clean mail gets a status header
    ("rewrite.after_commit", 3, True),
    ("rewrite.after_take", 3, True),
    ("rewrite.after_release", 3, True),
]


@pytest.mark.parametrize(("point", "after", "rewrite"), CRASH_POINTS)
def test_sigkill_at_each_step_delivers_exactly_once(postfix, sink, cluster, point, after,
                                                    rewrite):
    c = cluster(tables={"headers": {"status_header_on_clean": rewrite}})
    _crash_and_recover(postfix, sink, c, point, after, rewrite)


def _crash_and_recover(postfix, sink, cluster, point, after, rewrite):
    ids = send_many(postfix.port, 10, threads=2)
    postfix.wait_held(10)
    cluster.start_worker()
    cluster.start_dispatcher(env={"HOLDSCAN_CRASH_AT": point,
                                  "HOLDSCAN_CRASH_AFTER": str(after)})
    assert cluster.dispatcher.wait(60) == -9, cluster.logs("dispatcher")[-3000:]
    cluster.start_dispatcher()
    sink.wait_count(10, timeout=90)
    time.sleep(1.5)
    assert_exactly_once(sink, ids)
    assert sink.count() == 10
    statuses = {d.header("X-Holdscan-Status") for d in sink.deliveries()}
    assert statuses == ({"clean"} if rewrite else {None})
    assert_spool_clean(postfix)


@pytest.mark.slow
def test_random_sigkills_during_500_messages(postfix, sink, cluster):
    c = cluster()
    ids = send_many(postfix.port, 500, threads=10)
    postfix.wait_held(500, timeout=120)
    c.start_worker(concurrency=2)
    rng = random.Random(7)
    for _ in range(4):
        c.start_dispatcher()
        time.sleep(rng.uniform(0.5, 2.5))
        c.kill_dispatcher()
    c.start_dispatcher()
    sink.wait_count(500, timeout=240)
    time.sleep(2)
    assert_exactly_once(sink, ids)
    assert sink.count() == 500
    assert_spool_clean(postfix)


def test_worker_killed_mid_run(postfix, sink, cluster):
    c = cluster()
    ids = send_many(postfix.port, 60)
    postfix.wait_held(60)
    w = c.start_worker(concurrency=2)
    c.start_dispatcher()
    c.wait_for(lambda: sink.count() > 0, 60, "first delivery")
    c.kill_worker(w)
    c.start_worker(concurrency=2)
    sink.wait_count(60, timeout=120)
    time.sleep(1.5)
    assert_exactly_once(sink, ids)
    assert_spool_clean(postfix)


def test_redis_restart_mid_run(postfix, sink, cluster, redis_server):
    c = cluster()
    ids = send_many(postfix.port, 60)
    postfix.wait_held(60)
    c.start_worker(concurrency=2)
    c.start_dispatcher()
    c.wait_for(lambda: sink.count() > 0, 60, "first delivery")
    redis_server.restart()      # every task, content key and verdict in Redis is gone
    sink.wait_count(60, timeout=120)
    time.sleep(1.5)
    assert_exactly_once(sink, ids)
    assert_spool_clean(postfix)


def test_clamd_down_mail_waits_then_flows(postfix, sink, cluster, clamd):
    c = cluster()
    clamd.stop()
    ids = send_many(postfix.port, 5, threads=1)
    postfix.wait_held(5)
    c.start_worker()
    c.start_dispatcher()
    time.sleep(6)
    assert sink.count() == 0
    assert len(postfix.queue_files("hold")) == 5
    clamd.start()
    sink.wait_count(5, timeout=90)
    time.sleep(1)
    assert_exactly_once(sink, ids)
    log = c.logs("dispatcher")
    # One line when scanning went down, one when it came back: not one per message.
    assert log.count("scanning unavailable") == 1, log[-3000:]
    assert log.count("scanning is back") == 1


def test_unparseable_file_is_left_alone_and_the_rest_flows(postfix, sink, cluster):
    c = cluster()
    ids = send_many(postfix.port, 5, threads=1)
    held = postfix.wait_held(5)
    # A file in hold with a valid queue ID that is not a valid queue file.
    bad = held[0].parent / "ABCDE12345"
    bad.write_bytes(b"C\x05hello this is not a queue file")
    os.chown(bad, *(os.stat(held[0]).st_uid, os.stat(held[0]).st_gid))
    os.chmod(bad, 0o700)
    content = bad.read_bytes()
    c.start_worker()
    c.start_dispatcher()
    sink.wait_count(5, timeout=60)
    assert_exactly_once(sink, ids)
    assert bad.read_bytes() == content
    c.wait_for(lambda: "ABCDE12345" in c.logs("dispatcher"), 10, "log line")
    assert "cannot parse" in c.logs("dispatcher")


# A worker whose scanning process dies on every message it starts, as on a poison message.
KILLED_BY_EVERY_MESSAGE = {"HOLDSCAN_CRASH_AT": "worker.before_scan"}


def test_message_that_kills_its_worker_is_quarantined_after_max_attempts(postfix, sink,
                                                                         cluster):
    c = cluster(verdict_deadline=1.0, max_attempts=2)
    send(postfix.port, "s@example.test", ["r@example.test"], simple_message(1))
    postfix.wait_held(1)
    c.start_worker(env=KILLED_BY_EVERY_MESSAGE)
    c.start_dispatcher()
    c.wait_for(lambda: len(quarantined(postfix)) == 1, 60, "quarantine after 2 attempts")
    [q] = quarantined(postfix)
    assert q["action"] == "gave_up" and "2 attempts" in q["reason"]
    assert postfix.queue_files("hold") == []
    assert sink.count() == 0


def test_no_worker_for_longer_than_all_attempts_quarantines_nothing(postfix, sink, cluster):
    # Broker up, nobody consuming: max_attempts x verdict_deadline is 2 s; wait 6 s.
    c = cluster(verdict_deadline=1.0, max_attempts=2)
    ids = send_many(postfix.port, 5, threads=1)
    postfix.wait_held(5)
    c.start_dispatcher()
    c.wait_for(lambda: "no worker started" in c.logs("dispatcher"), 30, "outage logged")
    time.sleep(6)
    assert quarantined(postfix) == [] and sink.count() == 0
    assert len(postfix.queue_files("hold")) == 5
    out = subprocess.run([HOLDSCAN, "status", "--config", str(c.config)],
                         capture_output=True, text=True).stdout
    assert "workers:" in out and "no worker started" in out
    c.start_worker()
    sink.wait_count(5, timeout=60)
    time.sleep(1)
    assert_exactly_once(sink, ids)
    assert quarantined(postfix) == []


def test_sigterm_exits_cleanly(postfix, sink, cluster):
    c = cluster()
    send_many(postfix.port, 5, threads=1)
    postfix.wait_held(5)
    c.start_worker()
    c.start_dispatcher()
    sink.wait_count(5, timeout=60)
    assert c.stop_dispatcher() == 0
    assert "dispatcher stopped" in c.logs("dispatcher")


def test_local_mode_once_without_broker(postfix, sink, cluster):
    c = cluster(broker_url="redis://127.0.0.1:1/0")
    ids = send_many(postfix.port, 8, threads=2)
    send(postfix.port, "bad@example.test", ["rcpt@example.test"], eicar_message(2))
    postfix.wait_held(9)
    p = c.start_dispatcher("--local", "2", "--once")
    assert p.wait(90) == 0, c.logs()[-3000:]
    sink.wait_count(8, timeout=60)
    assert_exactly_once(sink, ids)
    assert [q["action"] for q in quarantined(postfix)] == ["infected"]
    assert postfix.queue_files("hold") == []
