"""Notices through a real Postfix: they reach the sink once, and are never held or scanned.

The lab Postfix here holds only what the public smtpd receives (hold="smtpd",
as deploy/postfix/*.snippet set it up), so a notice handed to sendmail goes
through pickup and the default cleanup, unheld.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.notify import ADMIN_TEMPLATE, MessageTemplate, Notifier, RateLimit
from holdscan.lab.postfix import PostfixInstance, free_port
from holdscan.lab.sink import Sink
from shared.config import ConfigError, NotifyConfig
from tests.support.mail import eicar_message, send
from tests.support.spool import quarantined

pytestmark = [pytest.mark.postfix]


@pytest.fixture
def smtpd_hold_postfix() -> Iterator[tuple[PostfixInstance, Sink]]:
    with Sink(free_port()) as sink, PostfixInstance(sink.port, hold="smtpd") as pf:
        yield pf, sink


@pytest.mark.clamd
@pytest.mark.redis
def test_notices_reach_admin_and_recipient_once_and_are_not_held(smtpd_hold_postfix,
                                                                 redis_server, cluster):
    pf, sink = smtpd_hold_postfix
    c = cluster(postfix=pf, tables={"notify": {
        "admin": "postmaster@example.test", "recipients": True,
        "sender": "holdscan@mx.example.test"}})
    send(pf.port, "bad@example.test", ["rcpt@example.test"], eicar_message(1))
    pf.wait_held(1)                                  # mail from smtpd is held
    c.start_worker()
    c.start_dispatcher()
    got = sink.wait_count(2, timeout=60)
    time.sleep(3)                                # a loop would show by now
    assert sink.count() == 2
    [q] = quarantined(pf)
    by_rcpt = {tuple(d.rcpt_tos): d for d in got}
    assert set(by_rcpt) == {("postmaster@example.test",), ("rcpt@example.test",)}
    for d in got:
        assert d.mail_from == "<>"               # null sender: never bounced back
        assert d.header("Auto-Submitted") == "auto-generated"
        assert d.header("From") == "holdscan <holdscan@mx.example.test>"
    admin = by_rcpt[("postmaster@example.test",)]
    assert admin.header("Subject") == "[holdscan] infected message quarantined: infected 1"
    body = admin.body.decode()
    assert q["queue_id"] in body and q["id"] in body and "Eicar" in body
    assert "rcpt@example.test" in body and "bad@example.test" in body
    user = by_rcpt[("rcpt@example.test",)]
    assert user.header("Subject") == "A message to you was quarantined: infected 1"
    # Not to the sender (backscatter), and nothing was held or scanned after the virus.
    assert all(d.rcpt_tos != ["bad@example.test"] for d in got)
    pf.wait_empty()
    assert pf.queue_files("hold") == []
    time.sleep(1.2)
    status = json.loads((pf.queue_dir / "holdscan" / "status.json").read_text())
    assert status["outcomes"] == {"quarantined": 1}
    assert status["notices_last_hour"] == {"sent": 2, "suppressed": 0}
    # The notices' queue IDs (pickup, uid ...) never appear in the dispatcher's log.
    notice_ids = re.findall(r" ([0-9A-F]{6,}): uid=", pf.log())
    assert len(notice_ids) == 2
    log = c.logs("dispatcher")
    assert not any(i in log for i in notice_ids)
    assert log.count("notice sent to") == 2
    state = json.loads((pf.queue_dir / "holdscan" / "notify.json").read_text())
    assert sorted(state["sent"]) == ["postmaster@example.test", "rcpt@example.test"]


def test_rate_limit_suppresses_past_the_limit_per_address(smtpd_hold_postfix, tmp_path):
    pf, sink = smtpd_hold_postfix
    n = Notifier(NotifyConfig(admin="postmaster@example.test", rate_limit=2),
                 str(pf.config_dir), tmp_path, hostname="mx.example.test")
    fields = {"outcome": "quarantined", "verdict": "infected", "queue_id": "ABC123",
              "subject": "s"}
    sent = [n.send("postmaster@example.test", n.admin_template, fields) for _ in range(3)]
    assert sent == [True, True, False]
    assert n.send("other@example.test", n.admin_template, fields) is True
    sink.wait_count(3, timeout=30)
    time.sleep(1.5)
    assert sink.count() == 3
    assert n.limit.summary() == {"sent": 3, "suppressed": 1}
    state = json.loads((tmp_path / "notify.json").read_text())
    assert len(state["suppressed"]["postmaster@example.test"]) == 1
    pf.wait_empty()


def test_rate_limit_window_is_one_hour(tmp_path: Path) -> None:
    limit = RateLimit(tmp_path / "notify.json", 1)
    t = 1_000_000.0
    assert limit.allow("A@x.test", t) and not limit.allow("a@x.test", t + 10)
    assert limit.allow("a@x.test", t + 3601)


def test_fields_cannot_add_headers_and_templates_are_checked(tmp_path: Path) -> None:
    n = Notifier(NotifyConfig(admin="postmaster@example.test"), "", tmp_path,
                 hostname="mx.example.test")
    data = n.build("postmaster@example.test", n.admin_template, {
        "outcome": "quarantined", "verdict": "infected",
        "subject": "hi\r\nBcc: victim@example.com", "reasons": "one\ntwo"}).decode()
    head, body = data.split("\n\n", 1)
    assert "\nBcc:" not in head and "\r" not in head
    assert head.splitlines()[-1] == \
        "Subject: [holdscan] infected message quarantined: hi , Bcc: victim@example.com"
    assert "one\ntwo" in body
    for text, message in [("Subject: x $nope\n\nbody", "unknown field $nope"),
                          ("X-A: b\n\nbody", "no Subject: line"),
                          ("Subject: x\nTo: $admin\n\nbody", "holdscan sets To: itself"),
                          ("Subject: x", "there is no empty line"),
                          ("Subject: 5$\n\nbody", "a $ that is not")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            MessageTemplate.parse(text, "t")
    MessageTemplate.parse(ADMIN_TEMPLATE, "built-in")
    missing = tmp_path / "missing.txt"
    with pytest.raises(ConfigError, match="admin_template = .*cannot read it"):
        Notifier(NotifyConfig(admin="a@b.c", admin_template=str(missing)), "", tmp_path)
