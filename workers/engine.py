"""One message in, one verdict out: parse once, run every scanner, pick the worst.

The engine knows nothing of Celery, Redis or the spool; the task fetches the
bytes and sends the verdict, the dispatcher applies it. A scanner that raises
is a bug in that scanner, not a reason to lose the worker: its exception
becomes an `error` finding, and an error verdict leaves the message in hold
to be scanned again.

Deterministic: the same bytes and scanners give the same verdict, findings and
header edits (only scan_times and worker differ), so a redelivered task that
runs twice cannot produce two different verdicts. The exception is a spam
daemon, which may score the same message differently twice (its network
tests, its learning); the dispatcher applies the first verdict it gets and
drops a late duplicate, so the message is still handled once.

A scanner may return more than findings (a ScanResult): its `extra` goes into
Verdict.extra (for people), its `spam_high` into Verdict.spam_high (for the
policy), its `headers` become header edits under the configured prefix.

Infected or blocked mail whose findings all name MIME parts is scanned once
more without those parts; if that is clean, Verdict.strip tells a `strip`
policy which parts it may remove (workers/strip.py).

One message costs at most the CPU budget (`[scanners.mime] cpu_seconds`,
workers/budget.py), parsing and every scanner together: past it, the step that
was running gives an `unscannable` finding saying so, the other scanners are
skipped but clamav, which still scans the raw bytes, and the verdict is final
rather than an error retried for ever. The scanners that talk to a daemon
(clamav, spam) are not interrupted (a kept session must not be left out of
step); their CPU cost here is sending bytes, bounded by the parse limits.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from shared.config import HeadersConfig
from shared.contract import Finding, HeaderEdit, ScanRequest, Verdict, worst_verdict
from shared.headers import has_header
from workers import derived, strip
from workers.budget import OverBudget, cpu_budget
from workers.message import ParsedMessage, ParseLimits
from workers.scanners.base import Scanner, ScanResult

log = logging.getLogger("holdscan.engine")

_MAX_STATUS = 300           # keeps the header line well below SMTP's 998
_DAEMON_CLIENTS = ("clamav", "spam")        # scanners the CPU budget does not interrupt


def scan_message(raw: bytes, request: ScanRequest, scanners: Sequence[Scanner],
                 headers: HeadersConfig, worker_name: str, plan_strip: bool = True) -> Verdict:
    times: dict[str, float] = {}
    started = time.perf_counter()
    limits = next((s.parse_limits for s in scanners if s.parse_limits is not None), None)
    seconds = (limits or ParseLimits()).cpu_seconds
    cpu_started = time.process_time()
    over = False        # the budget is used up: what is left is clamd's look at the raw bytes

    def left() -> float:
        # A budget of 0 is none; a used-up one must not read as none.
        return 0.0 if seconds <= 0 else max(1e-3, seconds - (time.process_time() - cpu_started))

    def over_budget(scanner: str, what: str) -> Finding:
        log.warning("%s: %s over the CPU budget of %gs", request.queue_id, what, seconds)
        return Finding(scanner, "unscannable",
                       f"{what} takes more than the CPU budget of {seconds:g}s")

    findings: list[Finding] = []
    # Findings made from an exception: these bytes broke a parser or scanner (the
    # message's fault), unlike a component that did not answer (nobody's fault here).
    faults: list[Finding] = []
    try:
        with cpu_budget(left()):
            msg = ParsedMessage.from_bytes(raw, limits)
    except OverBudget:
        over = True
        findings.append(over_budget("parse", "MIME parsing"))
        msg = ParsedMessage.unparsed(raw, findings[-1].detail)
    # As broad as for the scanners, for the same reason: a parser bug must
    # cost this message a retry, not the worker its life.
    except Exception as e:
        log.exception("MIME parsing failed on %s", request.queue_id)
        msg = ParsedMessage.unparsed(raw, "MIME parsing failed")
        faults.append(Finding("parse", "error", f"MIME parsing failed: {type(e).__name__}: {e}"))
        findings += faults
    times["parse"] = time.perf_counter() - started

    extra: dict[str, Any] = {}
    spam_high = False
    scanner_headers: dict[str, str] = {}
    for scanner in scanners:
        if over and scanner.name != "clamav":
            # The message has cost what it may; the verdict is unscannable already.
            # Only clamd still looks, at the raw bytes: an infected verdict is worth
            # having.
            continue
        t = time.perf_counter()
        try:
            # A scanner that talks to a daemon is not interrupted: a signal in the
            # middle of a kept session would leave it out of step for the next
            # message. Its CPU here is sending bytes, bounded by the parse limits.
            with cpu_budget(0.0 if scanner.name in _DAEMON_CLIENTS else left()):
                result = scanner.run(msg, request)
        except OverBudget:
            result = ScanResult([over_budget(scanner.name, "scanning")])
            if not over:
                over = True
                msg = ParsedMessage.unparsed(raw, result.findings[0].detail)
        # Deliberately broad: whatever a scanner does wrong, this message gets
        # an error verdict (it stays in hold) and the worker goes on.
        except Exception as e:
            log.exception("scanner %s failed on %s", scanner.name, request.queue_id)
            fault = Finding(scanner.name, "error", f"scanner failed: {type(e).__name__}: {e}")
            faults.append(fault)
            result = ScanResult([fault])
        times[scanner.name] = time.perf_counter() - t
        findings.extend(result.findings)
        extra.update(result.extra)
        spam_high = spam_high or result.spam_high
        scanner_headers.update(result.headers)
        if result.derived:
            # Content found inside parts (a smuggled file, a decrypted archive's
            # members): the scanners after this one judge it like attachments.
            msg = derived.add_parts(msg, result.derived)

    verdict = worst_verdict([f.verdict for f in findings])
    for problem in msg.problems:
        log.info("%s: MIME: %s", request.queue_id, problem)
    if verdict != "clean":
        # Clean mail is logged once per batch by whoever scanned it (batch_line): a line
        # per clean message cost a worker about a tenth of its CPU on small mail.
        log.info("%s: %s %s", request.queue_id, verdict,
                 "; ".join(f"{f.scanner}: {f.detail}" for f in findings if f.verdict != "clean"))
    strip_plan = None
    if plan_strip and verdict in strip.STRIPPABLE:
        # May a `strip` policy remove the bad parts? Only if the rest scans clean.
        t = time.perf_counter()
        strip_plan = strip.plan(raw, verdict, findings, lambda data: scan_message(
            data, request, scanners, headers, worker_name, plan_strip=False).verdict)
        times["strip"] = time.perf_counter() - t
    error_kind = ""
    if verdict == "error":
        error_kind = "message" if faults else "unavailable"
    return Verdict(queue_id=request.queue_id, attempt=request.attempt, verdict=verdict,
                   findings=findings,
                   header_edits=header_edits(verdict, findings, headers, raw, scanner_headers),
                   scan_times=times, worker=worker_name, extra=extra,
                   inode=request.inode, sha256=hashlib.sha256(raw).hexdigest(),
                   error_kind=error_kind, strip=strip_plan,
                   spam_high=spam_high and verdict == "spam")


def batch_line(verdicts: Sequence[Verdict]) -> str:
    """One log line for a batch: every queue ID with its verdict, so that `grep ID` in a
    worker's log finds the message ("scanned 3: 4XyQ1=clean 4XyQ2=infected 4XyQ3=clean")."""
    return f"scanned {len(verdicts)}: " + " ".join(f"{v.queue_id}={v.verdict}"
                                                    for v in verdicts)


def status_text(verdict: str, findings: list[Finding]) -> str:
    """`clean`, `infected (Eicar-Signature)`, `blocked (denied extension .exe: "a.exe")`."""
    details = list(dict.fromkeys(f.detail for f in findings if f.verdict == verdict and f.detail))
    text = _printable_ascii(f"{verdict} ({', '.join(details)})" if details else verdict)
    if len(text) > _MAX_STATUS:
        text = text[:_MAX_STATUS - 4] + "...)"
    return text


def _printable_ascii(text: str) -> str:
    # A header value: ASCII, no control characters. The dispatcher refuses a
    # verdict with CR or LF in a header, and the message would wait in hold.
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return "".join(c if c.isprintable() else " " for c in text)


def header_edits(verdict: str, findings: list[Finding], headers: HeadersConfig,
                 raw: bytes = b"", scanner_headers: dict[str, str] | None = None
                 ) -> list[HeaderEdit]:
    edits = []
    name = f"{headers.prefix}-Status"
    # Clean mail with nothing to change is released by a plain rename, the cheapest and
    # safest move there is; it gets a status header only when asked for, or when the
    # sender forged one that must not survive.
    wanted = headers.add_status_header and (
        verdict != "clean" or headers.status_header_on_clean or has_header(raw, name))
    if wanted:
        # "replace": a status header the sender forged is removed, not trusted.
        edits.append(HeaderEdit("replace", name,
                                status_text(verdict, findings)))
    # "replace" here too: a score the sender wrote must not reach a filter that trusts it.
    for suffix, value in (scanner_headers or {}).items():
        edits.append(HeaderEdit("replace", f"{headers.prefix}-{suffix}",
                                _printable_ascii(value)[:_MAX_STATUS]))
    tag = headers.subject_tags.get(verdict)
    if tag:
        edits.append(HeaderEdit("subject_tag", "Subject", tag))
    return edits
