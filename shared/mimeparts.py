"""MIME parts by byte range, and removing them: what the `strip` policy action needs.

Both sides use this module, so that they agree to the byte:

- the worker names the parts that made a message infected or blocked by their
  `path` here, builds the message without them (`strip`), scans that again,
  and puts the parts and the SHA-256 of the result in the verdict;
- the dispatcher builds the same message from the same bytes and delivers it
  only if its SHA-256 is the one the worker scanned.

So nothing that was not scanned clean can be delivered by a strip, whatever
this parser gets wrong about a hostile message: a wrong guess only means the
rescan is not clean (or the hashes differ) and the message is quarantined.

The reading is deliberately plain, and it is the one that defines part paths
(shared/mimetokens.py, `plain_layout`): header fields through Python's email
package (compat32), bodies split at exact delimiter lines ("--boundary" plus
optional blanks). Paths number the children of every container from 1; the
message inside a message/rfc822 part is its only child. The top-level entity
has the path "" and is never removed (that would be the whole message). The
scanning view (workers/message.py) cuts with the same tokenizer, so a part it
reports under a path is the part found here under that path.
"""

from __future__ import annotations

import binascii
import hashlib
import quopri
from dataclasses import dataclass, field
from email.message import Message

from shared.mimetokens import (
    MAX_PARAM_FIELD,
    PART_PATH_RE,
    child_path,
    is_part_path,
    plain_layout,
)

__all__ = ["Entity", "StripError", "PART_PATH_RE", "parse", "walk", "leaves", "valid_path",
           "strip", "sha256", "safe_text"]

_MAX_DEPTH = 30                     # as ParseLimits.max_depth: deeper is not ours to edit
_MAX_ENTITIES = 2000
_NOTE_LIMIT = 300                   # characters of one reason in the replacement text


class StripError(ValueError):
    """The parts cannot be removed (unknown path, not a leaf, the whole message)."""


@dataclass
class Entity:
    path: str                       # "" for the message itself, else "1", "2.1", ...
    start: int                      # first byte of the entity's header
    end: int                        # one past its last byte (the line end before the
                                    # next delimiter belongs to the delimiter, and so
                                    # does the last one of a multipart never closed)
    body_start: int
    headers: Message
    children: list[Entity] = field(default_factory=list)
    raw: bytes = field(default=b"", repr=False)

    @property
    def content_type(self) -> str:
        return self.headers.get_content_type()

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def filename(self) -> str:
        """The name a mail client shows, decoded; "" if none (or too long to read)."""
        if any(len(str(v)) > MAX_PARAM_FIELD for k, v in self.headers.items()
               if k.lower() in ("content-type", "content-disposition")):
            return ""
        name = self.headers.get_filename() or self.headers.get_param("name") or ""
        if isinstance(name, tuple):     # RFC 2231 (charset, language, value)
            name = name[2]
        return str(name)

    def body(self) -> bytes:
        return self.raw[self.body_start:self.end]

    def decoded(self) -> bytes | None:
        """The payload after Content-Transfer-Encoding; None if it does not decode."""
        cte = str(self.headers.get("Content-Transfer-Encoding", "")).strip().lower()
        body = self.body()
        if cte == "base64":
            try:
                return binascii.a2b_base64(b"".join(body.split()))
            except binascii.Error:
                return None
        if cte == "quoted-printable":
            return quopri.decodestring(body)
        return body


class _Parser:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.count = 0

    def entity(self, path: str, start: int, end: int, depth: int) -> Entity:
        self.count += 1
        if self.count > _MAX_ENTITIES or depth > _MAX_DEPTH:
            raise StripError("too many or too deeply nested MIME parts to edit")
        layout = plain_layout(self.raw, start, end)
        ent = Entity(path, start, end, layout.body_start, layout.headers, raw=self.raw)
        for n, (child_start, child_end) in enumerate(layout.children, 1):
            ent.children.append(self.entity(child_path(path, n), child_start, child_end,
                                            depth + 1))
        return ent


def parse(raw: bytes) -> Entity:
    """The message as a tree of entities with byte ranges. Raises StripError past limits."""
    return _Parser(raw).entity("", 0, len(raw), 0)


def walk(ent: Entity) -> list[Entity]:
    out = [ent]
    for c in ent.children:
        out.extend(walk(c))
    return out


def leaves(raw: bytes) -> list[Entity]:
    """Every leaf entity of the message, the message itself if it has no parts."""
    return [e for e in walk(parse(raw)) if e.is_leaf]


def valid_path(path: str) -> bool:
    return is_part_path(path)


def safe_text(text: str, limit: int = _NOTE_LIMIT) -> str:
    """One line of printable ASCII: what goes into the replacement part and headers."""
    shown = text.encode("ascii", "backslashreplace").decode("ascii")
    shown = "".join(c if c.isprintable() else " " for c in shown)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def replacement(notes: list[str], eol: bytes) -> bytes:
    """The text/plain part that stands where a removed part was."""
    lines = ["Content-Type: text/plain; charset=us-ascii",
             "Content-Transfer-Encoding: 7bit",
             "Content-Disposition: inline",
             "",
             "holdscan removed a part of this message:",
             ""]
    lines += [safe_text(n) for n in notes]
    return eol.join(line.encode("ascii") for line in lines)


def describe(ent: Entity, reasons: list[str]) -> str:
    """`"eicar.com" (application/octet-stream): clamav: Eicar-Signature`."""
    name = f'"{safe_text(ent.filename, 80)}"' if ent.filename else "unnamed part"
    return f"{name} ({safe_text(ent.content_type, 80)}): {'; '.join(reasons)}"


def strip(raw: bytes, notes: dict[str, str]) -> bytes:
    """`raw` with each part named in `notes` (path -> text) replaced by a text part.

    Deterministic: the same bytes and notes give the same result on every host.
    """
    if not notes:
        raise StripError("no parts to remove")
    ents = {e.path: e for e in walk(parse(raw))}
    eol = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
    cuts = []
    for path, note in notes.items():
        if not path:
            raise StripError("the part is the whole message")
        ent = ents.get(path)
        if ent is None:
            raise StripError(f"no MIME part {path}")
        if not ent.is_leaf:
            raise StripError(f"MIME part {path} is not a leaf")
        cuts.append((ent.start, ent.end, replacement([note], eol)))
    cuts.sort()
    for (_, end_a, _), (start_b, _, _) in zip(cuts, cuts[1:], strict=False):
        if start_b < end_a:
            raise StripError("overlapping MIME parts")
    out = bytearray(raw)
    for start, end, text in reversed(cuts):
        out[start:end] = text
    return bytes(out)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
