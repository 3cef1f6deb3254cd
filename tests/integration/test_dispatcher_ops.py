"""Running the dispatcher: inotify, metrics, status, broker outages, privileges, load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from holdscan.lab.cluster import lab_config
from holdscan.lab.postfix import free_port
from holdscan.lab.redis import RedisServer
from tests.support.mail import send, simple_message

ROOT = Path(__file__).resolve().parents[2]


def test_new_mail_is_picked_up_by_inotify_not_the_rescan(postfix, sink, cluster):
    c = cluster(rescan_interval=600.0)
    c.start_worker()
    c.start_dispatcher()
    c.wait_for(lambda: "dispatcher started" in c.logs("dispatcher"), 30, "start")
    time.sleep(1)
    t0 = time.monotonic()
    send(postfix.port, "a@example.test", ["b@example.test"], simple_message(1))
    sink.wait_count(1, timeout=20)
    # Far sooner than the 600 s rescan: the watcher saw the file become ready.
    assert time.monotonic() - t0 < 20


def test_metrics_and_status(postfix, sink, cluster):
    port = free_port()
    c = cluster(metrics_address=f"127.0.0.1:{port}")
    for n in range(3):
        send(postfix.port, "a@example.test", ["b@example.test"], simple_message(n))
    postfix.wait_held(3)
    c.start_worker()
    c.start_dispatcher()
    sink.wait_count(3, timeout=60)
    c.wait_for(lambda: b'holdscan_verdicts_total{outcome="released",verdict="clean"} 3.0'
               in _get(port), 10, "metrics")
    text = _get(port).decode()
    assert "holdscan_scan_latency_seconds_count 3.0" in text
    assert "holdscan_in_flight 0.0" in text
    time.sleep(1.5)         # the status file is written every second
    p = subprocess.run([sys.executable, "-m", "holdscan.cli", "status", "--json", "--config",
                        str(c.config)], capture_output=True, text=True, cwd=ROOT, check=True)
    st = json.loads(p.stdout)
    assert st["dispatcher"]["outcomes"] == {"released": 3}
    assert st["dispatcher"]["in_flight"] == 0 and len(st["dispatcher"]["workers_seen"]) == 1
    p = subprocess.run([sys.executable, "-m", "holdscan.cli", "status", "--config",
                        str(c.config)], capture_output=True, text=True, cwd=ROOT, check=False)
    assert p.returncode == 0 and "dispatcher:     running" in p.stdout


def _get(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read()


def test_broker_down_at_start_then_back(postfix, sink, cluster):
    port = free_port()
    later = RedisServer(port=port)
    c = cluster(broker_url=later.url)
    for n in range(3):
        send(postfix.port, "a@example.test", ["b@example.test"], simple_message(n))
    postfix.wait_held(3)
    c.start_dispatcher()
    c.wait_for(lambda: "broker unavailable" in c.logs("dispatcher"), 30, "outage logged")
    time.sleep(3)
    assert sink.count() == 0 and len(postfix.queue_files("hold")) == 3
    with later:
        c.start_worker()
        sink.wait_count(3, timeout=90)
        log = c.logs("dispatcher")
        assert log.count("broker unavailable") == 1, log[-2000:]
        assert "broker is back" in log


def test_dispatcher_runs_as_mail_owner_and_its_files_belong_to_it(postfix, sink, cluster):
    c = cluster()
    send(postfix.port, "a@example.test", ["b@example.test"], simple_message(1))
    postfix.wait_held(1)
    c.start_worker()
    p = c.start_dispatcher()
    sink.wait_count(1, timeout=60)
    uid = int(next(line.split()[1] for line in Path(f"/proc/{p.pid}/status").read_text()
                   .splitlines() if line.startswith("Uid:")))
    postfix_uid = os.stat(postfix.queue_dir / "hold").st_uid
    assert uid == postfix_uid
    state = postfix.queue_dir / "holdscan"
    for f in [state, *state.rglob("*")]:
        assert f.stat().st_uid == postfix_uid, f


def test_refuses_to_run_as_another_user(postfix):
    cfg = lab_config(postfix.base / "h.toml", postfix.config_dir, "redis://127.0.0.1:1/0",
                     "unix:/nonexistent")
    p = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         str(Path(sys.executable).parent / "holdscan"), "dispatch", "--config", str(cfg),
         "--once"], capture_output=True, text=True, check=False, timeout=60)
    assert p.returncode == 2
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("holdscan: ") and "must run as root" in line and "postfix" in line


@pytest.mark.slow
def test_five_thousand_in_flight(postfix, sink, cluster):
    """All of them claimed and sent at once, then every one delivered exactly once."""
    c = cluster(max_in_flight=5000, verdict_deadline=300.0)
    subprocess.run(["smtp-source", "-s", "20", "-m", "5000", "-l", "1000", "-f",
                    "load@example.test", "-t", "rcpt@example.test",
                    f"127.0.0.1:{postfix.port}"], check=True)
    postfix.wait_held(5000, timeout=120)
    c.start_dispatcher()
    status = postfix.queue_dir / "holdscan" / "status.json"
    c.wait_for(lambda: status.exists() and json.loads(status.read_text())["in_flight"] == 5000,
               120, "5000 in flight")
    c.start_worker(concurrency=2)
    sink.wait_count(5000, timeout=400)
    time.sleep(2)
    assert sink.count() == 5000
    postfix.wait_empty(timeout=60)
