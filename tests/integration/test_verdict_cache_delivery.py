"""The verdict cache through the real pipeline: Postfix, the dispatcher, a Celery worker,
clamd and Redis. One attachment sent to several recipients as several messages is
delivered once to each, and clamd reads it once (bytes read by the clamd process)."""

from __future__ import annotations

import random

import pytest

from tests.support.mail import attachment_message, b64, send
from tests.support.scanning import clamd_bytes_read
from tests.support.spool import assert_exactly_once, assert_spool_clean

pytestmark = [pytest.mark.postfix, pytest.mark.clamd, pytest.mark.redis]

ATTACHMENT = random.Random(11).randbytes(200_000)


def test_same_attachment_delivered_once_each_and_scanned_once(postfix, sink, clamd, cluster):
    c = cluster()
    count = 6
    for n in range(count):
        send(postfix.port, "sender@example.test", [f"rcpt{n}@example.test"],
             attachment_message(n, ATTACHMENT))
    postfix.wait_held(count)
    assert clamd.proc is not None
    before = clamd_bytes_read(clamd.proc.pid)
    c.start_worker()
    c.start_dispatcher()
    sink.wait_count(count, timeout=90)
    read = clamd_bytes_read(clamd.proc.pid) - before
    assert_exactly_once(sink, [f"<att-{n}@holdscan.test>" for n in range(count)])
    assert sink.count() == count
    encoded = b64(ATTACHMENT)
    for d in sink.deliveries():
        assert encoded in d.data.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
    # The attachment once, and each message without it (about a kilobyte).
    assert len(ATTACHMENT) <= read < len(ATTACHMENT) + count * 4096, read
    assert_spool_clean(postfix)
