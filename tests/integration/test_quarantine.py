"""Quarantine management against a real Postfix: list, show, release, delete, expire.

Release puts the original back into Postfix's incoming queue as a new queue
file; the sink must get the original envelope and body exactly once, also
when `holdscan quarantine release` is killed at any step and run again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatcher import queuefile, queueid
from dispatcher.postfix import PostfixSettings
from dispatcher.quarantine import QuarantineError, QuarantineStore, parse_since
from dispatcher.spool import Spool
from holdscan.lab.postfix import PostfixInstance
from holdscan.lab.sink import Sink
from tests.support.mail import send

pytestmark = [pytest.mark.postfix]

ROOT = Path(__file__).resolve().parents[2]
RECIPIENTS = ["a@example.test", "b@example.test"]


@pytest.fixture
def pf(shared_postfix: tuple[PostfixInstance, Sink]) -> PostfixInstance:
    """The module's Postfix; each test starts with an empty sink and quarantine and
    leaves the queues empty."""
    pf, sink = shared_postfix
    sink.clear()
    shutil.rmtree(pf.queue_dir / "holdscan" / "quarantine", ignore_errors=True)
    spool(pf).prepare()
    return pf


@pytest.fixture
def sink(shared_postfix: tuple[PostfixInstance, Sink]) -> Sink:
    return shared_postfix[1]


def spool(pf: PostfixInstance) -> Spool:
    return Spool(PostfixSettings.read(str(pf.config_dir)))


def quarantine_one(pf: PostfixInstance, n: int = 1, recipients: list[str] = RECIPIENTS,
                   meta: dict | None = None) -> tuple[str, bytes]:
    """Send a message, and quarantine it the way the dispatcher does. (ID, original)"""
    body = f"line one of {n}\r\n" + "x" * 3000 + "\r\nthe end\r\n"       # a long line too
    msg = (f"From: s@example.test\r\nTo: a@example.test\r\nSubject: stopped {n}\r\n"
           f"Message-ID: <q-{n}@holdscan.test>\r\n\r\n{body}").encode()
    send(pf.port, "s@example.test", recipients, msg)
    [path] = pf.wait_held(1)
    sp = spool(pf)
    claim = sp.claim(path)
    original = claim.read_bytes()
    qf = queuefile.parse(original)
    qid = sp.quarantine(claim, {"time": time.time(), "sender": qf.sender,
                                "recipients": recipients, "action": "infected",
                                "reason": "clamav: Eicar-Test-Signature",
                                "subject": f"stopped {n}", **(meta or {})})
    return qid, original


def holdscan(pf: PostfixInstance, *args: str, crash_at: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOLDSCAN_CRASH_AT": crash_at}
    env.pop("HOLDSCAN_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "holdscan.cli", *args, "--postfix-config",
                           str(pf.config_dir)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)


def assert_released_once(pf: PostfixInstance, sink: Sink, original: bytes,
                         recipients: list[str]) -> None:
    [d] = sink.wait_count(1, timeout=30)
    pf.wait_empty()
    time.sleep(1)
    assert sink.count() == 1
    qf = queuefile.parse(original)
    assert d.mail_from == qf.sender and sorted(d.rcpt_tos) == sorted(recipients)
    # The original message, byte for byte (no new Received: it never went through cleanup).
    assert d.data == qf.message_bytes(b"\r\n")
    assert pf.queue_files("hold") == []          # not held, so never scanned again
    assert "renam" not in pf.postsuper("-s").stderr


def test_release_delivers_the_original_envelope_and_body_once(pf, sink):
    qid, original = quarantine_one(pf)
    p = holdscan(pf, "quarantine", "release", qid)
    assert p.returncode == 0, p.stderr
    assert f"{qid} released as queue ID" in p.stdout
    assert_released_once(pf, sink, original, RECIPIENTS)
    meta = json.loads((spool(pf).quarantine_dir / qid / "meta.json").read_text())
    new_id = meta["released_as"]
    assert queueid.is_valid(new_id) and meta["released_to"] == RECIPIENTS
    assert meta["released_by"] == "root" and abs(meta["released_at"] - time.time()) < 60
    assert new_id in pf.log()            # Postfix delivered it under that ID
    # Released again: reported, not delivered again.
    p = holdscan(pf, "quarantine", "release", qid)
    assert p.returncode == 0 and "released already" in p.stdout and new_id in p.stdout
    time.sleep(1.5)
    assert sink.count() == 1


RELEASE_POINTS = ["rewrite.after_create", "rewrite.after_write", "qrelease.before_commit",
                  "qrelease.after_commit", "qrelease.after_move"]


@pytest.mark.parametrize("point", RELEASE_POINTS)
def test_release_killed_at_every_step_then_repeated_delivers_once(pf, sink, point):
    qid, original = quarantine_one(pf)
    p = holdscan(pf, "quarantine", "release", qid, crash_at=point)
    assert p.returncode == -9, p.stderr
    entry = spool(pf).quarantine_dir / qid
    leftovers = sorted(f.name for f in entry.iterdir())
    if point == "qrelease.after_commit":
        # Committed, not yet moved: the new file waits in the entry.
        assert len(leftovers) == 3
    p = holdscan(pf, "quarantine", "release", qid)
    assert p.returncode == 0, p.stderr
    assert_released_once(pf, sink, original, RECIPIENTS)
    assert sorted(f.name for f in entry.iterdir()) == ["meta.json", "queuefile"]


def test_release_to_another_address_and_only_the_stopped_recipients(pf, sink):
    qid, original = quarantine_one(pf, 2, meta={"recipients": ["b@example.test"],
                                                "all_recipients": RECIPIENTS})
    p = holdscan(pf, "quarantine", "release", qid)
    assert p.returncode == 0, p.stderr
    # A split message: only the recipient it was stopped for (a had its own copy).
    assert_released_once(pf, sink, original, ["b@example.test"])
    sink.clear()
    qid, original = quarantine_one(pf, 3)
    p = holdscan(pf, "quarantine", "release", qid, "--to", "admin@example.test")
    assert p.returncode == 0, p.stderr
    assert_released_once(pf, sink, original, ["admin@example.test"])
    p = holdscan(pf, "quarantine", "release", qid, "--to", "not an address")
    assert p.returncode == 2 and p.stderr.count("\n") == 1


def test_released_file_gets_a_fresh_create_time(pf, sink):
    qid, original = quarantine_one(pf, 4)
    old = queuefile.parse(original).create_time
    assert old is not None
    # As if it had waited in the quarantine for ten days.
    sp = spool(pf)
    qf = queuefile.parse(original).with_attribute("create_time", str(int(old - 864000)))
    (sp.quarantine_dir / qid / "queuefile").write_bytes(queuefile.serialize(qf))
    # Stop right after the commit to look at the file that goes into incoming.
    assert holdscan(pf, "quarantine", "release", qid,
                    crash_at="qrelease.after_commit").returncode == -9
    meta = json.loads((sp.quarantine_dir / qid / "meta.json").read_text())
    waiting = sp.quarantine_dir / qid / meta["released_as"]
    released = queuefile.parse(waiting.read_bytes())
    assert abs(released.create_time - time.time()) < 60
    assert released.arrival_time == qf.arrival_time          # the rest as it was
    assert released.message_bytes() == qf.message_bytes()
    st = waiting.stat()
    assert st.st_mode & 0o777 == 0o700 and st.st_uid == sp.owner[0]
    assert queueid.inode_of(waiting.name) == st.st_ino      # named from its inode (rule 5)
    QuarantineStore(sp).recover()
    [d] = sink.wait_count(1, timeout=30)
    assert d.message_id == "<q-4@holdscan.test>"
    pf.wait_empty()


def test_list_show_and_filters(pf):
    qid1, _ = quarantine_one(pf, 5)
    qid2, _ = quarantine_one(pf, 6, meta={"action": "blocked",
                                          "reason": 'attachments: denied extension .exe'})
    meta_path = spool(pf).quarantine_dir / qid1 / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["time"] -= 3 * 86400
    meta_path.write_text(json.dumps(meta))
    p = holdscan(pf, "quarantine", "list", "--json")
    assert [r["id"] for r in json.loads(p.stdout)] == [qid1, qid2]
    p = holdscan(pf, "quarantine", "list", "--json", "--since", "1d")
    assert [r["id"] for r in json.loads(p.stdout)] == [qid2]
    p = holdscan(pf, "quarantine", "list", "--json", "--reason", "EICAR")
    assert [r["id"] for r in json.loads(p.stdout)] == [qid1]
    p = holdscan(pf, "quarantine", "list", "--json", "--reason", "blocked")
    assert [r["id"] for r in json.loads(p.stdout)] == [qid2]
    p = holdscan(pf, "quarantine", "list", "--since", "yesterday-ish")
    assert p.returncode == 2 and "give a duration" in p.stderr
    p = holdscan(pf, "quarantine", "show", qid2)
    assert p.returncode == 0, p.stderr
    assert "verdict:      blocked" in p.stdout
    assert "sender:       s@example.test" in p.stdout
    assert "recipients:   a@example.test, b@example.test" in p.stdout
    assert "  Subject: stopped 6" in p.stdout and "released:     no" in p.stdout
    p = holdscan(pf, "quarantine", "show", "NOSUCH-1")
    assert p.returncode == 2 and "no quarantine entry NOSUCH-1" in p.stderr
    p = holdscan(pf, "quarantine", "show", "../etc")
    assert p.returncode == 2 and "not a quarantine ID" in p.stderr


def test_since_reads_durations_and_dates() -> None:
    now = 1_700_000_000.0
    assert parse_since("90m", now) == now - 5400
    assert parse_since("2w", now) == now - 14 * 86400
    assert parse_since("2024-05-01", now) == 1714521600.0
    assert parse_since("2024-05-01T12:00+02:00", now) == 1714521600.0 + 10 * 3600
    with pytest.raises(QuarantineError):
        parse_since("5 fortnights", now)


@pytest.mark.parametrize("crash", ["", "qdelete.after_rename"])
def test_delete_is_safe_to_interrupt_and_repeat(pf, crash):
    qid, _ = quarantine_one(pf, 7)
    p = holdscan(pf, "quarantine", "delete", qid, crash_at=crash)
    assert p.returncode == (-9 if crash else 0), p.stderr
    qdir = spool(pf).quarantine_dir
    assert not (qdir / qid).exists()
    p = holdscan(pf, "quarantine", "list", "--json")
    assert json.loads(p.stdout) == []
    # Run again: nothing left to delete, and what the crash left is gone.
    p = holdscan(pf, "quarantine", "delete", qid)
    assert p.returncode == 2 and f"no quarantine entry {qid}" in p.stderr
    assert p.stderr.count("\n") == 1
    assert sorted(x.name for x in qdir.iterdir()) == [".lock"]


def test_delete_first_finishes_a_committed_release(pf, sink):
    qid, original = quarantine_one(pf, 8)
    p = holdscan(pf, "quarantine", "release", qid, crash_at="qrelease.after_commit")
    assert p.returncode == -9
    p = holdscan(pf, "quarantine", "delete", qid)
    assert p.returncode == 0, p.stderr
    assert_released_once(pf, sink, original, RECIPIENTS)


def test_expire_removes_only_old_entries(pf):
    old, _ = quarantine_one(pf, 9)
    new, _ = quarantine_one(pf, 10)
    meta_path = spool(pf).quarantine_dir / old / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["time"] -= 31 * 86400
    meta_path.write_text(json.dumps(meta))
    p = holdscan(pf, "quarantine", "expire", "--days", "30")
    assert p.returncode == 0 and "1 entry older than 30 days deleted" in p.stdout
    assert [r["id"] for r in json.loads(holdscan(pf, "quarantine", "list", "--json").stdout)] \
        == [new]
    p = holdscan(pf, "quarantine", "expire")
    assert p.returncode == 2 and "give --days N" in p.stderr


def test_dispatcher_expires_the_quarantine_per_config(pf, tmp_path):
    old, _ = quarantine_one(pf, 11)
    new, _ = quarantine_one(pf, 12)
    meta_path = spool(pf).quarantine_dir / old / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["time"] -= 8 * 86400
    meta_path.write_text(json.dumps(meta))
    os.chmod(tmp_path, 0o755)
    cfg = tmp_path / "holdscan.toml"
    cfg.write_text(f'[postfix]\nconfig_directory = "{pf.config_dir}"\n'
                   "[dispatcher]\nquarantine_days = 7\nlocal_workers = 1\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "holdscan.cli", "dispatch", "--once", "--config",
                        str(cfg)], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "expired quarantine entries count=1 days=7" in p.stderr
    left = [e.id for e in QuarantineStore(spool(pf)).entries()]
    assert left == [new]
