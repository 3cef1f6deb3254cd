"""Broken but innocent MIME is delivered, payloads hidden behind a quirk are quarantined:
end to end through Postfix, the dispatcher and a worker with clamd.

The messages come from the innocent corpus (tests/support/innocent_mail.py) and the
reading cases (tests/support/reading_cases.py); the scan engine tests cover each
of them one by one, this test that a verdict on them is carried out as it should be.
"""

from __future__ import annotations

import pytest

from tests.support.innocent_mail import innocent_corpus
from tests.support.mail import send, with_id
from tests.support.reading_cases import flat_cases
from tests.support.spool import assert_exactly_once, assert_spool_clean, quarantined

pytestmark = [pytest.mark.postfix, pytest.mark.clamd, pytest.mark.redis]

INNOCENT = ["boundary that never occurs", "multipart without a boundary parameter",
            "boundaries that are prefixes of one another", "text after the closing boundary",
            "second conflicting Content-Type, single part",
            "multipart/report DSN with several status parts",
            "Japanese name in folded RFC 2047 words (iso-2022-jp)", "S/MIME signed",
            "mailing-list digest", "footer part appended after the closing boundary"]
HIDDEN = ["yEnc: =ybegin block in a text body", "base64 read differently: padded pieces",
          "structure: outer boundary inside an inner base64 body"]


def test_innocent_quirks_delivered_hidden_payloads_quarantined(postfix, sink, cluster):
    c = cluster()
    corpus, cases = innocent_corpus(), flat_cases()
    ids = [f"<inn-{n}@holdscan.test>" for n in range(len(INNOCENT))]
    for name, mid in zip(INNOCENT, ids, strict=True):
        send(postfix.port, "sender@example.test", ["rcpt@example.test"],
             with_id(corpus[name], mid))
    for n, name in enumerate(HIDDEN):
        send(postfix.port, "bad@example.test", ["rcpt@example.test"],
             with_id(cases[name][0], f"<hid-{n}@holdscan.test>"))
    postfix.wait_held(len(INNOCENT) + len(HIDDEN))
    c.start_worker()
    c.start_dispatcher()
    sink.wait_count(len(INNOCENT), timeout=90)
    c.wait_for(lambda: len(quarantined(postfix)) == len(HIDDEN), 60, "hidden payloads held")
    assert_exactly_once(sink, ids)
    assert sink.count() == len(INNOCENT)
    assert sorted(q["action"] for q in quarantined(postfix)) == ["infected"] * len(HIDDEN)
    assert_spool_clean(postfix)
