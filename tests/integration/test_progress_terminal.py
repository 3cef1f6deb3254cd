"""`holdscan dispatch --once` on a terminal: its progress bar, read through a real pty, with
real Postfix, Redis, clamd and a Celery worker (dispatcher/progress.py)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time

import pytest

from tests.support.mail import send_many
from tests.support.spool import assert_exactly_once

pytestmark = [pytest.mark.postfix, pytest.mark.clamd, pytest.mark.redis]

FRAME = re.compile(rb"holdscan \[[#.]+\] (\d+)/(\d+)  (\d+) msg/s  ETA (\S+)  in flight (\d+)")


def read_terminal(master: int, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """Everything written to the terminal until the process exits and closes it."""
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:         # EIO: every writer has closed the terminal
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    else:
        proc.kill()
        raise AssertionError(f"dispatcher still running after {timeout}s:\n{out[-3000:]!r}")
    return out


def test_once_on_a_terminal_shows_the_bar_to_the_end(postfix, sink, cluster):
    c = cluster()
    ids = send_many(postfix.port, 60, threads=4)
    postfix.wait_held(60)
    c.start_worker()
    master, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    started = time.monotonic()
    proc = c.start_dispatcher("--once", stderr=terminal)
    os.close(terminal)
    try:
        out = read_terminal(master, proc, timeout=90)
    finally:
        os.close(master)
    elapsed = time.monotonic() - started
    assert proc.wait(10) == 0, out[-3000:]
    frames = FRAME.findall(out)
    assert frames, out[-3000:]
    handled, total, rate, eta, in_flight = frames[-1]
    assert (int(handled), int(total), eta, int(in_flight)) == (60, 60, b"0:00", 0), frames[-1]
    assert int(rate) > 0
    # At most ~4 draws a second, however many messages and log lines went by.
    assert len(frames) <= 4 * elapsed + 2, (len(frames), elapsed)
    final = out.rsplit(b"\r\x1b[K", 1)[-1].split(b"\r\n")[0]      # the bar left on screen
    assert FRAME.fullmatch(final) and len(final) < 120, final
    sink.wait_count(60, timeout=30)
    assert_exactly_once(sink, ids)
