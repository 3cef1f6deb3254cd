"""Content found inside a message's parts, handed to the scanners that run after.

Some content is in the message but in no MIME part: a file an HTML attachment
builds in script from a base64 blob, the members of an archive opened with a
password the mail gives, the first of two zips written one after the other
(which clamd, reading the last directory, never sees). A scanner that finds
such content returns it as derived parts (ScanResult.derived); the engine adds
them to the message's parts, so every later scanner judges them like
attachments: the filename and filetype rules, the archive walk, and clamd,
which gets each as its own stream (a derived part is never one the strict
reading produced, so it is one of the message's suspect parts).

A derived part is named below the part it came from ("2.blob1", "2.zip1") and
says how it was found in its anomalies. Its payload is not a piece of the raw
message, so a finding about it names no strippable part: a `strip` policy
quarantines such mail instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from workers.message import ParsedMessage, Part

DERIVED = "derived"     # the "reading" that produced a derived part
# In a derived part's anomalies: its bytes are one guess among several (pieces of a
# script's blob, and all of them joined), so a piece that is a damaged archive is
# expected, not a reason to call the mail unscannable.
GUESSED = "guessed"


def derived_part(parent: Part, suffix: str, payload: bytes, names: str | tuple[str, ...],
                 how: str, guessed: bool = False) -> Part:
    """A part for `payload`, found in `parent`; `names` are what a client would call it."""
    path = f"{parent.path}.{suffix}" if parent.path else suffix
    if isinstance(names, str):
        names = (names,)
    return Part(path=path, declared_types=("application/octet-stream",),
                filenames=tuple(n for n in names if n), payload=payload,
                readings=frozenset({DERIVED}),
                anomalies=(how, GUESSED) if guessed else (how,), span=None)


def is_derived(part: Part) -> bool:
    return DERIVED in part.readings


def is_guess(part: Part) -> bool:
    return is_derived(part) and GUESSED in part.anomalies


def add_parts(msg: ParsedMessage, parts: Iterable[Part]) -> ParsedMessage:
    """`msg` with `parts` added, each distinct payload once (one clamd stream each)."""
    seen = {p.digest for p in msg.parts}
    new = []
    for part in parts:
        if part.payload and part.digest not in seen:
            seen.add(part.digest)
            new.append(part)
    if not new:
        return msg
    return dataclasses.replace(msg, parts=msg.parts + tuple(new))
