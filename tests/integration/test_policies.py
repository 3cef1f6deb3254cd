"""Policies end to end: real Postfix, Redis, clamd, and Celery workers as processes.

One infected message to two recipients whose policies differ is split: the
recipient whose rule says strip gets the message without the virus, the other
nothing, the quarantine holds the original once; each delivery happens once,
also when the dispatcher is killed in the middle of the split.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatcher import queuefile
from dispatcher.postfix import PostfixSettings
from dispatcher.spool import Spool
from holdscan.lab.postfix import PostfixInstance
from holdscan.lab.sink import Sink
from tests.support.mail import EICAR, eicar_message, send
from tests.support.spool import (
    assert_spool_clean,
    held_bytes,
    quarantine_entries,
    quarantined,
)

pytestmark = [pytest.mark.postfix, pytest.mark.clamd, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]

STRIP_RULE = """
[[policy.rules]]
name = "strip.test wants attachments stripped"
recipients = ["*@strip.test"]
infected = "strip"
blocked = "strip"
"""


def check_split_outcome(pf: PostfixInstance, sink: Sink, original: bytes) -> None:
    """a@strip.test got the stripped copy once, b@keep.test nothing, the original is in
    the quarantine once, for b only, byte for byte."""
    [d] = sink.wait_count(1, timeout=60)
    deadline = time.monotonic() + 30
    while len(quarantined(pf)) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)                       # a second copy would have arrived by now
    assert sink.count() == 1
    assert d.rcpt_tos == ["a@strip.test"] and d.mail_from == "bad@example.test"
    assert d.message_id == "<bad-1@holdscan.test>"
    assert EICAR not in d.data and b"RUlDQVI" not in d.data      # nor its base64
    assert b"holdscan removed a part of this message" in d.data
    assert b'"eicar.com.txt" (application/octet-stream): clamav: Eicar' in d.data
    assert b"see attachment" in d.data
    assert (d.header("X-Holdscan-Status") or "").startswith("infected (Eicar")
    [q] = quarantined(pf)
    assert q["recipients"] == ["b@keep.test"]
    assert q["all_recipients"] == ["a@strip.test", "b@keep.test"]
    assert q["action"] == "infected" and q["policy"] == ["default"]
    [entry] = quarantine_entries(pf)
    assert (entry / "queuefile").read_bytes() == original
    assert_spool_clean(pf)


def test_two_recipients_two_policies_strip_one_quarantine_other(postfix, sink, cluster):
    send(postfix.port, "bad@example.test", ["a@strip.test", "b@keep.test"], eicar_message(1))
    [original] = held_bytes(postfix)
    c = cluster(extra_toml=STRIP_RULE)
    c.start_worker()
    c.start_dispatcher()
    check_split_outcome(postfix, sink, original)
    log = c.logs("dispatcher")
    assert "split" in log and "strip 1 (rule #1" in log and "quarantine 1 (default)" in log
    # Released, the original goes to b only (a has had its stripped copy), once.
    [q] = quarantined(postfix)
    for _ in range(2):
        p = subprocess.run([sys.executable, "-m", "holdscan.cli", "quarantine", "release",
                            q["id"], "--config", str(c.config)], capture_output=True,
                           text=True, cwd=ROOT, check=False)
        assert p.returncode == 0, p.stderr
    got = sink.wait_count(2, timeout=30)
    postfix.wait_empty()
    time.sleep(1)
    assert sink.count() == 2
    assert got[1].rcpt_tos == ["b@keep.test"]
    assert got[1].data == queuefile.parse(original).message_bytes(b"\r\n")


def test_dispatcher_killed_during_the_split_still_delivers_once(postfix, sink, cluster):
    send(postfix.port, "bad@example.test", ["a@strip.test", "b@keep.test"], eicar_message(1))
    [original] = held_bytes(postfix)
    c = cluster(extra_toml=STRIP_RULE)
    c.start_worker()
    c.start_dispatcher(env={"HOLDSCAN_CRASH_AT": "split.after_store"})
    assert c.dispatcher.wait(60) == -9, c.logs("dispatcher")[-3000:]
    # Killed with the original taken into the quarantine entry, the new file for the
    # delivered recipient not yet in incoming.
    assert len(quarantined(postfix)) == 1 and len(postfix.queue_files("hold")) == 0
    c.start_dispatcher()
    check_split_outcome(postfix, sink, original)
    assert "recovered after an unclean stop" in c.logs("dispatcher")


def test_strip_without_a_plan_falls_back_to_quarantine(postfix, sink, cluster):
    # EICAR as the whole body: there is no part to remove, so the strip recipient's copy
    # is quarantined with the other's, once.
    msg = (b"From: bad@example.test\r\nSubject: body\r\nMessage-ID: <body-1@holdscan.test>\r\n"
           b"\r\n" + EICAR + b"\r\n")
    send(postfix.port, "bad@example.test", ["a@strip.test", "b@keep.test"], msg)
    postfix.wait_held(1)
    c = cluster(extra_toml=STRIP_RULE)
    c.start_worker()
    c.start_dispatcher()
    c.wait_for(lambda: len(quarantined(postfix)) == 1, 60, "quarantined")
    time.sleep(1.5)
    [q] = quarantined(postfix)
    assert sorted(q["recipients"]) == ["a@strip.test", "b@keep.test"]
    assert sink.count() == 0 and postfix.queue_files("hold") == []
    assert "cannot strip; quarantined instead" in c.logs("dispatcher")


def test_deliver_tagged_and_discard_by_recipient(postfix, sink, cluster):
    rules = """
[[policy.rules]]
recipients = ["tagged@example.test"]
blocked = "deliver-tagged"
[[policy.rules]]
recipients = ["gone@example.test"]
blocked = "discard"
"""
    exe = (b"From: s@example.test\r\nSubject: tool\r\nMessage-ID: <exe-1@holdscan.test>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: "
           b"application/octet-stream; name=\"tool.exe\"\r\n\r\nMZ not really\r\n--b--\r\n")
    send(postfix.port, "s@example.test",
         ["tagged@example.test", "gone@example.test", "kept@example.test"], exe)
    postfix.wait_held(1)
    c = cluster(extra_toml=rules)
    c.start_worker()
    c.start_worker(env={"HOLDSCAN_CRASH_AT": "worker.before_scan"})
    c.start_dispatcher()
    [d] = sink.wait_count(1, timeout=60)
    c.wait_for(lambda: len(quarantined(postfix)) == 1, 30, "quarantined")
    time.sleep(1.5)
    assert sink.count() == 1
    assert d.rcpt_tos == ["tagged@example.test"]
    assert d.header("Subject") == "[BLOCKED] tool"
    assert d.header("X-Holdscan-Status").startswith("blocked (denied extension .exe")
    assert b"MZ not really" in d.data
    [q] = quarantined(postfix)
    assert q["recipients"] == ["kept@example.test"]
    assert "discard 1 (rule #2)" in c.logs("dispatcher")


# -- the split itself, killed at every step (no workers needed) ------------------------------
SPLIT_SCRIPT = """
import sys
from pathlib import Path
from dispatcher import queuefile
from dispatcher.postfix import PostfixSettings
from dispatcher.spool import Spool
spool = Spool(PostfixSettings.read(sys.argv[1]))
claim = spool.claim(Path(sys.argv[2]))
qf = queuefile.parse(claim.read_bytes())
a = qf.with_recipients(lambda r: r.address == "a@strip.test")
spool.rewrite(claim, [queuefile.serialize(a)],
              quarantine={"recipients": ["b@keep.test"], "reason": "test"})
print("finished")
"""

SPLIT_POINTS = ["rewrite.after_create", "rewrite.after_write", "split.before_commit",
                "split.after_commit", "split.after_take", "split.after_store",
                "split.after_release"]


@pytest.mark.parametrize("point", SPLIT_POINTS)
def test_split_killed_at_every_step_delivers_once_and_quarantines_once(shared_postfix, point):
    import shutil
    postfix, sink = shared_postfix
    sink.clear()
    shutil.rmtree(postfix.queue_dir / "holdscan" / "quarantine", ignore_errors=True)
    send(postfix.port, "s@example.test", ["a@strip.test", "b@keep.test"],
         b"Subject: split\r\nMessage-ID: <split-1@holdscan.test>\r\n\r\nbody\r\n")
    [path] = postfix.wait_held(1)
    original = path.read_bytes()
    spool = Spool(PostfixSettings.read(str(postfix.config_dir)))
    spool.prepare()
    env = {**os.environ, "HOLDSCAN_CRASH_AT": point, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", SPLIT_SCRIPT, str(postfix.config_dir), str(path)],
                       env=env, capture_output=True, text=True)
    assert p.returncode == -9, p.stderr
    if path.exists():
        assert path.read_bytes() == original                       # rule 8
    spool.recover()
    held = postfix.queue_files("hold")
    if held:
        # Never taken (the take is the commit point): the dispatcher would scan it again
        # and split it again.
        assert point in ("rewrite.after_create", "rewrite.after_write", "split.before_commit",
                         "split.after_commit")
        p = subprocess.run([sys.executable, "-c", SPLIT_SCRIPT, str(postfix.config_dir),
                            str(held[0])], env={**env, "HOLDSCAN_CRASH_AT": ""},
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    spool.wake_qmgr()
    [d] = sink.wait_count(1, timeout=30)
    postfix.wait_empty()
    time.sleep(1)
    assert sink.count() == 1 and d.rcpt_tos == ["a@strip.test"]
    entries = [e for e in spool.quarantine_dir.iterdir() if not e.name.startswith(".")]
    assert len(entries) == 1
    assert (entries[0] / "queuefile").read_bytes() == original
    assert json.loads((entries[0] / "meta.json").read_text())["recipients"] == ["b@keep.test"]
    assert not list(spool.tmp_dir.iterdir()) and not list(spool.journal.dir.iterdir())
    assert "renam" not in postfix.postsuper("-s").stderr
    assert queuefile.parse(original).sender == "s@example.test"


def test_no_verdict_after_max_attempts_follows_the_error_policy(postfix, sink, cluster):
    # A worker that dies on every message it starts: no verdict ever comes.
    rules = """
[[policy.rules]]
recipients = ["fail-open@example.test"]
error = "deliver"
"""
    send(postfix.port, "s@example.test", ["fail-open@example.test", "careful@example.test"],
         b"Subject: poison\r\nMessage-ID: <poison-1@holdscan.test>\r\n\r\nbody\r\n")
    [original] = held_bytes(postfix)
    c = cluster(extra_toml=rules, verdict_deadline=1.0, max_attempts=1)
    c.start_worker(env={"HOLDSCAN_CRASH_AT": "worker.before_scan"})
    c.start_dispatcher()
    [d] = sink.wait_count(1, timeout=60)
    c.wait_for(lambda: len(quarantined(postfix)) == 1, 30, "quarantined")
    time.sleep(1.5)
    assert sink.count() == 1 and d.rcpt_tos == ["fail-open@example.test"]
    assert d.header("X-Holdscan-Status") == \
        "unscanned (no verdict after 1 attempts (a message that kills scanners?))"
    [q] = quarantined(postfix)
    assert q["action"] == "gave_up" and q["recipients"] == ["careful@example.test"]
    [entry] = quarantine_entries(postfix)
    assert (entry / "queuefile").read_bytes() == original
    postfix.wait_empty()
