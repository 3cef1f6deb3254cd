"""One running site for the web's tests (package scope: starting it costs seconds):
a Postfix with its sink, quarantined mail (made before the dispatcher starts, as the
dispatcher would have made it), the dispatcher with [web] enabled, `holdscan web` started
as root (it drops to the test's web user), and an administrator."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from holdscan.lab.cluster import Cluster
from holdscan.lab.postfix import PostfixInstance, free_port
from holdscan.lab.sink import Sink
from shared.webrequest import WebPaths
from tests.support.web import (
    ADMIN,
    HOSTILE_SENDER,
    PASSWORD,
    SECOND_ADMIN,
    hostile_message,
    message,
    quarantine_message,
    spool,
    web_config,
)

HOLDSCAN = str(Path(sys.executable).parent / "holdscan")


@dataclass
class Site:
    pf: PostfixInstance
    sink: Sink
    cluster: Cluster
    url: str
    config: Path
    paths: WebPaths
    entries: dict[str, str]
    tmp: Path
    log: Path
    web: subprocess.Popen[bytes] = field(repr=False)


def _holdscan_web(config: Path, *args: str, input: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([HOLDSCAN, "web", "--config", str(config), *args], input=input,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="package")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    # Not under pytest's own temporary directory, which only root may enter: the web's
    # user keeps its data here.
    tmp = Path(tempfile.mkdtemp(prefix="holdscan-web-"))
    os.chmod(tmp, 0o755)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with Sink(free_port()) as sink, PostfixInstance(sink.port, hold="smtpd") as pf:
        now = time.time()
        entries = {
            "report": quarantine_message(pf, message("Quarterly report"), "alice@example.test",
                                         ["r@example.test"], "spam", "spam score 7.1",
                                         "Quarterly report"),
            "junk": quarantine_message(pf, message("Cheap pills"), "spammer@example.test",
                                       ["r@example.test"], "blocked", "forbidden file",
                                       "Cheap pills", when=now - 3 * 3600),
            "hostile": quarantine_message(pf, hostile_message(), HOSTILE_SENDER,
                                          ["r@example.test"], "blocked",
                                          "attachments: <b>x.exe</b>",
                                          "<script>window.__pwned=2</script> subject"),
            "mine": quarantine_message(pf, message("Your invoice", to="carol@example.test"),
                                       "shop@example.test", ["carol@example.test"], "spam",
                                       "spam score 6", "Your invoice"),
            "virus": quarantine_message(pf, message("Open me", to="carol@example.test"),
                                        "bad@example.test", ["carol@example.test"],
                                        "infected", "Eicar-Test-Signature", "Open me"),
            "dave": quarantine_message(pf, message("For dave", to="dave@example.test"),
                                       "x@example.test", ["dave@example.test"], "spam",
                                       "spam score 9", "For dave"),
        }
        config = web_config(tmp / "holdscan.toml", pf, tmp / "webdata",
                            listen=f"127.0.0.1:{port}", base_url=url, digest=True)
        cluster = Cluster(config, tmp)
        cluster.start_dispatcher("--local", "1")
        paths = WebPaths(spool(pf).state_dir)
        cluster.wait_for(lambda: paths.key.exists(), 30, "the dispatcher's web set-up")
        for name in (ADMIN, SECOND_ADMIN):
            p = _holdscan_web(config, "--passwd", name, input=PASSWORD + "\n")
            assert p.returncode == 0, p.stderr
        log = tmp / "web.log"
        with open(log, "wb") as out:
            web = subprocess.Popen([HOLDSCAN, "web", "--config", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=2).read()
                    break
                except OSError:
                    assert web.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            yield Site(pf, sink, cluster, url, config, paths, entries, tmp, log, web)
        finally:
            if web.poll() is None:
                os.killpg(web.pid, signal.SIGTERM)
                web.wait(10)
            cluster.close()
            shutil.rmtree(tmp, ignore_errors=True)
