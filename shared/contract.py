"""The task contract between the dispatcher and the workers.

A *scan request* names one held message: its queue ID, the attempt number, the
envelope, and a reference to the message content (a key in a content store, and
that store's name; the content itself never travels in the task, so a task that
outlives its message finds nothing to scan). A store is named, never given by
its URL: URLs carry passwords, and the workers map names to URLs in their own
configuration (`[broker.content_stores]`). A *verdict* is the worker's answer.

Both are versioned and validated on both ends: a peer that speaks another
version, or sends something malformed, is refused with ContractError, and the
dispatcher treats such a verdict as no verdict at all (the message stays in
hold and is sent again).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

# A MIME part path (shared/mimetokens.py): "2", "3.1"; never the whole message.
from shared.mimetokens import PART_PATH_RE as _PART_RE

# 2: requests and verdicts carry the inode and SHA-256 of the scanned bytes, verdicts
#    say which kind of error they are, workers announce the batches they start.
# 3: what a worker found is a "verdict" (the key was "action", a word that belongs to
#    the dispatcher's policy); what the policy depends on is typed: Verdict.strip (the
#    strip plan) and Verdict.spam_high, no longer keys of Verdict.extra.
# 4: a request names the content store (`store`) its worker fetches the message from and
#    sends the verdict to; "" is the worker's default store. A worker of version 3 would
#    look in its own default store and find nothing, so the version says it.
CONTRACT_VERSION = 4

# What an `error` verdict means for the message (Verdict.error_kind):
#   unavailable  a component (clamd, spamd) did not answer: every message fails alike,
#                so the message waits, however long, and is never given up on
#   message      a scanner failed on these bytes while it works on other mail (a parser
#                exception): after dispatcher.max_attempts such verdicts, the policy's
#                `error` action applies
ERROR_KINDS = ("", "unavailable", "message")

# What a worker can find. What the dispatcher then does (deliver, quarantine, ...) is
# the policy's *action* (dispatcher/policy.py), never a verdict.
VERDICTS = ("clean", "infected", "blocked", "spam", "unscannable", "error")

# A verdict's weight when several scanners disagree: the worst wins.
SEVERITY = {"clean": 0, "spam": 1, "unscannable": 2, "blocked": 3, "infected": 4, "error": 5}

HEADER_EDIT_OPS = ("add", "replace", "subject_tag")

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class ContractError(ValueError):
    """A scan request or verdict that does not follow the contract."""


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise ContractError(what)


def _str(d: dict[str, Any], key: str, *, empty_ok: bool = True) -> str:
    value = d.get(key)
    _require(isinstance(value, str), f"{key!r} must be a string, got {type(value).__name__}")
    assert isinstance(value, str)
    _require(empty_ok or value != "", f"{key!r} must not be empty")
    return value


def _int(d: dict[str, Any], key: str) -> int:
    value = d.get(key)
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
             f"{key!r} must be a non-negative integer, got {value!r}")
    assert isinstance(value, int)
    return value


def _num(d: dict[str, Any], key: str) -> float:
    value = d.get(key)
    _require(isinstance(value, (int, float)) and not isinstance(value, bool),
             f"{key!r} must be a number, got {value!r}")
    assert isinstance(value, (int, float))
    return float(value)


def _strlist(d: dict[str, Any], key: str) -> list[str]:
    value = d.get(key)
    _require(isinstance(value, list) and all(isinstance(v, str) for v in value),
             f"{key!r} must be a list of strings")
    assert isinstance(value, list)
    return list(value)


def _version(d: Any, kind: str) -> dict[str, Any]:
    _require(isinstance(d, dict), f"a {kind} must be an object, got {type(d).__name__}")
    version = d.get("v")
    _require(version == CONTRACT_VERSION,
             f"{kind} speaks contract version {version!r}, this side speaks {CONTRACT_VERSION}; "
             "run the same holdscan version on the dispatcher and the workers (upgrade both, "
             "then restart the workers and the dispatcher)")
    return d


@dataclass(frozen=True)
class ScanRequest:
    """One message to scan."""

    queue_id: str
    attempt: int
    sender: str
    recipients: list[str]
    content_key: str        # key of the message bytes in the content store
    size: int               # length of the message bytes
    reply_to: str           # where the verdict goes (a list in the content store)
    submitted_at: float     # dispatcher's clock, seconds since the epoch
    inode: int = 0          # the held file's inode when it was claimed
    sha256: str = ""        # of the message bytes: a verdict applies to these bytes only
    store: str = ""         # content store holding content_key and reply_to; "": default

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["v"] = CONTRACT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: Any) -> ScanRequest:
        d = _version(d, "scan request")
        return cls(
            queue_id=_str(d, "queue_id", empty_ok=False),
            attempt=_int(d, "attempt"),
            sender=_str(d, "sender"),
            recipients=_strlist(d, "recipients"),
            content_key=_str(d, "content_key", empty_ok=False),
            size=_int(d, "size"),
            reply_to=_str(d, "reply_to", empty_ok=False),
            submitted_at=_num(d, "submitted_at"),
            inode=_int(d, "inode"),
            sha256=_sha256(d, "sha256"),
            store=_store_name(d),
        )


# A content store's name: what `[broker.content_stores]` keys may be, and what a request
# may carry (no URL, no password, nothing a log line would garble).
STORE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _store_name(d: dict[str, Any]) -> str:
    value = _str(d, "store") if "store" in d else ""
    _require(value == "" or STORE_NAME_RE.fullmatch(value) is not None,
             f"store {value[:40]!r} is not a content store name (letters, digits, . _ -)")
    return value


@dataclass(frozen=True)
class Finding:
    """What one scanner found: e.g. ("clamav", "infected", "Eicar-Test-Signature").

    `part` names the MIME part the finding is about (a shared.mimeparts path,
    "2" or "3.1"); empty when it is about the message as a whole or could not
    be pinned to one part. Only findings with a part can be stripped.
    """

    scanner: str
    verdict: str
    detail: str
    part: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.part:
            del d["part"]       # what a peer without parts sends, byte for byte
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Finding:
        _require(isinstance(d, dict), "a finding must be an object")
        verdict = _str(d, "verdict")
        _require(verdict in VERDICTS, f"unknown finding verdict {verdict!r}")
        part = _str(d, "part") if "part" in d else ""
        _require(part == "" or _PART_RE.fullmatch(part) is not None,
                 f"finding part {part[:40]!r} is not a MIME part path like '2' or '3.1'")
        return cls(scanner=_str(d, "scanner", empty_ok=False), verdict=verdict,
                   detail=_str(d, "detail"), part=part)


@dataclass(frozen=True)
class HeaderEdit:
    """A header change for the dispatcher to apply when it rewrites the file.

    op "add": append header `name: value`; "replace": remove every `name`
    header, then add one; "subject_tag": prefix the Subject with `value`
    (name is "Subject").
    """

    op: str
    name: str
    value: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> HeaderEdit:
        _require(isinstance(d, dict), "a header edit must be an object")
        op = _str(d, "op")
        _require(op in HEADER_EDIT_OPS, f"unknown header edit op {op!r}")
        name = _str(d, "name", empty_ok=False)
        value = _str(d, "value")
        _require(all(33 <= ord(c) <= 126 and c != ":" for c in name),
                 f"header name {name!r} is not a valid field name")
        _require("\r" not in value and "\n" not in value and "\0" not in value,
                 f"header value for {name!r} contains CR, LF or NUL")
        return cls(op=op, name=name, value=value)


@dataclass(frozen=True)
class StripPart:
    """One part a strip removes, and the note that replaces it."""

    part: str       # a MIME part path (shared/mimetokens.py), "2" or "3.1"
    note: str

    @classmethod
    def from_dict(cls, d: Any) -> StripPart:
        _require(isinstance(d, dict), "each of 'strip.parts' must be {part: path, note: text}")
        part, note = _str(d, "part"), _str(d, "note")
        _require(_PART_RE.fullmatch(part) is not None,
                 f"strip part {part[:40]!r} is not a MIME part path like '2' or '3.1'")
        return cls(part=part, note=note)


@dataclass(frozen=True)
class StripPlan:
    """The parts a worker found removable, and the hash of the result: the message
    without those parts (shared.mimeparts.strip with these notes) scanned clean and
    hashes to `sha256`, so the dispatcher can check it made the same message."""

    parts: tuple[StripPart, ...]
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"parts": [asdict(p) for p in self.parts], "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: Any) -> StripPlan:
        _require(isinstance(d, dict), "'strip' must be an object")
        parts = d.get("parts")
        _require(isinstance(parts, list) and bool(parts), "'strip.parts' must be a non-empty list")
        assert isinstance(parts, list)
        return cls(parts=tuple(StripPart.from_dict(p) for p in parts), sha256=_sha256(d, "sha256"))


@dataclass(frozen=True)
class Verdict:
    """A worker's answer for one scan request.

    `verdict` is what the worker found (one of VERDICTS). What the dispatcher's policy
    depends on besides it is typed: `strip` (a strip plan, when the bad parts can be
    removed) and `spam_high` (spam scored above the high threshold). `extra` is for
    people only (spam score and rules, shown in logs and the quarantine); no decision
    reads it.
    """

    queue_id: str
    attempt: int
    verdict: str
    findings: list[Finding] = field(default_factory=list)
    header_edits: list[HeaderEdit] = field(default_factory=list)
    scan_times: dict[str, float] = field(default_factory=dict)   # scanner -> seconds
    worker: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. spam score and symbols
    inode: int = 0          # echoed from the request
    sha256: str = ""        # of the bytes the worker actually scanned
    error_kind: str = ""    # for verdict "error": one of ERROR_KINDS (see above)
    strip: StripPlan | None = None
    spam_high: bool = False

    @property
    def reasons(self) -> list[str]:
        return [f"{f.scanner}: {f.detail}" for f in self.findings if f.verdict != "clean"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": CONTRACT_VERSION,
            "queue_id": self.queue_id,
            "attempt": self.attempt,
            "verdict": self.verdict,
            "findings": [f.to_dict() for f in self.findings],
            "header_edits": [e.to_dict() for e in self.header_edits],
            "scan_times": dict(self.scan_times),
            "worker": self.worker,
            "extra": dict(self.extra),
            "inode": self.inode,
            "sha256": self.sha256,
            "error_kind": self.error_kind,
            "strip": self.strip.to_dict() if self.strip else None,
            "spam_high": self.spam_high,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Verdict:
        d = _version(d, "verdict")
        verdict = _str(d, "verdict")
        _require(verdict in VERDICTS, f"unknown verdict {verdict!r}")
        findings = d.get("findings", [])
        edits = d.get("header_edits", [])
        times = d.get("scan_times", {})
        extra = d.get("extra", {})
        strip = d.get("strip")
        spam_high = d.get("spam_high", False)
        _require(isinstance(findings, list), "'findings' must be a list")
        _require(isinstance(edits, list), "'header_edits' must be a list")
        _require(isinstance(times, dict) and all(
            isinstance(k, str) and isinstance(v, (int, float)) for k, v in times.items()),
            "'scan_times' must map scanner names to seconds")
        _require(isinstance(extra, dict), "'extra' must be an object")
        _require(isinstance(spam_high, bool), "'spam_high' must be true or false")
        _require(not spam_high or verdict == "spam", "only a spam verdict can be spam_high")
        return cls(
            queue_id=_str(d, "queue_id", empty_ok=False),
            attempt=_int(d, "attempt"),
            verdict=verdict,
            findings=[Finding.from_dict(f) for f in findings],
            header_edits=[HeaderEdit.from_dict(e) for e in edits],
            scan_times={k: float(v) for k, v in times.items()},
            worker=_str(d, "worker") if "worker" in d else "",
            extra=extra,
            inode=_int(d, "inode"),
            sha256=_sha256(d, "sha256"),
            error_kind=_error_kind(d, verdict),
            strip=None if strip is None else StripPlan.from_dict(strip),
            spam_high=spam_high,
        )


@dataclass(frozen=True)
class Started:
    """A worker's notice that it has started scanning these messages: only a message
    that was actually handed to a worker (which may then die on it) counts as an attempt.
    Sent to the same reply list as the verdicts, before the scan."""

    queue_ids: list[str]
    worker: str

    def to_dict(self) -> dict[str, Any]:
        return {"v": CONTRACT_VERSION, "started": list(self.queue_ids), "worker": self.worker}

    @classmethod
    def from_dict(cls, d: Any) -> Started:
        d = _version(d, "started notice")
        return cls(queue_ids=_strlist(d, "started"), worker=_str(d, "worker"))


def _sha256(d: dict[str, Any], key: str) -> str:
    value = _str(d, key)
    _require(_SHA256_RE.fullmatch(value) is not None,
             f"{key!r} must be 64 lower-case hex digits")
    return value


def _error_kind(d: dict[str, Any], verdict: str) -> str:
    kind = _str(d, "error_kind")
    _require(kind in ERROR_KINDS, f"unknown error_kind {kind!r}")
    _require((kind != "") == (verdict == "error"),
             "an error verdict must say its error_kind, and only an error verdict")
    return kind


def worst_verdict(verdicts: list[str]) -> str:
    """The verdict for a set of findings: the most severe one, or clean."""
    return max(verdicts, key=SEVERITY.__getitem__, default="clean")
