"""A message parsed once and shared by every scanner.

Mail clients, clamd and Python's email package do not agree about broken MIME,
and attackers rely on that: an attachment that one parser sees and another does
not reaches the user unscanned. So a ParsedMessage keeps two readings:

- strict: what Python's email package (policy compat32) makes of the message,
  the way a standards-following client sees it;
- tolerant: our own lenient walk, which tries every plausible interpretation
  (each of several Content-Type headers, every boundary candidate, delimiters
  matched by prefix as RFC 2046 permits, parts after the closing delimiter,
  base64 with junk or odd padding) and keeps every part any of them yields.
  It cuts with shared/mimetokens.py, the tokenizer the byte-range editor
  (shared/mimeparts.py, the `strip` action) uses too, and names parts by the
  editor's paths wherever the editor would find the same bytes (Part.path).

Scanners look at the union (`parts`, one entry per distinct payload);
clamd additionally gets `suspect_parts`, the payloads its own MIME decoder may
never see. When the readings cannot be reconciled, `undecidable` says why and
the mime scanner turns that into a finding (unscannable by default).

All work is bounded by ParseLimits: a hostile message costs at most a known
amount of time and memory, and going over a limit is itself undecidable.
"""

from __future__ import annotations

import binascii
import codecs
import email
import email.errors
import email.header
import email.message
import email.utils
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email import policy

from shared.mimetokens import (
    Delimiter,
    child_path,
    cut,
    delimiters,
    is_part_path,
    plain_layout,
    split_head,
)

STRICT = "strict"
TOLERANT = "tolerant"


@dataclass(frozen=True)
class ParseLimits:
    max_parts: int = 1000               # leaves, over both readings together
    max_depth: int = 30                 # multipart / message nesting
    max_decoded_bytes: int = 128 * 2**20  # decoded payloads kept in memory
    max_variants: int = 4               # boundary candidates / decodings tried per entity


@dataclass(frozen=True)
class Part:
    """One leaf of the MIME tree as one or both readings decoded it."""

    # Where the part is. A part path ("2", "3.1"; "" for the whole message) names the
    # part that shared.mimeparts finds under that path, the same bytes (`span`);
    # "2.alt1" is a part only another reading of entity 2 yields, "2~1" a second
    # decoding of part 2, "2.uu1" a uuencoded file in it, "s3" a part only the
    # strict reading found (the third entity it walked).
    path: str
    declared_types: tuple[str, ...]     # every Content-Type the part declares, lowercased
    filenames: tuple[str, ...]          # every name a mail client might show for it
    payload: bytes                      # decoded content
    readings: frozenset[str]            # which readings produced this payload
    anomalies: tuple[str, ...] = ()     # odd things about how it was encoded
    span: tuple[int, int] | None = None     # raw[start:end] is the entity it was decoded
                                            # from; None if that is not a piece of raw

    @property
    def label(self) -> str:
        """How findings name the part: "part 2.1", "message" for the whole message."""
        return _label(self.path)

    @property
    def content_type(self) -> str:
        return self.declared_types[0] if self.declared_types else "text/plain"

    @property
    def digest(self) -> bytes:
        return _digest(self.payload)


@dataclass(frozen=True)
class ParsedMessage:
    raw: bytes
    strict: tuple[Part, ...]
    tolerant: tuple[Part, ...]
    parts: tuple[Part, ...]             # union of both readings, one per distinct payload
    problems: tuple[str, ...]           # every oddity noticed (for logs)
    undecidable: tuple[str, ...]        # why the structure cannot be decided; empty: decided
    limits: ParseLimits = field(default_factory=ParseLimits)

    @classmethod
    def from_bytes(cls, raw: bytes, limits: ParseLimits | None = None) -> ParsedMessage:
        limits = limits or ParseLimits()
        tolerant = _TolerantReading(raw, limits)
        tolerant.run()
        problems = list(tolerant.problems)
        undecidable = list(tolerant.undecidable)
        if tolerant.over_limit:
            # Past a limit the strict parser would only repeat the expensive part
            # (e.g. recursing through thousands of levels); the verdict is
            # already "undecidable", and the parts we did collect get scanned.
            strict: list[Part] = []
        else:
            strict, error = _strict_reading(raw)
            if error:
                problems.append(error)
                undecidable.append(error)
        merged = _merge(strict, tolerant.parts)
        return cls(raw=raw, strict=tuple(strict), tolerant=tuple(tolerant.parts),
                   parts=tuple(merged), problems=tuple(_unique(problems)),
                   undecidable=tuple(_unique(undecidable)), limits=limits)

    @classmethod
    def unparsed(cls, raw: bytes, reason: str) -> ParsedMessage:
        """The raw bytes alone, when parsing failed: clamd can still scan them."""
        return cls(raw=raw, strict=(), tolerant=(), parts=(), problems=(reason,),
                   undecidable=(reason,))

    @property
    def suspect_parts(self) -> tuple[Part, ...]:
        """Parts that a MIME decoder like clamd's may not have seen as we did.

        Those only the tolerant reading found, and those whose encoding was odd
        (e.g. base64 with junk that one decoder skips and another stops at).
        Ordinary mail has none, so scanning them separately costs nothing there.
        """
        return tuple(p for p in self.parts
                     if p.payload and (STRICT not in p.readings or p.anomalies))


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _merge(*readings: list[Part]) -> list[Part]:
    merged: dict[bytes, Part] = {}
    for reading in readings:
        for part in reading:
            key = part.digest
            seen = merged.get(key)
            if seen is None:
                merged[key] = part
                continue
            # Named as the tolerant reading names it, when it found the payload: its
            # paths are those of the byte-range editor.
            where = part if TOLERANT in part.readings and TOLERANT not in seen.readings else seen
            merged[key] = Part(
                path=where.path,
                declared_types=tuple(_unique(seen.declared_types + part.declared_types)),
                filenames=tuple(_unique(seen.filenames + part.filenames)),
                payload=seen.payload,
                readings=seen.readings | part.readings,
                anomalies=tuple(_unique(seen.anomalies + part.anomalies)),
                span=where.span,
            )
    return list(merged.values())


# --- the strict reading -----------------------------------------------------------

def _text(value: str) -> str:
    """Undo the email package's surrogateescape of raw 8-bit header bytes."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _strict_names(part: email.message.Message) -> list[str]:
    names = []
    for raw in (part.get_filename(), part.get_param("name")):
        if raw is None:
            continue
        if isinstance(raw, tuple):
            raw = email.utils.collapse_rfc2231_value(raw)
        names.append(_text(str(raw)))
        if "=?" in raw:
            names.append(decode_words(_text(str(raw))))
    return _unique(n for n in names if n)


def _strict_reading(raw: bytes) -> tuple[list[Part], str]:
    parts: list[Part] = []
    try:
        msg = email.message_from_bytes(raw, policy=policy.compat32)
        for i, node in enumerate(msg.walk()):
            names = _strict_names(node)
            if node.is_multipart():
                if names:       # a name on a container: some clients show it
                    parts.append(Part(f"s{i}", (node.get_content_type(),), tuple(names), b"",
                                      frozenset({STRICT})))
                continue
            payload = node.get_payload(decode=True)
            if not isinstance(payload, bytes):
                payload = b""
            parts.append(Part(f"s{i}", (node.get_content_type(),), tuple(names), payload,
                              frozenset({STRICT})))
    # The email package is meant never to raise on bad input, but it has had
    # bugs that do; a message it chokes on is one clients may read differently.
    except (email.errors.MessageError, ValueError, LookupError, IndexError, TypeError,
            AttributeError, RecursionError) as e:
        return parts, f"Python's email parser fails on this message ({type(e).__name__})"
    return parts, ""


# --- header fields, parameters, encoded words -------------------------------------

_PARAM = re.compile(r"""([A-Za-z0-9!#$%&'*+.^_`{|}~-]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;\s]*)""",
                    re.DOTALL | re.ASCII)
_COMMENT = re.compile(r"\([^()\"]*\)")
_TOKEN = re.compile(r"\s*([^\s;]*)", re.ASCII)
_SECTION = re.compile(r"^(?P<base>[^*]+)(?:\*(?P<index>\d+))?(?P<ext>\*)?$")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=", re.ASCII)
_BETWEEN_WORDS = re.compile(r"(\?=)\s+(=\?)", re.ASCII)
# Header bytes are held as Latin-1 text, in which "\x85" and "\xa0" (parts of
# UTF-8 sequences) count as white space to str.strip(); only ASCII white space is.
_WS = " \t\r\n"


def _charset_decode(data: bytes, charset: str) -> str:
    charset = charset.split("*", 1)[0].strip(_WS + '"') or "utf-8"     # RFC 2231 language
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    return data.decode(charset, "replace")


def decode_words(value: str) -> str:
    """RFC 2047 encoded words, decoded wherever they stand (clients do, quoted or not)."""
    if "=?" not in value:
        return value

    def one(m: re.Match[str]) -> str:
        charset, kind, text = m.groups()
        if kind in "bB":
            data = lenient_b64decode(text.encode("ascii", "replace"))
        else:
            data = binascii.a2b_qp(text.replace("_", " ").encode("ascii", "replace"))
        return _charset_decode(data, charset)

    return _ENCODED_WORD.sub(one, _BETWEEN_WORDS.sub(r"\1\2", value))


def _eight_bit(value: str) -> str:
    """A header value (bytes held as Latin-1) as clients show raw 8-bit text:
    as UTF-8 when it is valid UTF-8 (RFC 6532, and common without it), else
    mostly as Windows-1252, whose 0x80-0x9F are printable; read as Latin-1
    those would be control characters that are not really there."""
    if value.isascii():
        return value
    raw = value.encode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


def _unquote(value: str) -> str:
    if value.startswith('"'):
        value = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
        value = re.sub(r"\\(.)", r"\1", value)
    return value.strip(_WS)


@dataclass
class _Field:
    """A structured header field (Content-Type, Content-Disposition) read leniently."""

    token: str                              # "multipart/mixed", "attachment", ...
    params: list[tuple[str, str]]           # every name=value, in order, duplicates kept

    @classmethod
    def parse(cls, value: str) -> _Field:
        value = _COMMENT.sub(" ", value)
        m = _TOKEN.match(value)
        word = m.group(1) if m else ""
        if "=" in word:     # "filename=x" with no token before it
            return cls(token="", params=cls._params(value))
        return cls(token=word.lower(), params=cls._params(value[m.end() if m else 0:]))

    @staticmethod
    def _params(text: str) -> list[tuple[str, str]]:
        # Every name=value anywhere, not only after ";": some clients accept
        # "attachment filename=x.exe", so a scanner must as well.
        return [(m.group(1).lower(), m.group(2)) for m in _PARAM.finditer(text)]

    def values(self, name: str) -> list[str]:
        """Every reading of parameter `name`: plain, RFC 2231 and RFC 2047 forms."""
        plain = [_unquote(v) for k, v in self.params if k == name]
        sections: dict[int, list[tuple[str, bool]]] = {}
        for key, raw in self.params:
            m = _SECTION.match(key)
            if m and m.group("base") == name and (m.group("index") or m.group("ext")):
                index = int(m.group("index") or 0)
                sections.setdefault(index, []).append((_unquote(raw), bool(m.group("ext"))))
        out = list(plain)
        if sections:
            out.extend(_rfc2231(sections))
        out.extend(decode_words(v) for v in list(out) if "=?" in v)
        return _unique(v for v in out if v)


def _rfc2231(sections: dict[int, list[tuple[str, bool]]]) -> list[str]:
    """Assemble RFC 2231 continuations. A duplicated section gives one reading per copy."""
    variants: list[list[tuple[str, bool]]] = [[]]
    for index in sorted(sections)[:64]:
        variants = [v + [c] for v in variants for c in sections[index][:2]][:4]
    out = []
    for variant in variants:
        charset = "utf-8"
        data = b""
        for n, (value, extended) in enumerate(variant):
            if extended:
                if n == 0 and value.count("'") >= 2:
                    charset, _, value = value.split("'", 2)
                data += _percent_decode(value)
            else:
                data += value.encode("latin-1", "replace")
        out.append(_charset_decode(data, charset or "utf-8"))
    return out


def _percent_decode(value: str) -> bytes:
    out = bytearray()
    raw = value.encode("latin-1", "replace")
    i = 0
    while i < len(raw):
        if raw[i:i + 1] == b"%" and i + 3 <= len(raw):
            try:
                out.append(int(raw[i + 1:i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return bytes(out)


# --- transfer encodings -------------------------------------------------------------

_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64 = bytes(sorted(set(range(256)) - set(_B64_CHARS)))
_NOT_B64_OR_PAD = bytes(sorted(set(range(256)) - set(_B64_CHARS + b"=")))
_WHITESPACE = b" \t\r\n"


def lenient_b64decode(data: bytes) -> bytes:
    """Decode base64, skipping anything outside the alphabet and fixing the padding."""
    clean = data.translate(None, _NOT_B64)
    clean = clean[:len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
    return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))


def _b64_variants(body: bytes) -> tuple[list[bytes], list[str]]:
    compact = body.translate(None, _WHITESPACE)
    try:
        return [binascii.a2b_base64(compact, strict_mode=True)], []
    except binascii.Error:
        pass
    # Decoders disagree on junk and misplaced padding: some skip what is not
    # base64 and read on, some stop at the first "=", some take each padded
    # piece as a stream of its own (concatenated encodings). Keep every reading.
    variants = [lenient_b64decode(compact)]
    if b"=" in compact:
        variants.append(lenient_b64decode(compact[:compact.find(b"=")]))
        pieces = [p for p in re.split(rb"=+", compact) if p]
        variants.append(b"".join(lenient_b64decode(p) for p in pieces[:1000]))
    junk = compact.translate(None, _B64_CHARS + b"=")
    why = "base64 with characters outside the alphabet" if junk else "base64 with odd padding"
    return _unique_bytes(variants), [why]


def _uu_decode(lines: list[bytes]) -> bytes:
    out = bytearray()
    for line in lines:
        if not line or line in (b"`", b" "):
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Some encoders pad lines oddly; decode just the bytes the length says.
            count = ((line[0] - 32) & 63) * 4 + 5
            try:
                out += binascii.a2b_uu(line[:count // 3 + 1])
            except binascii.Error:
                break
    return bytes(out)


_UU_BEGIN = re.compile(rb"^begin(?:-base64)? +[0-7]{3,4} +([^\r\n]+?)[ \t]*\r?$", re.MULTILINE)
_UU_END = re.compile(rb"^end[ \t]*\r?$", re.MULTILINE)


def _uu_blocks(body: bytes, max_blocks: int) -> list[tuple[str, bytes]]:
    """uuencoded files inside a text body: Outlook and others show them as attachments."""
    if b"begin " not in body:
        return []
    out = []
    for m in _UU_BEGIN.finditer(body):
        end = _UU_END.search(body, m.end())
        block = body[m.end():end.start() if end else len(body)]
        lines = [line.rstrip(b"\r") for line in block.split(b"\n")]
        name = m.group(1).decode("latin-1")
        out.append((name, _uu_decode(lines)))
        if len(out) >= max_blocks:
            break
    return out


def _unique_bytes(items: list[bytes]) -> list[bytes]:
    return list(dict.fromkeys(items))


def _cte_kind(value: str) -> str:
    v = value.strip(_WS + '"').lower()
    if v in ("", "7bit", "8bit", "binary"):
        return "identity"
    if "base64" in v or "base 64" in v:
        return "base64"
    if v.startswith("quoted"):
        return "qp"
    if "uu" in v:
        return "uu"
    return "unknown"


# --- the tolerant reading -----------------------------------------------------------

_DELIMITER_LINE = re.compile(rb"^--([!-~][ -~]{0,69}?)(--)?[ \t]*\r?$", re.MULTILINE)
_MAX_REASONS = 20
_WORK_FACTOR = 16           # bytes examined by splitting, per byte of message


class _OverLimit(Exception):
    """A ParseLimit is reached; the reading stops where it is."""


@dataclass(frozen=True, eq=False)
class _Span:
    """buf[start:end]: a piece of the message (buf is the raw message) or of a
    body that was decoded first (a container with a transfer encoding)."""

    buf: bytes
    start: int
    end: int

    @classmethod
    def of(cls, data: bytes) -> _Span:
        return cls(data, 0, len(data))

    @property
    def data(self) -> bytes:
        return self.buf[self.start:self.end]

    def __len__(self) -> int:
        return self.end - self.start


def _unique_spans(items: list[_Span]) -> list[_Span]:
    """One span per distinct content, the first of each."""
    seen: set[bytes] = set()
    out = []
    for span in items:
        data = span.data
        if data not in seen:
            seen.add(data)
            out.append(span)
    return out


@dataclass
class _Split:
    children: list[_Span]           # parts up to the closing delimiter
    closed: bool
    after_close: list[_Span]        # parts delimited after the closing delimiter


def _split(body: _Span, found: list[Delimiter]) -> _Split | None:
    parts = cut(body.buf, body.end, found)
    if parts is None:
        return None
    return _Split(children=[_Span(body.buf, s, e) for s, e in parts.parts], closed=parts.closed,
                  after_close=[_Span(body.buf, s, e) for s, e in parts.after_close])


def _split_body(body: _Span, boundary: bytes) -> tuple[_Split | None, _Split | None]:
    """Cut a multipart body at the delimiter lines of `boundary`, two ways.

    Exact matching (the email package) wants "--boundary" plus optional "--"
    and white space on the line; prefix matching (RFC 2046's note to
    implementors, and some clients) accepts any line that starts with it.
    Returns (exact, prefix); None where no delimiter line was found.
    """
    found = delimiters(body.buf, body.start, body.end, boundary)
    return _split(body, [d for d in found if d.exact]), _split(body, found)


def _same_parts(a: list[_Span], b: list[_Span]) -> bool:
    if [(x.start, x.end) for x in a] == [(y.start, y.end) for y in b]:
        return True
    return [x.data for x in a] == [y.data for y in b]


def _label(path: str) -> str:
    """How problems and findings name a part: "part 2.1", or "message" for the whole."""
    if not path or path.startswith("~"):
        return "message" + path
    return f"part {path}"


def _sub(path: str, name: str) -> str:
    """A name below `path` that is not a part path: "2.alt1", "2.uu1", "2.0"."""
    return f"{path}.{name}" if path else name


class _ChildNames:
    """Paths for the children of one entity, as shared.mimeparts numbers them.

    A child gets the part path of the plain reading (shared/mimetokens.py,
    `plain_layout`) when it is that very byte range of the message, below an
    entity that has a part path itself; so a part path here always names what
    the byte-range editor finds under it. Every other child (one that only a
    prefix match, a second boundary, a decoded body ... reveals) is an
    alternative: "2.alt1", "2.alt2", which is not a part path.
    """

    def __init__(self, raw: bytes, entity: _Span, path: str) -> None:
        self.raw = raw
        self.entity = entity
        self.path = path
        self.plain = entity.buf is raw and (path == "" or is_part_path(path))
        self.layout: dict[tuple[int, int], str] | None = None
        self.alternatives = 0

    def name(self, child: _Span) -> str:
        if self.plain and child.buf is self.raw:
            if self.layout is None:
                children = plain_layout(self.raw, self.entity.start, self.entity.end).children
                self.layout = {span: child_path(self.path, n)
                               for n, span in enumerate(children, 1)}
            path = self.layout.get((child.start, child.end))
            if path is not None:
                return path
        self.alternatives += 1
        return _sub(self.path, f"alt{self.alternatives}")


class _TolerantReading:
    def __init__(self, raw: bytes, limits: ParseLimits) -> None:
        self.raw = raw
        self.limits = limits
        self.parts: list[Part] = []
        self.problems: list[str] = []
        self.undecidable: list[str] = []
        self.over_limit = False
        self.decoded = 0
        self.work = 0
        self.max_work = _WORK_FACTOR * (len(raw) + 2**20)

    def run(self) -> None:
        try:
            self._walk(_Span(self.raw, 0, len(self.raw)), 0, "", "text/plain")
        except _OverLimit as e:
            self.over_limit = True
            self.undecidable.insert(0, str(e))     # the reason that matters most
            self.problems.insert(0, str(e))

    # A hostile message can repeat one trick thousands of times; a few
    # examples say enough, and the lists must stay small.
    def _problem(self, what: str) -> None:
        if len(self.problems) < _MAX_REASONS:
            self.problems.append(what)

    def _undecidable(self, what: str) -> None:
        self._problem(what)
        if len(self.undecidable) < _MAX_REASONS:
            self.undecidable.append(what)

    def _emit(self, path: str, types: list[str], names: list[str], payload: bytes,
              anomalies: list[str], span: _Span | None) -> None:
        if len(self.parts) >= self.limits.max_parts:
            raise _OverLimit(f"more than {self.limits.max_parts} MIME parts")
        self.decoded += len(payload)
        if self.decoded > self.limits.max_decoded_bytes:
            raise _OverLimit(f"MIME parts decode to more than "
                             f"{self.limits.max_decoded_bytes} bytes")
        where = (span.start, span.end) if span is not None and span.buf is self.raw else None
        self.parts.append(Part(path=path, declared_types=tuple(_unique(types)),
                               filenames=tuple(_unique(names)), payload=payload,
                               readings=frozenset({TOLERANT}), anomalies=tuple(_unique(anomalies)),
                               span=where))

    def _walk(self, entity: _Span, depth: int, path: str, default_type: str) -> None:
        if depth > self.limits.max_depth:
            raise _OverLimit(f"MIME nesting deeper than {self.limits.max_depth} levels")
        head = split_head(entity.buf, entity.start, entity.end)
        body = _Span(entity.buf, head.body_start, entity.end)
        anomalies = list(head.anomalies)
        for a in anomalies:
            self._problem(f"{_label(path)}: {a}")

        ctypes = [_Field.parse(v) for v in head.all("content-type")]
        types = _unique(f.token for f in ctypes if "/" in f.token) or [default_type]
        if len(ctypes) > 1:
            distinct = _unique(" ".join(re.split(r"[ \t\r\n]+", v.strip(_WS))).lower()
                               for v in head.all("content-type"))
            if len(distinct) > 1:
                self._undecidable(f"{_label(path)}: conflicting Content-Type headers")
            anomalies.append("duplicate Content-Type")
        ctes = _unique(_cte_kind(v) for v in head.all("content-transfer-encoding"))
        if len(ctes) > 1:
            self._undecidable(f"{_label(path)}: conflicting Content-Transfer-Encoding headers")
        if "unknown" in ctes:
            anomalies.append("unknown Content-Transfer-Encoding")
        names = []
        for v in head.all("content-disposition"):
            names += _Field.parse(_eight_bit(v)).values("filename")
        for v in head.all("content-type"):
            names += _Field.parse(_eight_bit(v)).values("name")
        names = _unique(names)

        multipart = [t for t in types if t.startswith("multipart/")]
        message = [t for t in types if t in ("message/rfc822", "message/global")]
        if multipart or message:
            if names:
                self._emit(path, types, names, b"", anomalies, entity)
            bodies = self._bodies(body, ctes, path, container=True)
            children = _ChildNames(self.raw, entity, path)
            if multipart:
                digest = "multipart/digest" in multipart
                self._multipart(bodies, ctypes, depth, path, children,
                                "message/rfc822" if digest else "text/plain")
            if message:
                for inner in bodies:
                    self._walk(inner, depth + 1, children.name(inner), "text/plain")
            if len(multipart) + len(message) == len(types):
                return
            # One header says container, another says leaf: read it both ways.
        self._leaf(entity, body, types, names, ctes, anomalies, path)

    def _bodies(self, body: _Span, ctes: list[str], path: str, container: bool) -> list[_Span]:
        """The body as each declared transfer encoding decodes it (leaves), or
        for a container also undecoded: the encoding is not allowed there, but
        some clients apply it anyway."""
        out = [body] if container else []
        for cte in ctes or ["identity"]:
            if cte == "base64":
                decoded, why = _b64_variants(body.data)
                variants = [_Span.of(v) for v in decoded]
            elif cte == "qp":
                variants, why = [_Span.of(binascii.a2b_qp(body.data))], []
            elif cte == "uu":
                lines = [line.rstrip(b"\r") for line in body.data.split(b"\n")]
                if lines and lines[0].startswith(b"begin"):
                    lines = lines[1:]
                variants, why = [_Span.of(_uu_decode(lines))], []
            else:
                variants, why = [body], []
            if container and cte in ("base64", "qp", "uu"):
                self._undecidable(f"{_label(path)}: a multipart or message part with "
                                  f"transfer encoding {cte}")
            for w in why:
                self._problem(f"{_label(path)}: {w}")
            out.extend(variants)
        return _unique_spans(out)[: self.limits.max_variants]

    def _leaf(self, entity: _Span, body: _Span, types: list[str], names: list[str],
              ctes: list[str], anomalies: list[str], path: str) -> None:
        for cte in ctes or ["identity"]:
            decoded: list[bytes]
            why: list[str] = []
            if cte == "base64":
                decoded, why = _b64_variants(body.data)
            elif cte == "unknown":
                # A client may guess; so do we, both ways.
                decoded = [body.data]
                guess, _ = _b64_variants(body.data)
                decoded += guess[:1]
            else:
                decoded = [s.data for s in self._bodies(body, [cte], path, container=False)]
            for w in why:
                self._problem(f"{_label(path)}: {w}")
            for n, payload in enumerate(decoded[: self.limits.max_variants]):
                self._emit(path if n == 0 else f"{path}~{n}", types, names, payload,
                           anomalies + why, entity)
                if any(t.startswith("text/") for t in types):
                    for k, (name, data) in enumerate(_uu_blocks(payload, self.limits.max_variants)):
                        self._problem(f"{_label(path)}: uuencoded file {name!r} in a text body")
                        self._emit(_sub(path, f"uu{k + 1}"), ["application/octet-stream"],
                                   [name], data, ["uuencoded inside a text part"], None)

    def _boundaries(self, ctypes: list[_Field]) -> list[bytes]:
        out: list[str] = []
        for f in ctypes:
            for value in f.values("boundary"):
                out += [value, value.rstrip(_WS)]
        return [b.encode("latin-1", "replace") for b in _unique(b for b in out if b)]

    def _discovered(self, body: bytes) -> list[bytes]:
        """Delimiter-looking lines in a body whose declared boundary is missing or absent."""
        counts: dict[bytes, int] = {}
        for m in _DELIMITER_LINE.finditer(body):
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        likely = sorted((n, b) for b, n in counts.items() if n >= 2)
        return [b for _, b in reversed(likely)][: self.limits.max_variants]

    def _multipart(self, bodies: list[_Span], ctypes: list[_Field], depth: int, path: str,
                   names: _ChildNames, child_default: str) -> None:
        declared = self._boundaries(ctypes)
        children: list[_Span] = []
        found: set[bytes] = set()
        for body in bodies:
            candidates = declared[: self.limits.max_variants]
            splits = self._splits(body, candidates)
            if not declared:
                self._undecidable(f"{_label(path)}: multipart without a boundary parameter")
            elif not splits:
                self._undecidable(f"{_label(path)}: boundary not found in the body")
            if not splits:
                splits = self._splits(body, self._discovered(body.data))
            for boundary, exact, prefix in splits:
                found.add(boundary.rstrip(_WS.encode()))
                if exact is None or (prefix is not None
                                     and not _same_parts(prefix.children, exact.children)):
                    self._undecidable(f"{_label(path)}: lines that start with the boundary but "
                                      "are not delimiters (prefix tricks)")
                for s in (exact, prefix):
                    if s is None:
                        continue
                    if not s.closed:
                        self._problem(f"{_label(path)}: no closing boundary")
                    if s.after_close:
                        self._undecidable(f"{_label(path)}: parts after the closing boundary")
                    children += s.children + s.after_close
            if not splits:
                # Nothing to cut at: the body is all a client can show.
                self._emit(_sub(path, "0"), ["text/plain"], [], body.data,
                           ["multipart that cannot be cut"], body)
        if len(found) > 1:
            self._undecidable(f"{_label(path)}: conflicting boundaries")
        for child in _unique_spans(children):
            self._walk(child, depth + 1, names.name(child), child_default)

    def _splits(self, body: _Span, candidates: list[bytes]
                ) -> list[tuple[bytes, _Split | None, _Split | None]]:
        out = []
        for boundary in candidates:
            self.work += len(body)
            if self.work > self.max_work:
                raise _OverLimit("MIME structure too costly to decide")
            exact, prefix = _split_body(body, boundary)
            if exact is not None or prefix is not None:
                out.append((boundary, exact, prefix))
        return out
