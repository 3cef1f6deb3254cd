"""Fixtures for the worker tests: one real clamd for the session, and scanning helpers.

The helpers they use (REQUEST, make_config, Scan) are in tests/support/scanning.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from holdscan.lab.clamd import ClamdServer, available
from shared.config import HeadersConfig
from shared.contract import Verdict
from tests.support.scanning import REQUEST, Scan, make_config
from tests.support.tools import require
from workers.engine import scan_message
from workers.scanners import build_scanners
from workers.scanners.base import Scanner

# Small, so that the "too large" test needs only a few megabytes.
STREAM_MAX = "2M"


@pytest.fixture(scope="session")
def clamd() -> Iterator[ClamdServer]:
    require(available(), "clamd", "clamav-daemon")
    with ClamdServer(stream_max_length=STREAM_MAX) as server:
        yield server


@pytest.fixture(scope="session")
def scanners(clamd: ClamdServer) -> list[Scanner]:
    return build_scanners(make_config(clamd.addresses))


@pytest.fixture
def scan(scanners: list[Scanner]) -> Scan:
    """Scan raw message bytes with every default scanner and the real clamd."""
    def run(raw: bytes, scanner_list: list[Scanner] | None = None,
            headers: HeadersConfig | None = None) -> Verdict:
        return scan_message(raw, REQUEST, scanner_list or scanners, headers or HeadersConfig(),
                            "test-worker")
    return run
