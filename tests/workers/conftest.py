"""Fixtures for the scanner tests: one real clamd for the session, and scanning helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.config import Config, HeadersConfig
from shared.contract import ScanRequest, Verdict
from tests.support.clamd import ClamdServer, available
from workers.engine import scan_message
from workers.scanners import build_scanners
from workers.scanners.base import Scanner

# Small, so that the "too large" test needs only a few megabytes.
STREAM_MAX = "2M"

REQUEST = ScanRequest(queue_id="4XyzAB1cDEfgH", attempt=1, sender="sender@example.test",
                      recipients=["rcpt@example.test"], content_key="holdscan:c:test", size=0,
                      reply_to="holdscan:v:test", submitted_at=0.0)


@pytest.fixture(scope="session")
def clamd() -> Iterator[ClamdServer]:
    if not available():
        pytest.skip("clamd is not installed (apt-get install clamav-daemon)")
    with ClamdServer(stream_max_length=STREAM_MAX) as server:
        yield server


def make_config(clamd_addresses: list[str], **scanners: dict[str, Any]) -> Config:
    cfg = Config()
    cfg.scanners = {"clamav": {"addresses": clamd_addresses, "timeout": 20.0}}
    for name, table in scanners.items():
        cfg.scanners.setdefault(name, {}).update(table)
    return cfg


@pytest.fixture(scope="session")
def scanners(clamd: ClamdServer) -> list[Scanner]:
    return build_scanners(make_config(clamd.addresses))


Scan = Callable[..., Verdict]     # (raw, scanners=None, headers=None) -> Verdict


@pytest.fixture
def scan(scanners: list[Scanner]) -> Scan:
    """Scan raw message bytes with every default scanner and the real clamd."""
    def run(raw: bytes, scanner_list: list[Scanner] | None = None,
            headers: HeadersConfig | None = None) -> Verdict:
        return scan_message(raw, REQUEST, scanner_list or scanners, headers or HeadersConfig(),
                            "test-worker")
    return run
