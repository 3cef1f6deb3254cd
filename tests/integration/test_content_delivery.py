"""Content the peers miss, end to end: through Postfix, the dispatcher and a worker with
clamd, each class's stopped case is quarantined with its verdict and its innocent twin
is delivered once (tests/support/content_cases.py; the scan-engine tests in tests/workers/
cover each class with more cases)."""

from __future__ import annotations

import pytest

from tests.support.content_cases import content_cases
from tests.support.mail import send, with_id
from tests.support.spool import assert_exactly_once, assert_spool_clean, quarantined

pytestmark = [pytest.mark.postfix, pytest.mark.clamd, pytest.mark.redis]


def test_stopped_cases_quarantined_twins_delivered(postfix, sink, cluster):
    c = cluster()
    cases = content_cases()
    delivered, stopped = [], []
    for n, (name, (raw, verdict)) in enumerate(cases.items()):
        mid = f"<content-{n}@holdscan.test>"
        (delivered if verdict == "clean" else stopped).append((mid, verdict, name))
        send(postfix.port, "sender@example.test", ["rcpt@example.test"], with_id(raw, mid))
    postfix.wait_held(len(cases))
    c.start_worker()
    c.start_dispatcher()
    sink.wait_count(len(delivered), timeout=90)
    c.wait_for(lambda: len(quarantined(postfix)) == len(stopped), 60, "stopped cases held")
    assert_exactly_once(sink, [mid for mid, _, _ in delivered])
    assert sink.count() == len(delivered)
    assert sorted(q["action"] for q in quarantined(postfix)) == sorted(v for _, v, _ in stopped)
    assert_spool_clean(postfix)
