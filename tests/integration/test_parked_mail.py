"""Postfix's hold queue is shared: mail parked by someone else, and `holdscan park`.

A message that was queued before (it has Postfix's defer log) and then parked with
`postsuper -h` stays in hold while the dispatcher runs, until `holdscan scan ID`;
`holdscan park` moves a queued message into the quarantine store and `holdscan
quarantine release` brings it back, once, also when the park is killed at any step
and run again.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from holdscan.lab.cluster import HOLDSCAN, lab_config
from holdscan.lab.postfix import PostfixInstance, free_port, run
from holdscan.lab.sink import Sink
from tests.support.mail import send, simple_message
from tests.support.spool import quarantine_entries

pytestmark = [pytest.mark.postfix]


def submit_locally(pf: PostfixInstance, n: int) -> None:
    """Through sendmail and pickup: with hold="smtpd" it is not held, it is delivered."""
    subprocess.run(["sendmail", "-C", str(pf.config_dir), "-f", "s@example.test",
                    "r@example.test"], input=simple_message(n), check=True)


def wait_deferred(pf: PostfixInstance, timeout: float = 30) -> str:
    """Wait for one message in deferred with its defer log; returns its queue ID."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = pf.queue_files("deferred")
        if files and pf.queue_files("defer"):
            return files[0].name
        time.sleep(0.1)
    raise TimeoutError(f"nothing deferred after {timeout}s\n{pf.log()[-2000:]}")


def holdscan(cfg: Path, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HOLDSCAN, *args, "--config", str(cfg)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60)


@pytest.fixture
def down_host(tmp_path):  # noqa: ANN201
    """Postfix relaying to a port where nothing listens yet: mail is deferred."""
    port = free_port()
    with PostfixInstance(port, hold="smtpd") as pf:
        yield pf, port


def test_mail_parked_by_someone_else_stays_until_holdscan_scan(down_host, redis_server, cluster):
    pf, port = down_host
    submit_locally(pf, 1)
    qid = wait_deferred(pf)
    pf.postsuper("-h", qid)
    [parked] = pf.wait_held(1)
    assert parked.name == qid and (pf.queue_dir / "defer").exists()
    before = parked.read_bytes()
    c = cluster(postfix=pf)
    cfg = c.config
    with Sink(port) as sink:
        try:
            c.start_worker()
            c.start_dispatcher()
            # New mail flows past it...
            send(pf.port, "s@example.test", ["r@example.test"], simple_message(2))
            [d] = sink.wait_count(1, timeout=60)
            assert d.message_id == "<msg-2@holdscan.test>"
            c.wait_for(lambda: qid in holdscan(cfg, "status").stdout, 15, "listed as parked")
            # ...while the parked one is left as it was, with its log.
            status = holdscan(cfg, "status").stdout
            assert "parked by someone else: 1" in status and "defer" in status
            assert parked.read_bytes() == before and parked.stat().st_mode & 0o700 == 0o700
            assert pf.queue_files("defer")
            assert sink.count() == 1
            p = holdscan(cfg, "scan", qid)
            assert p.returncode == 0, p.stderr
            sink.wait_count(2, timeout=60)
            pf.wait_empty()
            time.sleep(1)
            ids = sorted(d.message_id for d in sink.deliveries())
            assert ids == ["<msg-1@holdscan.test>", "<msg-2@holdscan.test>"]
            assert "parked by someone else: 0" in holdscan(cfg, "status").stdout
        finally:
            c.close()


def test_holdscan_scan_of_a_message_not_in_hold_says_so(postfix, tmp_path):
    cfg = lab_config(tmp_path / "holdscan.toml", postfix.config_dir, "redis://127.0.0.1:1/0",
                     "unix:/nonexistent")
    p = holdscan(cfg, "scan", "ABCDE12345")
    assert p.returncode == 2
    assert p.stderr.strip() == ("holdscan: ABCDE12345 is not in hold (`postqueue -p` lists "
                                "the queue)")


@pytest.mark.parametrize("crash", ["", "park.before_commit", "park.after_commit",
                                   "park.after_take", "park.after_store"])
def test_park_and_release_round_trip_once_also_when_killed(down_host, tmp_path, crash):
    pf, port = down_host
    submit_locally(pf, 7)
    qid = wait_deferred(pf)
    cfg = lab_config(tmp_path / "holdscan.toml", pf.config_dir, "redis://127.0.0.1:1/0",
                     "unix:/nonexistent")
    if crash:
        p = holdscan(cfg, "park", qid, "--reason", "hold on", env={"HOLDSCAN_CRASH_AT": crash})
        assert p.returncode == -9, p.stderr
    p = holdscan(cfg, "park", qid, "--reason", "hold on")     # again: settles, parks once
    assert p.returncode == 0, p.stderr
    [entry] = quarantine_entries(pf)
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["action"] == "parked" and meta["reason"] == "hold on"
    assert meta["from_queue"] == "deferred" and meta["recipients"] == ["r@example.test"]
    assert entry.name in p.stdout
    assert not pf.queue_files("deferred") and not pf.queue_files("defer")
    assert not list((pf.queue_dir / "holdscan" / "journal").iterdir())
    listed = holdscan(cfg, "quarantine", "list", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [entry.name]
    with Sink(port) as sink:
        p = holdscan(cfg, "quarantine", "release", entry.name)
        assert p.returncode == 0, p.stderr
        assert holdscan(cfg, "quarantine", "release", entry.name).returncode == 0   # once
        [d] = sink.wait_count(1, timeout=60)
        run("postqueue", "-c", str(pf.config_dir), "-f", check=False)
        pf.wait_empty()
        time.sleep(1)
        assert sink.count() == 1 and d.message_id == "<msg-7@holdscan.test>"
    assert "renam" not in pf.postsuper("-s").stderr
