"""Which parts made a message bad, and whether the message is clean without them.

The `strip` policy action removes the offending attachments and delivers the
rest. Whether that is safe is decided here, on the worker, where the scanners
are: the scanners pin each finding to a MIME part (`locate`), and `plan`
builds the message without those parts and has it scanned again. Only if that
rescan is clean does the verdict carry a strip plan (the parts, and the
SHA-256 of the stripped message); the dispatcher delivers a stripped copy only
if the bytes it builds hash the same. A finding that names no part, a part
that is the whole message, or a rescan that finds anything means no plan, and
the dispatcher quarantines instead.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from shared import mimeparts
from shared.contract import Finding, StripPart, StripPlan

log = logging.getLogger("holdscan.strip")

# The verdicts a strip can answer: both are about particular parts.
STRIPPABLE = ("infected", "blocked")

_cache: dict[str, Any] = {"raw": None, "payloads": [], "paths": {}}


def _payloads(raw: bytes) -> list[tuple[str, bytes]]:
    # One message at a time per worker process, and several scanners ask about it,
    # once per bad part: every part is decoded once, and found by its digest.
    if _cache["raw"] is not raw:
        try:
            leaves = [e for e in mimeparts.leaves(raw) if e.path]
        except mimeparts.StripError:
            leaves = []
        found = []
        paths: dict[bytes, list[str]] = {}
        for e in leaves:
            data = e.decoded()
            if data:
                found.append((e.path, data))
                paths.setdefault(hashlib.sha256(data).digest(), []).append(e.path)
        _cache["raw"], _cache["payloads"], _cache["paths"] = raw, found, paths
    out: list[tuple[str, bytes]] = _cache["payloads"]
    return out


def locate(raw: bytes, payload: bytes) -> list[str]:
    """The paths of the parts of `raw` whose decoded content is `payload`."""
    if not payload:
        return []
    _payloads(raw)
    return list(_cache["paths"].get(hashlib.sha256(payload).digest(), []))


def payloads(raw: bytes) -> list[tuple[str, bytes]]:
    """(path, decoded content) of every part that could be removed."""
    return list(_payloads(raw))


def pinned(finding: Finding, paths: list[str]) -> list[Finding]:
    """One finding per part it is about, or the finding as it is if no part is known."""
    if not paths:
        return [finding]
    return [Finding(finding.scanner, finding.verdict, finding.detail, p) for p in paths]


def plan(raw: bytes, verdict: str, findings: list[Finding],
         rescan: Callable[[bytes], str]) -> StripPlan | None:
    """The strip plan for Verdict.strip, or None when stripping is not safe.

    rescan(message) -> the verdict for those bytes.
    """
    if verdict not in STRIPPABLE:
        return None
    bad = [f for f in findings if f.verdict != "clean"]
    if not bad or any(not f.part for f in bad):
        return None
    try:
        tree = {e.path: e for e in mimeparts.walk(mimeparts.parse(raw))}
    except mimeparts.StripError:
        return None
    reasons: dict[str, list[str]] = {}
    for f in bad:
        reasons.setdefault(f.part, [])
        text = f"{f.scanner}: {f.detail}"
        if text not in reasons[f.part]:
            reasons[f.part].append(text)
    notes = {}
    for path, why in sorted(reasons.items()):
        ent = tree.get(path)
        if ent is None:
            return None
        notes[path] = mimeparts.describe(ent, why)
    try:
        stripped = mimeparts.strip(raw, notes)
    except mimeparts.StripError as e:
        log.info("cannot strip: %s", e)
        return None
    after = rescan(stripped)
    if after != "clean":
        log.info("stripped message is still %s; no strip plan", after)
        return None
    return StripPlan(parts=tuple(StripPart(p, n) for p, n in notes.items()),
                     sha256=mimeparts.sha256(stripped))
