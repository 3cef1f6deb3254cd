"""The MIME tokenizer that both readings of a message build on.

A message, and each part of it, is an entity: a header block, then a body. A
multipart body is cut into parts at its delimiter lines. This module does that
cutting, by byte offsets into one buffer, and nothing else; what the pieces
mean is up to its two users:

- workers/message.py, the scanning view, which tries every plausible reading
  of a hostile message (several boundaries, delimiters matched by prefix,
  parts after the closing delimiter, decoded containers);
- shared/mimeparts.py, the byte-range editor behind the `strip` action.

Both number parts the same way, by `plain_layout`: the reading of Python's
email package (compat32) for the header fields, exact delimiter lines for the
cuts. Paths number the children of every container from 1; the message inside
a message/rfc822 part is its only child; the message itself is "". A part the
scanning view reports under a part path is the part the editor finds under
that path, byte for byte.

The rules, shared by both:

- header block: ends at the first empty line, or at the first line that is
  neither a header field nor a continuation (the body starts there, as in the
  email package), or after MAX_HEADER_BYTES;
- delimiter line: "--" + boundary at the start of a line (at the start of the
  body, or after a LF). Exact if only blanks follow (after an optional "--",
  which makes it the closing delimiter); a line that merely starts with it is
  a prefix match (RFC 2046's note to implementors; some clients cut there);
- a part runs from the line after its delimiter to the next delimiter line;
  the line break before that delimiter belongs to the delimiter, and so does
  the last line break of a body whose closing delimiter is missing;
- preamble (before the first delimiter) and epilogue are not parts; parts
  delimited after the closing delimiter are reported apart (`Cut.after_close`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

__all__ = ["PART_PATH_RE", "MAX_HEADER_BYTES", "MAX_PARAM_FIELD", "Head", "Delimiter", "Cut",
           "Layout",
           "is_part_path", "child_path", "split_head", "delimiters", "cut", "plain_layout"]

# A MIME part path: "2", "3.1"; never the whole message (""). At most 30 levels, as
# ParseLimits.max_depth, and 5 digits a level.
PART_PATH_RE = re.compile(r"[1-9][0-9]{0,4}(?:\.[1-9][0-9]{0,4}){0,29}")

MAX_HEADER_BYTES = 256 * 1024
# Longest Content-Type field whose parameters the email package is asked for: it
# parses them in time quadratic in their length (email.message._parseparam, on
# many ";" or a quote before them). A longer field has no boundary to the plain
# reading, so the editor does not cut that entity (a hostile message is not
# stripped, it is quarantined); the scanning view reads it in full, linearly.
MAX_PARAM_FIELD = 8 * 1024
# Header bytes are held as Latin-1 text, in which "\x85" and "\xa0" count as white
# space to str.strip(); only ASCII white space is.
_WS = " \t\r\n"


def is_part_path(path: str) -> bool:
    return PART_PATH_RE.fullmatch(path) is not None


def child_path(parent: str, n: int) -> str:
    """The path of the n-th (from 1) child of the entity at `parent`."""
    return f"{parent}.{n}" if parent else str(n)


# --- header block -----------------------------------------------------------------------

@dataclass
class Head:
    fields: list[tuple[str, str]]   # (lowercased name, unfolded value), bytes as Latin-1
    body_start: int                 # offset of the body in the buffer
    anomalies: list[str] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k == name]


def split_head(buf: bytes, start: int = 0, end: int | None = None) -> Head:
    """The header fields of the entity buf[start:end], and where its body starts."""
    end = len(buf) if end is None else end
    fields: list[tuple[str, str]] = []
    anomalies: list[str] = []
    pos = start
    limit = min(end, start + MAX_HEADER_BYTES)
    while pos < limit:
        nl = buf.find(b"\n", pos, end)
        stop = end if nl < 0 else nl + 1
        line = buf[pos:stop].rstrip(b"\r\n")
        if not line:
            pos = stop
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.decode("latin-1").strip(_WS))
            pos = stop
            continue
        name_b, colon, value_b = line.partition(b":")
        stripped = name_b.strip()
        if not colon or not stripped or b" " in stripped or b"\t" in stripped:
            # Not a header line: the body starts here, as in the email package.
            anomalies.append("header block ends without an empty line")
            break
        if stripped != name_b:
            anomalies.append("white space before a header's colon")
        fields.append((stripped.decode("latin-1").lower(), value_b.decode("latin-1").strip(_WS)))
        pos = stop
    return Head(fields=fields, body_start=pos, anomalies=anomalies)


# --- delimiters and parts -----------------------------------------------------------------

@dataclass(frozen=True)
class Delimiter:
    start: int          # first byte of the delimiter line
    next: int           # first byte of the line after it
    close: bool         # "--boundary--..."
    exact: bool         # nothing but blanks after the boundary (and its closing "--")


def delimiters(buf: bytes, start: int, end: int, boundary: bytes) -> list[Delimiter]:
    """Every line in buf[start:end] that starts with "--" + boundary, exact or by prefix."""
    if not boundary or b"\n" in boundary:
        return []
    out = []
    delimiter = b"--" + boundary
    # bytes.find rather than a MULTILINE regex: a 5 MB body is searched in
    # about a millisecond instead of tens.
    at = start if buf.startswith(delimiter, start, end) else buf.find(b"\n" + delimiter, start, end)
    while at >= 0:
        if buf[at:at + 1] == b"\n":
            at += 1
        after = at + len(delimiter)
        nl = buf.find(b"\n", after, end)
        line_end = end if nl < 0 else nl + 1
        rest = buf[after:line_end].rstrip(b"\r\n")
        out.append(Delimiter(start=at, next=line_end, close=rest.startswith(b"--"),
                             exact=rest.rstrip(b" \t") in (b"", b"--")))
        at = buf.find(b"\n" + delimiter, after, end)
    return out


def _strip_eol(buf: bytes, start: int, end: int) -> int:
    """`end`, moved before one line break that ends buf[start:end]."""
    if end - start >= 2 and buf[end - 2:end] == b"\r\n":
        return end - 2
    if end - start >= 1 and buf[end - 1:end] == b"\n":
        return end - 1
    return end


@dataclass
class Cut:
    parts: list[tuple[int, int]]        # (start, end) of each part before the closing delimiter
    closed: bool                        # a closing delimiter was found
    after_close: list[tuple[int, int]]  # parts delimited after the closing delimiter


def cut(buf: bytes, end: int, found: list[Delimiter]) -> Cut | None:
    """The parts between the delimiter lines `found` (of a body ending at `end`)."""
    if not found:
        return None
    parts: list[tuple[int, int]] = []
    after: list[tuple[int, int]] = []
    closed = False
    for d, nxt in zip(found, [*found[1:], None], strict=True):
        if d.close:
            closed = True
            continue
        stop = _strip_eol(buf, d.next, end if nxt is None else nxt.start)
        (after if closed else parts).append((d.next, stop))
    return Cut(parts=parts, closed=closed, after_close=after)


# --- the plain reading: what part paths mean ------------------------------------------------

@dataclass
class Layout:
    start: int
    body_start: int
    end: int
    headers: Message                    # the header block as the email package reads it
    children: list[tuple[int, int]]     # (start, end) of child n + 1, in order


def plain_layout(buf: bytes, start: int = 0, end: int | None = None) -> Layout:
    """The entity buf[start:end] as part paths see it.

    The header fields as Python's email package (compat32) reads them; a
    multipart is cut at exact delimiter lines of its boundary parameter, up to
    the closing delimiter; a message/rfc822 part without a transfer encoding
    (7bit, 8bit, binary) has the message in its body as its one child.
    """
    end = len(buf) if end is None else end
    body_start = split_head(buf, start, end).body_start
    headers = BytesHeaderParser(policy=compat32).parsebytes(buf[start:body_start])
    ctype = headers.get_content_type()
    children: list[tuple[int, int]] = []
    if ctype.startswith("multipart/"):
        field_length = max((len(str(v)) for v in headers.get_all("content-type", [])),
                           default=0)
        boundary = headers.get_boundary() if field_length <= MAX_PARAM_FIELD else None
        if boundary:
            found = delimiters(buf, body_start, end, boundary.encode("latin-1", "replace"))
            parts = cut(buf, end, [d for d in found if d.exact])
            children = parts.parts if parts else []
    elif ctype == "message/rfc822":
        cte = str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        if cte in ("7bit", "8bit", "binary"):
            children = [(body_start, end)]
    return Layout(start=start, body_start=body_start, end=end, headers=headers,
                  children=children)
