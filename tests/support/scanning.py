"""Scanning in the worker tests: the request every scan is for, and a config with clamd.

The fixtures that start clamd and build the scanners are in tests/workers/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.config import Config
from shared.contract import ScanRequest, Verdict

REQUEST = ScanRequest(queue_id="4XyzAB1cDEfgH", attempt=1, sender="sender@example.test",
                      recipients=["rcpt@example.test"], content_key="holdscan:c:test", size=0,
                      reply_to="holdscan:v:test", submitted_at=0.0)


def make_config(clamd_addresses: list[str], **scanners: dict[str, Any]) -> Config:
    cfg = Config()
    # No verdict cache unless a test asks for one (with its own Redis): scanning the same
    # bytes twice must reach clamd twice.
    cfg.scanners = {"clamav": {"addresses": clamd_addresses, "timeout": 20.0, "cache_ttl": 0}}
    for name, table in scanners.items():
        cfg.scanners.setdefault(name, {}).update(table)
    return cfg


def clamd_bytes_read(pid: int) -> int:
    """Bytes the clamd process `pid` has read so far (streams, descriptors, files): what
    it was given to scan, seen from outside the worker."""
    with open(f"/proc/{pid}/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["rchar"])


Scan = Callable[..., Verdict]     # (raw, scanners=None, headers=None) -> Verdict
