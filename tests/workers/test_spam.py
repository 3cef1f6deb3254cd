"""The spam scanner against a real spamd and a real rspamd (started here, no mocks).

Every test that needs a daemon runs once against each: one daemon of each
kind per module, about a second to start.
"""

from __future__ import annotations

import email.utils
import re
import socket
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from holdscan.lab.clamd import DETECTED_AS, ClamdServer
from holdscan.lab.spam import GTUBE, RspamdServer, SpamdServer
from shared.config import Config, ConfigError, HeadersConfig
from shared.contract import Verdict
from tests.support.mail import EICAR, simple
from tests.support.scanning import REQUEST, make_config
from workers.engine import scan_message
from workers.message import ParsedMessage
from workers.scanners import build_scanners
from workers.scanners.spam import SpamScanner

pytestmark = pytest.mark.spam

Daemon = SpamdServer | RspamdServer

# What each daemon scores GTUBE at, and its usual thresholds (workers/scanners/spam.py).
GTUBE_SCORE = {"spamd": 1000.0, "rspamd": 15.0}
THRESHOLD = {"spamd": "5.0", "rspamd": "6.0"}


def spam_message() -> bytes:
    # rspamd looks for GTUBE on a line of its own: the line ending matters.
    return simple(GTUBE + b"\r\n")


def plain_message() -> bytes:
    """Ordinary mail as Postfix holds it: a Received line, current date, real headers."""
    now = email.utils.formatdate().encode()
    return (b"Received: from mx.example.test (mx.example.test [192.0.2.1])\r\n"
            b"\tby hold.example.test (Postfix) with ESMTP id 4XyzAB1cDEfgH; " + now + b"\r\n"
            b"From: Alice <sender@example.test>\r\nTo: Bob <rcpt@example.test>\r\n"
            b"Subject: Lunch tomorrow\r\nDate: " + now + b"\r\n"
            b"Message-ID: <20240101.4711.abc@example.test>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            b"Hi Bob,\r\n\r\nlunch tomorrow at noon, at the usual place?\r\n\r\nAlice\r\n")


@pytest.fixture(scope="module", params=["spamd", "rspamd"])
def daemon(request: pytest.FixtureRequest) -> Daemon:
    """Each test that takes it runs against both daemons."""
    server: Daemon = request.getfixturevalue(request.param)
    return server


def kind(daemon: Daemon) -> str:
    return daemon.name


def spam_scanner(daemon: Daemon, **options: Any) -> SpamScanner:
    return SpamScanner({"url": daemon.url, "timeout": 10.0, **options})


def verdict_of(raw: bytes, *scanners: SpamScanner,
               headers: HeadersConfig | None = None) -> Verdict:
    return scan_message(raw, REQUEST, list(scanners), headers or HeadersConfig(), "w1")


def edits(verdict: Verdict) -> list[tuple[str, str, str]]:
    return [(e.op, e.name, e.value) for e in verdict.header_edits]


# --- scores, symbols, headers ------------------------------------------------------------

def test_gtube_is_high_scoring_spam_with_score_symbols_and_headers(daemon: Daemon) -> None:
    verdict = verdict_of(spam_message(), spam_scanner(daemon))
    score, required = GTUBE_SCORE[kind(daemon)], THRESHOLD[kind(daemon)]
    assert verdict.verdict == "spam"
    assert [(f.scanner, f.verdict, f.detail) for f in verdict.findings] == [
        ("spam", "spam", f"high score {score} >= 15.0")]
    assert verdict.extra["spam_score"] == score
    assert verdict.spam_high is True
    assert verdict.extra["spam_required"] == float(required)
    assert "GTUBE" in verdict.extra["spam_symbols"]
    assert verdict.extra["spam_symbols"] == sorted(verdict.extra["spam_symbols"])
    assert edits(verdict) == [
        ("replace", "X-Holdscan-Status", f"spam (high score {score} >= 15.0)"),
        ("replace", "X-Holdscan-Spam-Score", f"{score}"),
        ("replace", "X-Holdscan-Spam-Status", f"Yes, score={score} required={required}"),
    ]
    assert Verdict.from_dict(verdict.to_dict()) == verdict       # it passes the contract


def test_spam_below_the_high_threshold_is_plain_spam(daemon: Daemon) -> None:
    score = GTUBE_SCORE[kind(daemon)]
    scanner = spam_scanner(daemon, threshold=4.0, high_threshold=score + 1)
    verdict = verdict_of(spam_message(), scanner)
    assert verdict.reasons == [f"spam: score {score} >= 4.0"]
    assert verdict.spam_high is False
    assert ("replace", "X-Holdscan-Spam-Status", f"Yes, score={score} required=4.0") \
        in edits(verdict)


def test_our_threshold_decides_not_the_daemons(daemon: Daemon) -> None:
    score = GTUBE_SCORE[kind(daemon)]
    scanner = spam_scanner(daemon, threshold=score + 1)
    verdict = verdict_of(spam_message(), scanner)
    assert verdict.verdict == "clean"
    assert [f.detail for f in verdict.findings] == [f"score {score} < {score + 1}"]
    assert verdict.extra["spam_score"] == score


def test_plain_message_is_not_spam(daemon: Daemon) -> None:
    verdict = verdict_of(plain_message(), spam_scanner(daemon))
    assert verdict.verdict == "clean", verdict.findings
    score = verdict.extra["spam_score"]
    assert score < float(THRESHOLD[kind(daemon)])
    assert verdict.spam_high is False
    assert "GTUBE" not in verdict.extra["spam_symbols"]
    (finding,) = verdict.findings
    assert (finding.verdict, finding.detail.split()[0]) == ("clean", "score")
    # Scored mail gets the spam headers even when clean: filters downstream rely on them.
    status = dict((name, value) for _, name, value in edits(verdict))
    assert status["X-Holdscan-Spam-Status"].startswith("No, score=")
    assert "X-Holdscan-Status" not in status       # clean: no status header by default


def test_headers_take_the_configured_prefix_and_replace_forged_ones(daemon: Daemon) -> None:
    forged = b"X-Scan-Spam-Status: No, score=-100\r\nX-Scan-Spam-Score: -100\r\n" + spam_message()
    verdict = verdict_of(forged, spam_scanner(daemon), headers=HeadersConfig(
        prefix="X-Scan", subject_tags={"spam": "[SPAM]"}))
    assert [(op, name) for op, name, _ in edits(verdict)] == [
        ("replace", "X-Scan-Status"), ("replace", "X-Scan-Spam-Score"),
        ("replace", "X-Scan-Spam-Status"), ("subject_tag", "Subject")]


def test_envelope_reaches_rspamd(rspamd: RspamdServer) -> None:
    # spamd takes the message alone; rspamd also the envelope, in request headers.
    scanner = spam_scanner(rspamd)
    matching = verdict_of(plain_message(), scanner).extra["spam_symbols"]
    assert {"FROM_EQ_ENVFROM", "TO_MATCH_ENVRCPT_ALL"} <= set(matching)
    other = replace(REQUEST, sender="someone@else.test", recipients=["x@else.test"])
    verdict = scan_message(plain_message(), other, [scanner], HeadersConfig(), "w1")
    assert "FROM_NEQ_ENVFROM" in verdict.extra["spam_symbols"]
    assert "TO_MATCH_ENVRCPT_ALL" not in verdict.extra["spam_symbols"]


def test_spamd_over_its_unix_socket(spamd: SpamdServer) -> None:
    scanner = SpamScanner({"url": spamd.socket_url})
    assert verdict_of(spam_message(), scanner).verdict == "spam"


def test_rspamd_by_http_url(rspamd: RspamdServer) -> None:
    scanner = SpamScanner({"url": rspamd.http_url})
    assert verdict_of(spam_message(), scanner).verdict == "spam"


# --- size, errors ------------------------------------------------------------------------

def test_message_over_max_size_is_skipped_with_a_clean_finding(daemon: Daemon) -> None:
    raw = spam_message() + b"x" * 70 + b"\r\n" * 100
    scanner = spam_scanner(daemon, max_size=len(raw) - 1)
    verdict = verdict_of(raw, scanner)
    assert verdict.verdict == "clean"
    assert [(f.verdict, f.detail) for f in verdict.findings] == [
        ("clean", f"not scored: {len(raw)} bytes is over max_size {len(raw) - 1}")]
    assert verdict.extra == {} and verdict.header_edits == []
    # At the limit it is scored.
    assert verdict_of(raw, spam_scanner(daemon, max_size=len(raw))).verdict == "spam"


def test_daemon_down_is_an_error_and_back_works_without_a_new_scanner(daemon: Daemon) -> None:
    retry_after = 0.2
    scanner = spam_scanner(daemon, retry_after=retry_after)
    skipping = spam_scanner(daemon, on_error="skip", retry_after=retry_after)
    assert verdict_of(spam_message(), scanner).verdict == "spam"
    daemon.stop()
    try:
        started = time.monotonic()
        verdict = verdict_of(spam_message(), scanner)
        assert time.monotonic() - started < 2.0, "a refused connection must not wait"
        assert verdict.verdict == "error"
        (finding,) = verdict.findings
        assert finding.detail.startswith(f"{kind(daemon)} unavailable: ")
        assert "refused" in finding.detail, finding
        assert verdict.extra == {}
        assert all("Spam" not in e.name for e in verdict.header_edits)
        # on_error = "skip": delivered unscored, and the reason is in the finding.
        skipped = verdict_of(spam_message(), skipping)
        assert skipped.verdict == "clean"
        assert skipped.findings[0].detail.startswith(f"not scored: {kind(daemon)} unavailable")
    finally:
        daemon.start()
    time.sleep(retry_after)
    assert verdict_of(spam_message(), scanner).verdict == "spam"
    assert verdict_of(spam_message(), skipping).verdict == "spam"


@pytest.mark.parametrize("url", ["spamd://127.0.0.1:{port}", "rspamd://127.0.0.1:{port}"])
def test_a_daemon_that_never_answers_times_out_as_an_error(url: str) -> None:
    # Listening, never accepting: the connection succeeds (the kernel's
    # backlog), then nothing. The timeout bounds the whole exchange.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        scanner = SpamScanner({"url": url.format(port=silent.getsockname()[1]),
                               "timeout": 0.5})
        started = time.monotonic()
        verdict = verdict_of(spam_message(), scanner)
        elapsed = time.monotonic() - started
    assert verdict.verdict == "error"
    assert verdict.findings[0].detail.endswith("timed out")
    assert 0.4 < elapsed < 1.5


def test_a_hung_daemon_is_not_asked_again_for_retry_after() -> None:
    # Otherwise every message of a batch would wait the full timeout, and the
    # batch would run into the Celery task's time limit.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        scanner = SpamScanner({"url": f"spamd://127.0.0.1:{silent.getsockname()[1]}",
                               "timeout": 0.3, "retry_after": 0.6})
        first = verdict_of(spam_message(), scanner)
        started = time.monotonic()
        second = verdict_of(spam_message(), scanner)
        assert time.monotonic() - started < 0.1
        time.sleep(0.6)
        started = time.monotonic()
        third = verdict_of(spam_message(), scanner)
        assert time.monotonic() - started >= 0.3, "after retry_after it is asked again"
    assert first.findings[0].detail.endswith("timed out")
    assert second.verdict == "error"
    assert second.findings[0].detail.endswith("timed out (not asked again for 0.6s)")
    assert third.findings[0].detail.endswith(": timed out")


def test_a_wrong_answer_is_an_error(spamd: SpamdServer, rspamd: RspamdServer) -> None:
    # Real daemons, real wrong answers: rspamd's client at spamd's port gets a
    # SPAMD error line where HTTP should be; at a path rspamd does not serve,
    # rspamd's "invalid command".
    cases = [(f"rspamd://127.0.0.1:{spamd.port}", "not an HTTP answer: BadStatusLine: SPAMD/"),
             (f"http://127.0.0.1:{rspamd.port}/nothing", "answered HTTP 500")]
    for url, why in cases:
        verdict = verdict_of(spam_message(), SpamScanner({"url": url, "timeout": 5.0}))
        assert verdict.verdict == "error", url
        (finding,) = verdict.findings
        assert finding.detail.startswith("rspamd error: http://127.0.0.1:"), finding
        assert why in finding.detail, finding


def test_rspamd_also_answers_the_spamc_protocol(rspamd: RspamdServer) -> None:
    # rspamd speaks spamd's protocol too (for spamc users), so spamd:// at an
    # rspamd works: worth knowing when one URL is swapped for another.
    verdict = verdict_of(spam_message(), SpamScanner({"url": f"spamd://127.0.0.1:{rspamd.port}"}))
    assert verdict.verdict == "spam"
    assert verdict.extra["spam_score"] == GTUBE_SCORE["rspamd"]


# --- with the other scanners, through the registry ----------------------------------------

def test_spam_next_to_clamav_through_the_registry(daemon: Daemon, clamd: ClamdServer) -> None:
    scanners = build_scanners(make_config(clamd.addresses, spam={"url": daemon.url}))
    assert [s.name for s in scanners][-1] == "spam"
    assert scan_message(spam_message(), REQUEST, scanners, HeadersConfig(), "w1").verdict == "spam"
    # Worst wins: a virus in spam is infected, and the spam score still travels.
    both = simple(GTUBE + b"\r\n" + EICAR + b"\r\n")
    verdict = scan_message(both, REQUEST, scanners, HeadersConfig(), "w1")
    assert verdict.verdict == "infected"
    assert DETECTED_AS in verdict.reasons[0] or DETECTED_AS in " ".join(verdict.reasons)
    assert "GTUBE" in verdict.extra["spam_symbols"]


# --- configuration (no daemon needed) ----------------------------------------------------

def test_spam_is_off_by_default_and_on_with_its_table() -> None:
    cfg = Config()
    cfg.scanners = {"clamav": {"enabled": False}}
    assert "spam" not in [s.name for s in build_scanners(cfg)]
    cfg.scanners["spam"] = {"url": "spamd://127.0.0.1:783"}
    assert [s.name for s in build_scanners(cfg)][-1] == "spam"
    cfg.scanners["spam"] = {"url": "spamd://127.0.0.1:783", "enabled": False}
    assert "spam" not in [s.name for s in build_scanners(cfg)]


@pytest.mark.parametrize("options, message", [
    ({}, "url: say which daemon"),
    ({"url": "spamc://127.0.0.1"}, "url: 'spamc://127.0.0.1': use spamd://"),
    ({"url": "spamd://127.0.0.1:99999"}, "not a number from 1 to 65535"),
    ({"url": "rspamd://"}, "give a host"),
    ({"url": "spamd://h", "threshold": 8.0, "high_threshold": 6.0},
     "high_threshold (6) must not be below threshold (8)"),
    ({"url": "spamd://h", "on_error": "deliver"}, "on_error must be one of error, skip"),
    ({"url": "spamd://h", "timeout": 0}, "timeout must be more than 0"),
    ({"url": "spamd://h", "treshold": 5.0}, "unknown setting 'treshold'"),
    ({"url": "spamd://h", "max_size": "500k"}, "max_size must be an integer"),
])
def test_configuration_errors_name_the_setting(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"\[scanners\.spam\]") as e:
        SpamScanner(options)
    assert message in str(e.value)


@pytest.mark.parametrize("url, kind_, threshold, high", [
    ("spamd://127.0.0.1", "spamd", 5.0, 15.0),
    ("spamd:///run/spamd.sock", "spamd", 5.0, 15.0),
    ("rspamd://[::1]:11333", "rspamd", 6.0, 15.0),
    ("https://rspamd.example.test/checkv2", "rspamd", 6.0, 15.0),
])
def test_usual_thresholds_per_daemon(url: str, kind_: str, threshold: float,
                                     high: float) -> None:
    scanner = SpamScanner({"url": url})
    assert (scanner.client.kind, scanner.threshold, scanner.high_threshold) == \
        (kind_, threshold, high)
    # A threshold above the usual high one lifts the high one with it.
    lifted = SpamScanner({"url": url, "threshold": 20.0})
    assert (lifted.threshold, lifted.high_threshold) == (20.0, 20.0)


def test_scan_without_envelope_is_the_same_check(daemon: Daemon) -> None:
    # scan() (no envelope) is what a caller outside the engine uses.
    result = spam_scanner(daemon).scan(ParsedMessage.from_bytes(spam_message()))
    assert [f.verdict for f in result.findings] == ["spam"]
    assert result.headers["Spam-Score"] == str(GTUBE_SCORE[kind(daemon)])


def test_the_commented_example_block_is_valid_and_default() -> None:
    # deploy/holdscan.toml.example shows [scanners.spam] commented out (it is off by
    # default); uncommented, it must load and say the defaults, except for url.
    example = Path(__file__).resolve().parents[2] / "deploy" / "holdscan.toml.example"
    lines = example.read_text().splitlines()
    start = lines.index("# [scanners.spam]")
    table: dict[str, Any] = {}
    for line in lines[start + 1:]:
        if not line.startswith("#"):
            break
        text = line[2:]
        if re.match(r"[a-z_]+ = ", text):
            table.update(tomllib.loads(text))
    assert set(table) == set(SpamScanner.defaults)
    assert {k: v for k, v in table.items() if k != "url"} == \
        {k: v for k, v in SpamScanner.defaults.items() if k != "url"}
    assert SpamScanner(table).client.kind == "spamd"
