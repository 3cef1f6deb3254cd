"""The compose stack, for real: docker-compose.yml (with docker-compose.test.yml, which
builds every image from a Debian base made here and replaces the images no registry serves
here) and the `mailhost` profile, on a Docker engine of this machine; mail goes in by SMTP
to the Postfix container's published loopback port.

One stack for the module (bringing it up costs half a minute even with every image
cached); the tests run in order and each leaves the hold queue empty. It skips only when no
Docker engine can be had at all (dockerd not startable: not root, no kernel support); a
missing program that scripts/bootstrap.sh installs is a failure.

The run's files (screenshot of Flower, every container's log, dockerd's log, the timings)
go to a directory printed at the start, under test-artifacts/compose/ (or
$HOLDSCAN_TEST_ARTIFACTS/compose/).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import smtplib
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from holdscan.lab.docker import EngineUnavailable
from tests.support.browser import artifacts_dir, chromium
from tests.support.compose_stack import FLOWER_USER, ComposeStack
from tests.support.mail import eicar_message, send, send_many, simple_message
from tests.support.tools import require_program

pytestmark = [pytest.mark.slow, pytest.mark.docker]

KEEP_RUNS = 5


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """A line in the test log itself, past pytest's output capture."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def _artifacts_dir() -> Path:
    """A directory for this run next to the web tests' (test-artifacts/ or
    $HOLDSCAN_TEST_ARTIFACTS); the last few runs are kept."""
    root = artifacts_dir("compose")
    runs = sorted(p for p in root.iterdir() if p.is_dir())
    for old in runs[:-(KEEP_RUNS - 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=root))


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[ComposeStack]:
    for program, package in (("docker", "docker.io"), ("docker-compose", "docker-compose"),
                             ("debootstrap", "debootstrap"), ("chromium", "chromium"),
                             ("chromedriver", "chromium-driver")):
        require_program(program, package)
    artifacts = _artifacts_dir()
    _say(request, f"\ncompose tests: screenshots, logs and timings in {artifacts}")
    s = ComposeStack(artifacts)
    try:
        s.start(workers=3)
    except EngineUnavailable as e:
        s.close()
        pytest.skip(f"no Docker engine can be started here: {e}")
    except BaseException:
        s.close()
        raise
    yield s
    (artifacts / "timings.json").write_text(json.dumps(s.timings, indent=1))
    s.close()
    _say(request, "compose tests: " + ", ".join(f"{k} {v:.0f}s" for k, v in s.timings.items())
         + f"; files in {artifacts}")


# -- helpers ---------------------------------------------------------------------------------

def status(stack: ComposeStack) -> dict[str, Any]:
    assert stack.project is not None
    p = stack.project.exec("dispatcher", "holdscan", "status", "--json", check=False)
    assert p.stdout, p.stderr
    return dict(json.loads(p.stdout))


def quarantine(stack: ComposeStack) -> list[dict[str, Any]]:
    assert stack.project is not None
    p = stack.project.exec("dispatcher", "holdscan", "quarantine", "list", "--json")
    return list(json.loads(p.stdout))


def wait_hold_empty(stack: ComposeStack, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = status(stack)
        if st["hold_depth_now"] == 0 and st["dispatcher"]["in_flight"] == 0:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"hold not empty after {timeout:.0f}s: {st}")
        time.sleep(1)


def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def worker_hostnames(stack: ComposeStack) -> set[str]:
    assert stack.project is not None
    return {c["hostname"] for c in stack.project.containers("worker")}


# -- up --scale worker=3 ---------------------------------------------------------------------

def test_every_service_is_healthy_by_its_own_healthcheck(stack: ComposeStack) -> None:
    assert stack.project is not None
    cs = stack.project.containers()
    assert sorted(c["service"] for c in cs) == sorted(
        s for s, n in stack.expected(3).items() for _ in range(n))
    assert all(c["health"] == "healthy" for c in cs), cs
    # Published ports are on loopback only, on the ports this run chose.
    for service, port, host_port in (("postfix", 25, stack.smtp_port),
                                     ("flower", 5555, stack.flower_port),
                                     ("dispatcher", 9911, stack.metrics_port),
                                     ("web", 8025, stack.web_port)):
        out = stack.project.run("port", service, str(port)).stdout.strip()
        assert out == f"127.0.0.1:{host_port}", (service, out)


def test_clean_mail_is_delivered_once_and_eicar_quarantined(stack: ComposeStack) -> None:
    send(stack.smtp_port, "sender@example.test", ["rcpt@example.org"], simple_message(1))
    send(stack.smtp_port, "bad@example.test", ["rcpt@example.org"], eicar_message(1))
    stack.sink.wait_for({"<msg-1@holdscan.test>"}, timeout=60)
    deadline = time.monotonic() + 60
    while not [q for q in quarantine(stack) if q.get("sender") == "bad@example.test"]:
        assert time.monotonic() < deadline, "EICAR mail not quarantined within 60s"
        time.sleep(1)
    wait_hold_empty(stack)
    [entry] = [q for q in quarantine(stack) if q.get("sender") == "bad@example.test"]
    assert "Eicar-Test-Signature" in json.dumps(entry)
    ids = stack.sink.message_ids()
    assert ids["<msg-1@holdscan.test>"] == 1
    assert "<bad-1@holdscan.test>" not in ids


def test_holdscan_status_in_the_dispatcher_lists_three_workers(stack: ComposeStack) -> None:
    # A worker is listed once it returned a verdict: send small rounds until each of the
    # three has scanned something (prefetch 1 and one process each: the idle ones get it).
    hostnames = worker_hostnames(stack)
    assert len(hostnames) == 3
    n = 1000
    deadline = time.monotonic() + 120
    while set(status(stack)["dispatcher"]["workers_seen"]) != hostnames:
        assert time.monotonic() < deadline, status(stack)["dispatcher"]["workers_seen"]
        send_many(stack.smtp_port, 6, start=n, threads=3)
        n += 6
        time.sleep(2)
    wait_hold_empty(stack)
    assert stack.project is not None
    text = stack.project.exec("dispatcher", "holdscan", "status").stdout
    assert "workers seen:   3" in text, text
    for h in hostnames:
        assert h in text


# -- Flower ----------------------------------------------------------------------------------

def test_flower_api_lists_the_workers_and_the_scan_tasks(stack: ComposeStack) -> None:
    code, _ = http_get(f"{stack.flower_url}/api/workers")
    assert code == 401, "Flower answers without its password"
    code, _ = http_get(f"{stack.flower_url}/api/workers", (FLOWER_USER, "wrong"))
    assert code == 401
    auth = (FLOWER_USER, stack.flower_password)
    code, body = http_get(f"{stack.flower_url}/api/workers?refresh=1", auth)
    assert code == 200
    assert set(json.loads(body)) == {f"celery@{h}" for h in worker_hostnames(stack)}
    code, body = http_get(f"{stack.flower_url}/api/tasks?taskname=holdscan.scan_batch", auth)
    assert code == 200
    tasks = json.loads(body).values()
    assert tasks and all(t["name"] == "holdscan.scan_batch" for t in tasks)
    done = [t for t in tasks if t["state"] == "SUCCESS"]
    assert done
    assert {t["worker"] for t in done} <= {f"celery@{h}" for h in worker_hostnames(stack)}


def test_flower_in_a_browser_shows_three_workers(stack: ComposeStack, tmp_path: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def worker_rows(d: Any) -> list[str] | None:
        # Flower redraws the table every few seconds: read the rows' text in one go.
        texts = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#workers-table tbody tr")]
        rows = [t for t in texts if "celery@" in t]
        return rows if len(rows) >= 3 else None

    with chromium(tmp_path) as driver:
        d: Any = driver
        d.get(f"{stack.flower_url}/workers")
        assert not d.find_elements(By.CSS_SELECTOR, "#workers-table"), \
            "Flower showed its workers without the password"
        # Logging in: the browser sends the basic-auth user and password from the URL.
        host = stack.flower_url.removeprefix("http://")
        d.get(f"http://{FLOWER_USER}:{stack.flower_password}@{host}/workers")
        rows = WebDriverWait(d, 30, ignored_exceptions=[StaleElementReferenceException]
                             ).until(worker_rows)
        shot = stack.artifacts / "flower-workers.png"
        d.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    # A row reads "celery@ HOSTNAME Online ...", the name wrapped at its "@".
    names = {"".join(r.split("Online")[0].split()) for r in rows}
    assert len(rows) == 3, rows
    assert names == {f"celery@{h}" for h in worker_hostnames(stack)}
    assert all("Online" in r for r in rows)


def test_metrics_answer_for_prometheus(stack: ComposeStack) -> None:
    code, body = http_get(f"{stack.flower_url}/metrics")
    assert code == 200
    text = body.decode()
    assert 'flower_events_total{task="holdscan.scan_batch",type="task-succeeded"' in text
    code, body = http_get(f"http://127.0.0.1:{stack.metrics_port}/metrics")
    assert code == 200
    text = body.decode()
    assert "holdscan_hold_depth 0.0" in text
    assert re.search(r'holdscan_verdicts_total\{outcome="\w+",verdict="clean"\} [1-9]', text), text


# -- down and up ----------------------------------------------------------------------------

def test_down_and_up_keep_the_quarantine_and_redis_data(stack: ComposeStack) -> None:
    assert stack.project is not None
    marker = f"kept-{time.time()}"
    redis_cli = 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli '
    stack.project.exec("redis", "sh", "-c", redis_cli + f"SET holdscan-test:marker {marker}")
    before = quarantine(stack)
    assert before
    # appendfsync everysec: give the write its second before Redis is stopped.
    time.sleep(1.5)
    stack.project.down()
    assert stack.project.containers(running_only=False) == []
    networks = stack.engine.run("network", "ls", "--quiet", "--filter",
                                f"name={stack.name}_").stdout.split()
    assert networks == [], "down left the compose network"
    stack.up(3)
    assert quarantine(stack) == before
    got = stack.project.exec("redis", "sh", "-c", redis_cli + "GET holdscan-test:marker")
    assert got.stdout.strip() == marker
    # And the stack works as before.
    send(stack.smtp_port, "sender@example.test", ["rcpt@example.org"], simple_message(2))
    stack.sink.wait_for({"<msg-2@holdscan.test>"}, timeout=60)


# -- scaling under load ---------------------------------------------------------------------

class Stream:
    """Clean messages sent by SMTP over a few sessions at a steady pace, counting those
    Postfix accepted, so that a test can act while mail is still coming in."""

    def __init__(self, port: int, numbers: range, sessions: int = 4, rate: float = 10.0):
        self.port, self.numbers, self.sessions, self.rate = port, numbers, sessions, rate
        self.sent = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(numbers[i::sessions],))
                         for i in range(sessions)]

    def _run(self, numbers: range) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as s:
                for n in numbers:
                    s.sendmail("sender@example.test", ["rcpt@example.org"],
                               simple_message(n, body=f"body of message {n}\r\n" * 20))
                    with self._lock:
                        self.sent += 1
                    time.sleep(self.sessions / self.rate)
        except BaseException as e:          # noqa: BLE001 - the test asserts on errors
            self.errors.append(e)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def wait_sent(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < n:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"{self.sent} of {n} messages sent"
            time.sleep(0.2)

    def join(self, timeout: float = 300) -> None:
        for t in self._threads:
            t.join(timeout)


def test_scaling_under_load_delivers_every_message_once(stack: ComposeStack) -> None:
    assert stack.project is not None
    project = stack.project
    numbers = range(100_000, 100_500)
    wanted = {f"<msg-{n}@holdscan.test>" for n in numbers}
    quarantined_before = len(quarantine(stack))
    # About 10 messages a second: each step below happens while mail is still arriving.
    stream = Stream(stack.smtp_port, numbers)
    stream.start()
    try:
        stream.wait_sent(50)
        project.up(scale={"worker": 5}, services=["worker"], no_deps=True)
        stream.wait_sent(150)
        cut_task, victim = kill_a_worker_mid_batch(stack)
        stream.wait_sent(300)
        project.run("restart", "redis")
        stream.wait_sent(400)
        project.up(scale={"worker": 1}, services=["worker"], no_deps=True)
    finally:
        stream.join()
    errors = stream.errors
    assert not errors, errors
    stack.sink.wait_for(wanted, timeout=300)
    wait_hold_empty(stack, timeout=120)
    # A copy sent twice would show by now: the dispatcher rescans every 2 s.
    time.sleep(5)
    ids = stack.sink.message_ids()
    twice = {i: n for i, n in ids.items() if n != 1}
    assert twice == {}, f"delivered more than once: {twice}"
    assert wanted <= set(ids)
    assert len(quarantine(stack)) == quarantined_before
    st = wait_hold_empty(stack)
    assert st["dispatcher"]["waiting_retry"] == 0
    assert len(project.containers("worker")) == 1
    # The killed worker never finished its batch: the batch is still "started" by it, or
    # the broker handed the same task to another worker, which finished it.
    code, body = http_get(f"{stack.flower_url}/api/task/info/{cut_task}",
                          (FLOWER_USER, stack.flower_password))
    assert code == 200, body
    info = json.loads(body)
    assert info["state"] == "STARTED" or (info["state"] == "SUCCESS"
                                          and info["worker"] != f"celery@{victim}"), info


def kill_a_worker_mid_batch(stack: ComposeStack) -> tuple[str, str]:
    """`docker kill` a worker container while it runs a batch; returns the batch's task id
    and the worker's host name.

    A batch takes milliseconds, too short to catch by looking. So clamd is paused (its
    frozen process still accepts connections; the workers' scans wait, well within their
    60 s timeout), Flower names a worker with a started batch, that one is killed, and clamd
    goes on."""
    assert stack.project is not None
    [clamd] = stack.project.containers("clamd")
    auth = (FLOWER_USER, stack.flower_password)
    stack.engine.run("pause", clamd["id"])
    try:
        deadline = time.monotonic() + 30
        while True:
            workers = {c["hostname"]: c for c in stack.project.containers("worker")}
            started = json.loads(http_get(f"{stack.flower_url}/api/tasks?state=STARTED",
                                          auth)[1] or b"{}")
            busy = [(task_id, workers[t["worker"].removeprefix("celery@")])
                    for task_id, t in started.items()
                    if t.get("worker", "").removeprefix("celery@") in workers]
            if busy:
                task_id, victim = busy[0]
                stack.engine.run("kill", victim["id"])
                return task_id, victim["hostname"]
            assert time.monotonic() < deadline, \
                f"no worker started a batch within 30s: {started}, workers {sorted(workers)}"
            time.sleep(0.3)
    finally:
        stack.engine.run("unpause", clamd["id"])
