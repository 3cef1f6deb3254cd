"""clamd scans a message in place over its UNIX socket (FILDES, a memfd), with no
temporary file; larger streams and TCP keep INSTREAM. Against a real clamd."""

from __future__ import annotations

import time

import pytest

from holdscan.lab.clamd import DETECTED_AS, ClamdServer
from tests.support.mail import EICAR, simple
from workers.clamdclient import FILDES_MAX, Address, ClamdPool

pytestmark = pytest.mark.clamd


def _found_lines(clamd: ClamdServer, start: int, expected: int) -> list[str]:
    """The FOUND lines clamd logged since `start`, once there are `expected` of them (or
    after 5 s): clamd answers the client before it writes the line to its log."""
    deadline = time.monotonic() + 5
    while True:
        lines = clamd.log_path.read_text(errors="replace")[start:].splitlines()
        found = [line for line in lines if "FOUND" in line]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("reuse", [True, False], ids=["session", "one-shot"])
def test_unix_socket_scans_by_descriptor(clamd: ClamdServer, reuse: bool) -> None:
    pool = ClamdPool([Address.parse(clamd.addresses[0])], timeout=10, reuse=reuse)
    start = len(clamd.log_path.read_text(errors="replace"))
    try:
        assert pool.scan(b"Received: x\r\n", simple(EICAR)) == DETECTED_AS
        assert pool.scan(simple(b"nothing to see here\r\n")) is None
        # The memfd is rewritten for each scan: no bytes of the last one linger.
        assert pool.scan(b"x" * 10) is None
    finally:
        pool.close()
    found = _found_lines(clamd, start, 1)
    assert len(found) == 1 and "memfd:" in found[0], found


def test_large_streams_and_tcp_use_instream(clamd: ClamdServer) -> None:
    start = len(clamd.log_path.read_text(errors="replace"))
    unix = ClamdPool([Address.parse(clamd.addresses[0])], timeout=10)
    tcp = ClamdPool([Address.parse(clamd.addresses[1])], timeout=10)
    try:
        big = simple(EICAR + b"\r\n" + b"x" * FILDES_MAX)
        assert unix.scan(big) == DETECTED_AS
        assert tcp.scan(simple(EICAR)) == DETECTED_AS
    finally:
        unix.close()
        tcp.close()
    found = _found_lines(clamd, start, 2)
    assert len(found) == 2 and all("instream(" in line for line in found), found
