"""A kicked qmgr (`postkick public qmgr I`, PostfixInstance.kick) takes a file from incoming
at once.

qmgr looks at incoming only when something asks it to (a trigger on public/qmgr) and
when master wakes it, every 300 s (the wakeup column of qmgr in master.cf); its own
queue_run_delay timer scans deferred only. So a held file renamed into incoming, as a
release does, stays there until a kick, and is delivered within seconds of one.

postkick used to die of SIGPIPE in about one call in three against Debian's qmgr (the
reason is in kick's docstring); twenty kicks in a row must all succeed.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.support.mail import send, simple_message

pytestmark = [pytest.mark.postfix]


def test_kicked_qmgr_delivers_a_file_renamed_into_incoming(shared_postfix):
    postfix, sink = shared_postfix
    send(postfix.port, "s@example.test", ["r@example.test"], simple_message(1))
    [held] = postfix.wait_held(1)
    time.sleep(2)       # whatever woke qmgr when the mail arrived has been handled
    incoming = postfix.queue_dir / "incoming" / held.name
    os.rename(held, incoming)

    time.sleep(3)
    assert incoming.exists() and sink.count() == 0, \
        "qmgr took the file from incoming without being kicked: this test shows nothing"

    started = time.monotonic()
    postfix.kick()
    [delivery] = sink.wait_count(1, timeout=30)
    took = time.monotonic() - started
    assert delivery.message_id == "<msg-1@holdscan.test>"
    assert held.name in postfix.delivered_ids()
    assert took < 30, f"delivered {took:.0f}s after the kick"
    postfix.wait_empty()


def test_kick_succeeds_every_time(shared_postfix):
    postfix, _ = shared_postfix
    failures = []
    for _ in range(20):
        try:
            postfix.kick()
        except RuntimeError as e:       # an exit status other than 0 (SIGPIPE was -13)
            failures.append(str(e))
    assert failures == []
