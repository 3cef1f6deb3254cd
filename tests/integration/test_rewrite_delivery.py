"""Rewritten queue files, delivered by a real Postfix: every kind of message the codec
tests read comes out at the sink with its envelope intact, its body byte for byte, and
the added header in place; and `postsuper -s` finds nothing to fix."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from dispatcher.postfix import PostfixSettings
from dispatcher.queuefile import parse, serialize
from dispatcher.spool import Spool
from holdscan.lab.postfix import PostfixInstance, free_port
from holdscan.lab.sink import Delivery, Sink
from tests.support.queuefile_cases import CASES, Case, send_case

pytestmark = pytest.mark.postfix

ADDED = ("X-Holdscan-Test", "added by the rewrite")


def body_of(message: bytes) -> bytes | None:
    """The body as sent (CRLF), or None where the message has no header/body separator."""
    sep = message.find(b"\r\n\r\n")
    return None if sep < 0 else message[sep + 4:]


def rewrite_all(pf: PostfixInstance, count: int) -> None:
    spool = Spool(PostfixSettings.read(str(pf.config_dir)))
    spool.prepare()
    for path in pf.wait_held(count, timeout=60):
        claim = spool.claim(path)
        assert claim is not None
        qf = parse(claim.read_bytes())
        [new_id] = spool.rewrite(claim, [serialize(qf.with_headers(add=[ADDED]))])
        assert new_id != path.name
    spool.wake_qmgr()


def by_case(deliveries: list[Delivery]) -> dict[str, Delivery]:
    """Deliveries of the test cases by case name; other deliveries (the DSN that
    NOTIFY=SUCCESS asks for goes back to the sender) are not counted here."""
    out = {}
    for d in deliveries:
        first = next((r for r in d.rcpt_tos if r.startswith("case-")), None)
        if first is not None:
            name = first.split("@")[0].removeprefix("case-")
            assert name not in out, f"{name} delivered twice"
            out[name] = d
    return out


def wait_cases(sink: Sink, cases: list[Case]) -> dict[str, Delivery]:
    import time
    deadline = time.monotonic() + 120
    while len(got := by_case(sink.deliveries())) < len(cases):
        assert time.monotonic() < deadline, f"delivered: {sorted(got)}"
        time.sleep(0.1)
    return got


def check(case: Case, d: Delivery) -> None:
    expected_rcpts = [case.key] + case.recipients
    if case.sendmail_t:
        expected_rcpts = [case.key, "second@dest.test", "third@dest.test"]
    assert d.mail_from == (case.sender or "<>")    # the sink shows the null sender as <>
    assert sorted(d.rcpt_tos) == sorted(expected_rcpts)
    assert d.header(ADDED[0]) == ADDED[1]
    body = body_of(case.message)
    if body is not None and not case.sendmail_t:
        assert d.body == body, case.name


def test_every_kind_of_message_survives_a_rewrite():
    cases = [c for c in CASES.values() if c.name not in ("emptymessage", "nonheader")]
    with ExitStack() as stack:
        sink = stack.enter_context(Sink(free_port()))
        pf = stack.enter_context(PostfixInstance(sink.port))
        for case in cases:
            send_case(pf, case)
        rewrite_all(pf, len(cases))
        got = wait_cases(sink, cases)
        for case in cases:
            check(case, got[case.name])
        pf.wait_empty()
        assert "renam" not in pf.postsuper("-s").stderr


@pytest.mark.parametrize("variant", ["long_ids", "hashed", "content_filter"])
def test_rewrite_in_other_instances(variant):
    with ExitStack() as stack:
        sink = stack.enter_context(Sink(free_port()))
        kw: dict = {}
        target = sink
        if variant == "long_ids":
            kw = {"long_queue_ids": True}
        elif variant == "hashed":
            kw = {"hash_queue_names": "hold, incoming, deferred, defer", "hash_queue_depth": 2}
        else:
            # The content_filter record (L in the envelope) must survive: the rewritten
            # message goes to the filter, here a second sink, not to the relayhost.
            target = stack.enter_context(Sink(free_port()))
            kw = {"extra_main_cf": {"content_filter": f"smtp:[127.0.0.1]:{target.port}"}}
        pf = stack.enter_context(PostfixInstance(sink.port, **kw))
        cases = [CASES["plain"], CASES["dsn"], CASES["long3000"]]
        for case in cases:
            send_case(pf, case)
        rewrite_all(pf, len(cases))
        got = wait_cases(target, cases)
        for case in cases:
            check(case, got[case.name])
        pf.wait_empty()
        assert "renam" not in pf.postsuper("-s").stderr
        if variant == "content_filter":
            assert by_case(sink.deliveries()) == {}
