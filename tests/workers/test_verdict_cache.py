"""The verdict cache (workers/verdictcache.py) with a real clamd and a real Redis.

What clamd was given to scan is read from outside the worker: the bytes the clamd
process read (/proc/PID/io), which a 200 KB attachment scanned 50 times would show.
This module has its own clamd, because one test adds a signature and reloads it.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from holdscan.lab.clamd import DETECTED_AS, ClamdServer, available
from holdscan.lab.redis import RedisServer
from shared.config import HeadersConfig
from shared.contract import Verdict
from tests.support.mail import EICAR, attachment_message, b64, multipart, part, zip_bytes
from tests.support.scanning import REQUEST, clamd_bytes_read, make_config
from tests.support.tools import require
from workers.engine import scan_message
from workers.scanners import build_scanners
from workers.scanners.base import Scanner
from workers.scanners.clamav import ClamavScanner
from workers.verdictcache import VerdictCache, short_version

ATTACHMENT = random.Random(7).randbytes(200_000)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def own_clamd() -> Iterator[ClamdServer]:
    require(available(), "clamd", "clamav-daemon")
    with ClamdServer(stream_max_length="4M") as server:
        yield server


@pytest.fixture(scope="module")
def store() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(store: RedisServer) -> str:
    store.client().flushall()
    return store.url


def scanners_with_cache(clamd: ClamdServer, url: str, address: int = 0,
                        **clamav: object) -> list[Scanner]:
    cfg = make_config([clamd.addresses[address]], clamav={"cache_ttl": 3600, **clamav})
    cfg.broker.url = url
    return build_scanners(cfg)


def cache_of(scanners: list[Scanner]) -> VerdictCache:
    cache = next(s for s in scanners if isinstance(s, ClamavScanner)).cache
    assert cache is not None
    return cache


def scan(raw: bytes, scanners: list[Scanner]) -> Verdict:
    return scan_message(raw, REQUEST, scanners, HeadersConfig(), "test-worker")


def clamd_pid(clamd: ClamdServer) -> int:
    assert clamd.proc is not None
    return clamd.proc.pid


def test_same_attachment_to_many_is_scanned_once(own_clamd, redis_url):
    pid = clamd_pid(own_clamd)
    # Without the cache, every copy reaches clamd: the measure sees them.
    uncached = build_scanners(make_config(own_clamd.addresses[:1]))
    before = clamd_bytes_read(pid)
    for n in range(3):
        assert scan(attachment_message(n, ATTACHMENT), uncached).verdict == "clean"
    assert clamd_bytes_read(pid) - before > 3 * len(ATTACHMENT)

    scanners = scanners_with_cache(own_clamd, redis_url)
    before = clamd_bytes_read(pid)
    verdicts = [scan(attachment_message(n, ATTACHMENT), scanners) for n in range(50)]
    read = clamd_bytes_read(pid) - before
    assert [v.verdict for v in verdicts] == ["clean"] * 50
    # The attachment once, and 50 skeletons of about a kilobyte each.
    assert len(ATTACHMENT) <= read < len(ATTACHMENT) + 50 * 4096, read
    assert (cache_of(scanners).hits, cache_of(scanners).misses) == (49, 1)


def test_infected_attachment_is_infected_every_time(own_clamd, redis_url):
    infected = zip_bytes({"notes.txt": EICAR, "padding.bin": ATTACHMENT})
    first = scanners_with_cache(own_clamd, redis_url)
    later = scanners_with_cache(own_clamd, redis_url)      # another worker process
    for n, scanners in enumerate([first, first, later, later, first]):
        verdict = scan(attachment_message(n, infected, "report.zip"), scanners)
        assert verdict.verdict == "infected"
        found = [f for f in verdict.findings if f.scanner == "clamav"]
        # Pinned to the attachment, so that a strip policy can remove it.
        assert [(f.detail, f.part) for f in found] == [(DETECTED_AS, "2")]
        assert verdict.strip is not None and [p.part for p in verdict.strip.parts] == ["2"]
    assert cache_of(later).hits == 2      # the first worker's answer, used


def test_new_signature_after_flush_is_applied(own_clamd, redis_url):
    attachment = random.Random(8).randbytes(100_000)
    scanners = scanners_with_cache(own_clamd, redis_url, cache_refresh=0.2)
    assert scan(attachment_message(1, attachment), scanners).verdict == "clean"
    assert scan(attachment_message(2, attachment), scanners).verdict == "clean"
    assert cache_of(scanners).hits == 1

    # A local signature for exactly this file, as a third-party feed would add one.
    db = own_clamd.dir / "db" / "holdscan-cache-test.ndb"
    db.write_text(f"Holdscan-Cache-Test:0:*:{attachment[5000:5032].hex()}\n")
    try:
        assert clamd_command(own_clamd, b"RELOAD") == "RELOADING"
        wait_for_signature(own_clamd, attachment)
        # Local signatures leave clamd's VERSION as it was: the administrator flushes.
        flushed = subprocess.run([sys.executable, "-m", "holdscan.cli", "cache", "flush",
                                  "--broker", redis_url], capture_output=True, text=True,
                                 cwd=ROOT, timeout=60)
        assert flushed.returncode == 0, flushed.stderr
        assert "generation 1" in flushed.stdout
        time.sleep(0.3)     # cache_refresh
        verdict = scan(attachment_message(3, attachment), scanners)
        assert verdict.verdict == "infected"
        assert [f.detail for f in verdict.findings if f.scanner == "clamav"] \
            == ["Holdscan-Cache-Test.UNOFFICIAL"]
    finally:
        db.unlink()
        clamd_command(own_clamd, b"RELOAD")
        wait_for_signature(own_clamd, attachment, present=False)


def test_text_and_irregular_mail_go_to_clamd_whole(own_clamd, redis_url, store):
    encoded = b64(ATTACHMENT)
    junk = encoded[:60_000] + b"!*junk*!\r\n" + encoded[60_000:]
    html = b"<html><body>" + b"<p>news of the week</p>\r\n" * 2000 + b"</body></html>"
    scanners = scanners_with_cache(own_clamd, redis_url)
    for raw in (multipart(part(html, "text/html", encoding="7bit")),
                multipart(part(b"see attached\r\n", "text/plain", encoding="7bit"),
                          # Raw base64 with junk inside: the readings differ in where
                          # it ends, so it is a suspect part.
                          part(junk, name="a.bin", encoding="7bit").replace(
                              b"Transfer-Encoding: 7bit", b"Transfer-Encoding: base64"))):
        assert scan(raw, scanners).verdict == "clean"
    assert (cache_of(scanners).hits, cache_of(scanners).misses) == (0, 0)
    assert store.client().keys("holdscan:vcache:*") == []


def test_key_names_clamd_version_and_configuration(own_clamd, redis_url, store):
    scanners = scanners_with_cache(own_clamd, redis_url)
    other = scanners_with_cache(own_clamd, redis_url)
    # The same clamd by another address: another configuration, other keys.
    moved = scanners_with_cache(own_clamd, redis_url, address=1)
    for s in (scanners, other, moved):
        assert scan(attachment_message(1, ATTACHMENT), s).verdict == "clean"
    assert cache_of(other).hits == 1
    assert (cache_of(moved).hits, cache_of(moved).misses) == (0, 1)
    keys = sorted(k.decode() for k in store.client().keys("holdscan:vcache:*"))
    version = short_version(clamd_command(own_clamd, b"VERSION"))
    assert len(keys) == 2
    assert all(k.startswith(f"holdscan:vcache:{version}.g0:") for k in keys)
    assert keys[0].rsplit(":", 1)[1] == keys[1].rsplit(":", 1)[1]      # the same SHA-256


@pytest.mark.parametrize("url", ["wrong-password", "nobody-listens", "stopped"])
def test_without_redis_verdicts_are_right(own_clamd, url, tmp_path):
    with RedisServer(password="right") as good:
        target = {"wrong-password": good.url.replace(":right@", ":wrong@"),
                  "nobody-listens": "redis://127.0.0.1:1/0",
                  "stopped": good.url}[url]
        scanners = scanners_with_cache(own_clamd, target)
        infected = zip_bytes({"notes.txt": EICAR, "padding.bin": ATTACHMENT})
        if url == "stopped":
            assert scan(attachment_message(1, infected, "r.zip"), scanners).verdict == "infected"
            good.stop()
        for n in range(2):
            assert scan(attachment_message(n, ATTACHMENT), scanners).verdict == "clean"
            verdict = scan(attachment_message(n, infected, "r.zip"), scanners)
            assert verdict.verdict == "infected"
            assert [f.detail for f in verdict.findings if f.scanner == "clamav"] \
                == [DETECTED_AS]


def test_flush_without_redis_says_what_to_check():
    out = subprocess.run([sys.executable, "-m", "holdscan.cli", "cache", "flush", "--broker",
                          "redis://:secret@127.0.0.1:1/0"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("holdscan: cannot reach the content store")
    assert "broker.content_url" in lines[0] and "secret" not in lines[0]


def test_short_version():
    assert short_version("ClamAV 1.4.6/27185/Mon Dec  1 09:24:02 2026") == "1.4.6/27185"
    assert short_version("ClamAV 1.4.6") == "1.4.6"


def clamd_command(clamd: ClamdServer, command: bytes) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(clamd.socket_path)
        s.sendall(b"z" + command + b"\0")
        reply = b""
        while not reply.endswith(b"\0"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.rstrip(b"\0").decode()


def wait_for_signature(clamd: ClamdServer, data: bytes, present: bool = True) -> None:
    """Until clamd (reloading in the background) does or does not detect `data`."""
    from workers.clamdclient import Address, ClamdPool
    pool = ClamdPool([Address.parse(clamd.addresses[0])], reuse=False)
    deadline = time.monotonic() + 30
    while (pool.scan(data) is not None) != present:
        assert time.monotonic() < deadline, "clamd did not reload"
        time.sleep(0.1)
    pool.close()
