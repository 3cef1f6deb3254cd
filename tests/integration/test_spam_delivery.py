"""Spam scores end to end: real Postfix, Redis, clamd, spamd and a Celery worker.

The scanner's own tests (tests/workers/test_spam.py) prove the scores and
headers in the verdict; this proves they reach the recipient: the dispatcher
applies the header edits, a sender's forged spam header does not survive, and
each message arrives once.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from holdscan.lab.cluster import Cluster
from holdscan.lab.postfix import PostfixInstance
from holdscan.lab.redis import RedisServer
from holdscan.lab.sink import Sink
from holdscan.lab.spam import GTUBE, SpamdServer
from tests.support.mail import send

pytestmark = [pytest.mark.postfix, pytest.mark.clamd, pytest.mark.redis, pytest.mark.spam]


def message(n: int, body: bytes, extra_headers: bytes = b"") -> bytes:
    return (b"From: sender@example.test\r\nTo: rcpt@example.test\r\n"
            b"Subject: test %d\r\nMessage-ID: <spam-%d@holdscan.test>\r\n" % (n, n)
            + extra_headers + b"\r\n" + body)


def test_spam_headers_reach_the_recipient(postfix: PostfixInstance, sink: Sink,
                                          redis_server: RedisServer,
                                          cluster: Callable[..., Cluster],
                                          spamd: SpamdServer) -> None:
    c = cluster(tables={"scanners.spam": {"url": spamd.url, "timeout": 20.0},
                        "headers.subject_tags": {"spam": "[SPAM]"}})
    forged = b"X-Holdscan-Spam-Status: No, score=-100.0 required=5.0\r\n"
    send(postfix.port, "sender@example.test", ["rcpt@example.test"],
         message(1, GTUBE + b"\r\n", forged))
    send(postfix.port, "sender@example.test", ["rcpt@example.test"],
         message(2, b"Hi Bob,\r\n\r\nlunch tomorrow at noon?\r\n\r\nAlice\r\n"))
    postfix.wait_held(2)
    c.start_worker()
    c.start_dispatcher()
    got = {d.message_id: d for d in sink.wait_count(2, timeout=60)}
    c.close()
    assert sink.count() == 2
    spam, plain = got["<spam-1@holdscan.test>"], got["<spam-2@holdscan.test>"]

    # GTUBE is 1000 points; other rules move it a little (ALL_TRUSTED: mail from localhost).
    score = str(spam.header("X-Holdscan-Spam-Score"))
    assert float(score) > 900
    assert spam.header("X-Holdscan-Spam-Status") == f"Yes, score={score} required=5.0"
    assert spam.data.count(b"X-Holdscan-Spam-Status:") == 1, "the forged one is gone"
    assert spam.header("X-Holdscan-Status") == f"spam (high score {score} >= 15.0)"
    assert spam.header("Subject") == "[SPAM] test 1"
    assert GTUBE in spam.body

    assert str(plain.header("X-Holdscan-Spam-Status")).startswith("No, score=")
    assert plain.header("X-Holdscan-Status") is None
    assert plain.header("Subject") == "test 2"
