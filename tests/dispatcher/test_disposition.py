"""disposition.plan, case by case: what each verdict and policy make of a message, with no
service, spool or broker running. New queue files are parsed back to check them."""

from __future__ import annotations

import dataclasses
import logging
import tomllib

import pytest

from dispatcher import disposition, queuefile
from dispatcher.inflight import gave_up_verdict
from dispatcher.policy import Group, Policy
from dispatcher.queuefile import QueueFile, Record
from shared import mimeparts
from shared.config import HeadersConfig
from shared.contract import Finding, HeaderEdit, StripPart, StripPlan, Verdict

NOW = 1_700_000_123.5
QID = "4ABCD1234"
HEADERS = HeadersConfig()
STATUS = "X-Holdscan-Status"

BODY = [b"From: sender@example.test", b"To: a@example.com, b@example.org",
        b"Subject: hello", b"Message-ID: <m1@example.test>", b"", b"hi there"]

MIXED = [b"From: sender@example.test", b"Subject: report", b"Message-ID: <m2@example.test>",
         b"MIME-Version: 1.0", b'Content-Type: multipart/mixed; boundary="b1"', b"",
         b"--b1", b"Content-Type: text/plain", b"", b"see attached", b"--b1",
         b'Content-Type: application/octet-stream; name="x.exe"',
         b'Content-Disposition: attachment; filename="x.exe"', b"", b"MZbadbad", b"--b1--"]


def queue_file(recipients: tuple[str, ...] = ("a@example.com", "b@example.org"),
               lines: list[bytes] = BODY, done: tuple[str, ...] = ()) -> QueueFile:
    """A queue file as cleanup writes one, through the codec (serialize, then parse)."""
    envelope = [Record("T", b"1700000000 123456"), Record("A", b"create_time=1700000001"),
                Record("S", b"sender@example.test")]
    for r in recipients:
        envelope += [Record("O", r.encode()), Record("R", r.encode())]
    for r in done:
        envelope += [Record("O", r.encode()), Record("D", r.encode())]
    qf = QueueFile([1, 1, len(recipients) + len(done), 0, 1, 0], envelope, list(lines))
    return queuefile.parse(queuefile.serialize(qf))


def policy(text: str = "", on_max_attempts: str = "quarantine") -> Policy:
    return Policy.from_table(tomllib.loads(text).get("policy", {}), on_max_attempts)


def verdict(found: str, *findings: Finding, edits: tuple[HeaderEdit, ...] = (),
            strip: StripPlan | None = None, spam_high: bool = False) -> Verdict:
    return Verdict(queue_id=QID, attempt=1, verdict=found, findings=list(findings),
                   header_edits=list(edits), sha256="0" * 64, strip=strip, spam_high=spam_high)


def status(text: str) -> HeaderEdit:
    return HeaderEdit("replace", STATUS, text)


def plan(qf: QueueFile, v: Verdict, pol: Policy | None = None, gave_up: bool = False,
         headers: HeadersConfig = HEADERS) -> disposition.Disposition:
    return disposition.plan(qf, qf.message_bytes(b"\r\n"), v, pol or policy(), headers,
                            gave_up=gave_up, now=NOW, quarantine_id=f"{QID}-1700000000")


def rcpts(data: bytes) -> list[str]:
    return [r.address for r in queuefile.parse(data).recipients if not r.done]


def header(data: bytes, name: bytes) -> list[bytes]:
    qf = queuefile.parse(data)
    return [ln for ln in qf.content[:qf.header_end()] if ln.lower().startswith(name.lower())]


INFECTED = Finding("clamav", "infected", "Eicar-Signature")
BLOCKED = Finding("filerules", "blocked", "x.exe: executable", part="2")
SPAM = Finding("spamassassin", "spam", "high score 31.0 >= 15.0")


def test_clean_without_edits_is_released() -> None:
    d = plan(queue_file(), verdict("clean"))
    assert (d.kind, d.verdict, d.outcome) == ("release", "clean", "released")
    assert d.files == () and d.quarantine is None and d.notices == () and d.notes == ()
    assert d.story.level == logging.INFO
    assert (d.story.message, d.story.fields) == ("released", {"queue_id": QID, "verdict": "clean"})
    assert d.story_with([]) == d.story


def test_clean_with_edits_is_rewritten_with_them() -> None:
    qf = queue_file()
    d = plan(qf, verdict("clean", edits=(status("clean"),)))
    assert (d.kind, d.verdict, d.outcome) == ("rewrite", "clean", "rewritten")
    [data] = d.files
    assert header(data, b"X-Holdscan-Status:") == [b"X-Holdscan-Status: clean"]
    assert rcpts(data) == ["a@example.com", "b@example.org"]
    assert queuefile.parse(data).content[-1] == b"hi there"
    assert d.quarantine is None and d.notices == ()
    assert d.story.message == "delivered with headers"
    assert d.story_with(["NEW1"]).fields == {
        "queue_id": QID, "verdict": "clean", "reasons": "", "new_queue_id": "NEW1",
        "quarantine_id": "", "policy": "deliver 2 (default)"}


def test_spam_is_delivered_tagged_with_its_status() -> None:
    v = verdict("spam", Finding("spamassassin", "spam", "score 9.1"),
                edits=(status("spam"), HeaderEdit("add", "X-Spam-Score", "9.1")))
    d = plan(queue_file(), v)
    assert (d.kind, d.outcome) == ("rewrite", "rewritten")
    [data] = d.files
    assert header(data, b"Subject:") == [b"Subject: [SPAM] hello"]
    assert header(data, b"X-Holdscan-Status:") == [b"X-Holdscan-Status: spam"]
    assert header(data, b"X-Spam-Score:") == [b"X-Spam-Score: 9.1"]
    assert d.story.fields["reasons"] == "spamassassin: score 9.1"
    assert d.story.fields["policy"] == "deliver-tagged 2 (default)"


def test_subject_tag_from_the_verdict_then_the_configuration() -> None:
    v = verdict("spam", edits=(HeaderEdit("subject_tag", "Subject", "[WORKER]"),))
    [data] = plan(queue_file(), v).files
    assert header(data, b"Subject:") == [b"Subject: [WORKER] hello"]
    cfg = HeadersConfig(subject_tags={"spam": "[JUNK]"})
    [data] = plan(queue_file(), verdict("spam"), headers=cfg).files
    assert header(data, b"Subject:") == [b"Subject: [JUNK] hello"]


def test_infected_is_quarantined_with_its_metadata() -> None:
    v = verdict("infected", INFECTED, edits=(status("infected"),))
    d = plan(queue_file(), v)
    assert (d.kind, d.verdict, d.outcome) == ("quarantine", "infected", "quarantined")
    assert d.files == ()
    assert d.quarantine == {
        "time": NOW, "sender": "sender@example.test",
        "recipients": ["a@example.com", "b@example.org"], "verdict": v.to_dict(),
        "action": "infected", "reason": "clamav: Eicar-Signature", "subject": "hello",
        "policy": ["default"]}
    [notice] = d.notices
    assert notice.outcome == "quarantined"
    assert notice.recipients == ["a@example.com", "b@example.org"]
    assert notice.fields == {
        "outcome": "quarantined", "verdict": "infected", "reasons": "clamav: Eicar-Signature",
        "queue_id": QID, "quarantine_id": f"{QID}-1700000000", "removed": "",
        "sender": "sender@example.test", "subject": "hello",
        "message_id": "<m1@example.test>"}
    assert d.story.message == "quarantined"
    assert d.story_with([]).fields == {
        "queue_id": QID, "verdict": "infected", "reasons": "clamav: Eicar-Signature",
        "new_queue_id": "", "quarantine_id": f"{QID}-1700000000",
        "policy": "quarantine 2 (default)"}


def test_a_folded_subject_is_unfolded_in_metadata_and_notices() -> None:
    lines = [b"Subject: a long", b" subject", *BODY[3:]]
    d = plan(queue_file(lines=lines), verdict("infected", INFECTED))
    assert d.quarantine is not None and d.quarantine["subject"] == "a long subject"
    assert d.notices[0].fields["subject"] == "a long subject"


def test_discard_writes_no_file_and_sends_a_notice() -> None:
    d = plan(queue_file(), verdict("infected", INFECTED),
             policy('[policy]\ninfected = "discard"\n'))
    assert (d.kind, d.outcome, d.files, d.quarantine) == ("rewrite", "discarded", (), None)
    assert [n.outcome for n in d.notices] == ["discarded"]
    assert d.story.message == "discarded"


RULES = '''
[[policy.rules]]
recipients = ["*@example.org"]
infected = "deliver-tagged"
spam = "deliver"
'''


def test_per_recipient_policies_split_the_message() -> None:
    v = verdict("infected", INFECTED, edits=(status("infected"),))
    d = plan(queue_file(), v, policy(RULES))
    assert (d.kind, d.verdict, d.outcome) == ("split", "infected", "split")
    assert [(g.action, g.recipients, g.sources) for g in d.groups] == [
        ("quarantine", ["a@example.com"], ["default"]),
        ("deliver-tagged", ["b@example.org"], ["rule #1"])]
    [data] = d.files
    assert rcpts(data) == ["b@example.org"]
    assert queuefile.parse(data).size_fields[2] == 1
    assert header(data, b"Subject:") == [b"Subject: [VIRUS] hello"]
    assert d.quarantine is not None
    assert d.quarantine["recipients"] == ["a@example.com"]
    assert d.quarantine["all_recipients"] == ["a@example.com", "b@example.org"]
    assert [(n.outcome, n.recipients) for n in d.notices] == [("quarantined", ["a@example.com"])]
    assert d.story_with(["N1"]).fields["policy"] == \
        "quarantine 1 (default); deliver-tagged 1 (rule #1)"
    assert d.story_with(["N1"]).fields["new_queue_id"] == "N1"


def test_high_scoring_spam_is_decided_by_the_spam_high_setting() -> None:
    # The policy reads the typed Verdict.spam_high, not a key of Verdict.extra (which is
    # for people: a score there changes nothing).
    strict = policy('[policy]\nspam = "deliver-tagged"\nspam_high = "quarantine"\n')
    high = plan(queue_file(), verdict("spam", SPAM, spam_high=True), strict)
    assert (high.kind, high.outcome) == ("quarantine", "quarantined")
    assert high.notices[0].fields["verdict"] == "spam_high"
    low = verdict("spam", SPAM)
    low = dataclasses.replace(low, extra={"spam_high": True, "spam_score": 99.0})
    assert (plan(queue_file(), low, strict).kind,
            plan(queue_file(), low, strict).outcome) == ("rewrite", "rewritten")


def test_a_split_between_delivered_groups_has_a_file_for_each() -> None:
    d = plan(queue_file(("a@example.com", "b@example.org", "c@example.org")),
             verdict("spam", edits=(status("spam"),)), policy(RULES))
    assert (d.kind, d.quarantine, d.notices) == ("split", None, ())
    tagged, plain = d.files
    assert rcpts(tagged) == ["a@example.com"]
    assert header(tagged, b"Subject:") == [b"Subject: [SPAM] hello"]
    assert rcpts(plain) == ["b@example.org", "c@example.org"]
    assert header(plain, b"Subject:") == [b"Subject: hello"]
    assert header(plain, b"X-Holdscan-Status:") == [b"X-Holdscan-Status: spam"]
    assert d.story_with(["N1", "N2"]).fields["new_queue_id"] == "N1,N2"


def test_recipients_already_delivered_are_left_out() -> None:
    qf = queue_file(("a@example.com", "b@example.org"), done=("old@example.org",))
    d = plan(qf, verdict("infected", INFECTED), policy(RULES))
    assert [g.recipients for g in d.groups] == [["a@example.com"], ["b@example.org"]]
    assert rcpts(d.files[0]) == ["b@example.org"]
    assert "old@example.org" not in [r.address for r in queuefile.parse(d.files[0]).recipients]


STRIP_ALL = '[policy]\nblocked = "strip"\n'
STRIP_ORG = '''
[[policy.rules]]
recipients = ["*@example.org"]
blocked = "strip"
'''
NOTE = "x.exe: executable"


def strip_plan(message: bytes, digest: str | None = None) -> StripPlan:
    stripped = mimeparts.strip(message, {"2": NOTE})
    return StripPlan((StripPart("2", NOTE),), digest or mimeparts.sha256(stripped))


def test_strip_with_the_plan_the_worker_scanned_delivers_the_stripped_message() -> None:
    qf = queue_file(lines=MIXED)
    message = qf.message_bytes(b"\r\n")
    v = verdict("blocked", BLOCKED, edits=(status("blocked"),), strip=strip_plan(message))
    d = plan(qf, v, policy(STRIP_ALL))
    assert (d.kind, d.outcome, d.quarantine, d.notes) == ("rewrite", "stripped", None, ())
    [data] = d.files
    out = queuefile.parse(data)
    assert b"MZbadbad" not in out.message_bytes() and NOTE.encode() in out.message_bytes()
    expected = queuefile.parse(queuefile.serialize(
        qf.with_message(mimeparts.strip(message, {"2": NOTE}))
          .with_headers(replace=[(STATUS, "blocked")])))
    assert out.content == expected.content
    [notice] = d.notices
    assert (notice.outcome, notice.fields["removed"], notice.fields["quarantine_id"]) == \
        ("stripped", NOTE, "")
    assert d.story.message == "stripped"


@pytest.mark.parametrize(("strip", "why"), [
    (None, "the scanners could not name removable parts that leave the rest clean"),
    ("wrong digest", "the stripped message is not the one the worker scanned"),
    (StripPlan((StripPart("9", NOTE),), "0" * 64), "no MIME part 9"),
])
def test_strip_without_a_valid_plan_quarantines_instead(strip: object, why: str) -> None:
    qf = queue_file(lines=MIXED)
    the_plan = strip_plan(qf.message_bytes(b"\r\n"), "1" * 64) if strip == "wrong digest" \
        else strip
    assert the_plan is None or isinstance(the_plan, StripPlan)
    d = plan(qf, verdict("blocked", BLOCKED, strip=the_plan), policy(STRIP_ORG))
    # b (strip -> quarantine) joins a (quarantine by default): one group, stored once.
    assert (d.kind, d.outcome, d.files) == ("quarantine", "quarantined", ())
    assert [(g.action, g.recipients, g.sources) for g in d.groups] == [
        ("quarantine", ["a@example.com", "b@example.org"], ["default", "rule #1"])]
    assert d.quarantine is not None
    assert d.quarantine["recipients"] == ["a@example.com", "b@example.org"]
    assert d.quarantine["policy"] == ["default", "rule #1"]
    assert "all_recipients" not in d.quarantine
    [note] = d.notes
    assert (note.level, note.message, note.fields) == (
        logging.WARNING, "cannot strip; quarantined instead", {"queue_id": QID, "why": why})
    assert [(n.outcome, n.recipients) for n in d.notices] == \
        [("quarantined", ["a@example.com", "b@example.org"])]
    assert d.story.fields["policy"] == "quarantine 2 (default, rule #1)"


def test_a_failed_strip_leaves_the_groups_it_was_given_alone() -> None:
    groups = [Group("strip", ["b@example.org"], ["rule #1"]),
              Group("quarantine", ["a@example.com"], ["default"])]
    stripped, merged, notes = disposition._stripped(QID, b"x", verdict("blocked"), groups)
    assert stripped is None and len(notes) == 1
    assert [(g.action, g.recipients) for g in merged] == \
        [("quarantine", ["b@example.org", "a@example.com"])]
    assert [(g.action, g.recipients, g.sources) for g in groups] == [
        ("strip", ["b@example.org"], ["rule #1"]), ("quarantine", ["a@example.com"], ["default"])]


def gave_up(headers: HeadersConfig = HEADERS) -> Verdict:
    """The verdict the in-flight bookkeeping makes for a message it gives up on."""
    return gave_up_verdict(QID, 5, "no verdict after 5 attempts",
                           f"{headers.prefix}-Status" if headers.add_status_header else "")


def test_policy_hold_leaves_the_message_in_hold() -> None:
    d = plan(queue_file(), gave_up(), policy(on_max_attempts="hold"), gave_up=True)
    assert (d.kind, d.verdict, d.outcome) == ("leave", "gave_up", "held")
    assert d.files == () and d.quarantine is None and d.notices == ()
    assert (d.story.level, d.story.message, d.story.fields) == (
        logging.WARNING, "left in hold for a human",
        {"queue_id": QID, "reason": "dispatcher: no verdict after 5 attempts"})


def test_given_up_is_quarantined_as_gave_up_without_a_verdict() -> None:
    d = plan(queue_file(), gave_up(), gave_up=True)
    assert (d.kind, d.verdict, d.outcome) == ("quarantine", "gave_up", "quarantined")
    assert d.quarantine is not None
    assert (d.quarantine["verdict"], d.quarantine["action"], d.quarantine["reason"]) == \
        (None, "gave_up", "dispatcher: no verdict after 5 attempts")
    assert d.story.fields["verdict"] == "gave_up"
    assert d.notices[0].fields["verdict"] == "error"


def test_given_up_and_delivered_carries_the_unscanned_status() -> None:
    d = plan(queue_file(), gave_up(), policy('[policy]\nerror = "deliver"\n'), gave_up=True)
    assert (d.kind, d.verdict, d.outcome) == ("rewrite", "gave_up", "rewritten")
    assert header(d.files[0], b"X-Holdscan-Status:") == \
        [b"X-Holdscan-Status: unscanned (no verdict after 5 attempts)"]


def test_given_up_and_released_counts_the_verdicts_action() -> None:
    # Without a status header there is nothing to edit: a plain release, counted (as it
    # always was) under the error verdict's action rather than gave_up.
    headers = HeadersConfig(add_status_header=False)
    d = plan(queue_file(), gave_up(headers=headers), policy('[policy]\nerror = "deliver"\n'),
             gave_up=True, headers=headers)
    assert (d.kind, d.verdict, d.outcome) == ("release", "error", "released")


def test_no_recipients_left_is_a_release() -> None:
    d = plan(queue_file((), done=("old@example.org",)), verdict("infected", INFECTED))
    assert (d.kind, d.outcome) == ("release", "released")
    assert [(g.action, g.sources) for g in d.groups] == [("deliver", ["nothing left to deliver"])]


def test_plan_is_pure() -> None:
    qf = queue_file()
    before = queuefile.serialize(qf)
    v = verdict("infected", INFECTED, edits=(status("infected"),))
    pol = policy(RULES)
    assert plan(qf, v, pol) == plan(qf, v, pol)
    assert queuefile.serialize(qf) == before
