"""Header fields in the head of a message given as bytes: the one lookup.

The head is every line up to the first empty line (or the whole message if
there is none); lines end in CRLF or LF. A field line is a name, optional
blanks, and a colon (RFC 5322; Postfix's is_header() allows the blanks too,
and so the dispatcher's header edits find such a field). Lines that begin
with a blank continue the field before them, and are unfolded into its value
as RFC 5322 says: the line break goes, the blank stays. Names compare without
regard to case. Any other line in the head belongs to no field.

    header_values(msg, "Received")  -> [b"from a ...", b"from b ..."]
    header_value(msg, "subject")    -> b"Hello" | None
    header_text(msg, "Subject")     -> "Hello" ("" if absent; UTF-8, bad bytes replaced)
    has_header(msg, "X-Holdscan-Status") -> bool
    line_names([b"Subject: a", b" b", b"To: c"]) -> b"subject", b"subject", b"to"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = ["header_fields", "header_values", "header_value", "header_text", "has_header",
           "line_names"]

_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_BLANKS = b" \t"


def _lines(message: bytes) -> Iterator[bytes]:
    """The lines of the head, without their line ends."""
    pos = 0
    while pos < len(message):
        nl = message.find(b"\n", pos)
        stop = len(message) if nl < 0 else nl
        line = message[pos:stop].rstrip(b"\r")
        if not line:
            return
        yield line
        pos = stop + 1


def _field_start(line: bytes) -> tuple[bytes | None, bytes]:
    """A line that is not a continuation: (lower-case name, rest after the colon), or
    (None, b"") when it is not a field line."""
    m = _FIELD.match(line)
    return (m.group(1).lower(), line[m.end():]) if m else (None, b"")


def line_names(lines: Iterable[bytes]) -> Iterator[bytes | None]:
    """For head lines given one by one (without line ends, as in a queue file's
    records): the lower-case name of the field each belongs to, continuations
    included; None for a line that belongs to no field."""
    name: bytes | None = None
    for line in lines:
        if line[:1] not in (b" ", b"\t"):
            name = _field_start(line)[0]
        yield name


def header_fields(message: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(lower-case name, unfolded value) of every field in the head, in order."""
    name: bytes | None = None
    value = b""
    for line in _lines(message):
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                value += line
            continue
        if name is not None:
            yield name, value.strip(_BLANKS)
        name, value = _field_start(line)
    if name is not None:
        yield name, value.strip(_BLANKS)


def _name(name: str | bytes) -> bytes:
    raw = name.encode("ascii") if isinstance(name, str) else name
    return raw.rstrip(b" \t:").lower()


def header_values(message: bytes, name: str | bytes) -> list[bytes]:
    """Every value of field `name`, in order; [] if there is none."""
    wanted = _name(name)
    return [v for k, v in header_fields(message) if k == wanted]


def header_value(message: bytes, name: str | bytes) -> bytes | None:
    """The first value of field `name`, or None."""
    wanted = _name(name)
    return next((v for k, v in header_fields(message) if k == wanted), None)


def header_text(message: bytes, name: str | bytes, default: str = "") -> str:
    """The first value of field `name` as text (UTF-8, bad bytes replaced), or `default`."""
    value = header_value(message, name)
    return default if value is None else value.decode("utf-8", "replace")


def has_header(message: bytes, name: str | bytes) -> bool:
    return header_value(message, name) is not None
