"""A message parsed once and shared by every scanner.

Mail clients, clamd and Python's email package do not agree about broken MIME,
and attackers rely on that: an attachment that one parser sees and another does
not reaches the user unscanned. So rather than calling a message it cannot
decide "undecidable", the parser decides it every way a client might, and every
scanner looks at what each reading yields. A ParsedMessage keeps two readings:

- strict: what Python's email package (policy compat32) makes of the message,
  the way a standards-following client sees it;
- tolerant: our own walk, which enumerates the readings of each entity: each of
  several Content-Type and Content-Transfer-Encoding headers, every boundary
  candidate (declared, or found in the body when the declared one never
  occurs), delimiters matched exactly and by prefix, parts after the closing
  delimiter, bare CR as a line end, a nested multipart read on past its
  parent's delimiter to its own closing one, every decoding of a body
  (workers/decoding.py: base64 and quoted-printable as lenient decoders read
  them, uuencode, yEnc and BinHex wherever they stand), and every name
  (workers/mimeparams.py: comments, quotes, continuations in either order,
  encoded words, charsets). It cuts with shared/mimetokens.py, the tokenizer
  the byte-range editor (shared/mimeparts.py, the `strip` action) uses too,
  and names parts by the editor's paths wherever the editor would find the
  same bytes (Part.path).

Scanners look at the union (`parts`, one entry per distinct payload by
SHA-256, so a payload that several readings agree on is scanned once); clamd
additionally gets `suspect_parts`, the payloads its own MIME decoder may never
see. Ordinary mail has one reading of everything and costs what it did.

`undecidable` is left for what no reading can decide: a part whose content no
decoder turns into bytes, or a parsing limit reached; it says which part and
why, and the mime scanner turns it into a finding (unscannable by default).
Everything else odd is a `problem`, for the log.

All work is bounded by ParseLimits: readings are enumerated lazily and cut off
at `max_variants` per entity, decoded bytes are bounded in total and relative
to the message, and going over a limit is undecidable.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import email.utils
import functools
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email import policy

from shared.mimetokens import (
    MAX_PARAM_FIELD,
    Delimiter,
    child_path,
    cut,
    delimiters,
    is_part_path,
    plain_layout,
    split_head,
)
from workers import budget
from workers.decoding import (
    base64_readings,
    binhex_blocks,
    qp_readings,
    uu_blocks,
    uu_decode,
    yenc_blocks,
    yenc_decode,
)
from workers.mimeparams import MAX_PARAMS, Params, display_names, unfold

STRICT = "strict"
TOLERANT = "tolerant"


@dataclass(frozen=True)
class ParseLimits:
    max_parts: int = 1000               # leaves, over both readings together
    max_depth: int = 30                 # multipart / message nesting
    max_decoded_bytes: int = 128 * 2**20  # decoded payloads kept in memory
    max_variants: int = 6               # boundary candidates / decodings tried per entity
    decoded_per_byte: int = 8           # decoded payloads, at most this many times the
                                        # message size (plus 1 MiB)
    cpu_seconds: float = 5.0            # CPU time one message may cost a worker


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

    @functools.cached_property
    def digest(self) -> bytes:
        """SHA-256 of the payload (computed once: every reading is merged by it)."""
        return _digest(self.payload)

    @property
    def origin(self) -> str:
        """The part this is a reading of: "2" for "2~1", another decoding of part 2."""
        return self.path.split("~", 1)[0]

    @property
    def alternative(self) -> bool:
        """Not the plain reading of a part: another decoding ("2~1"), a part only
        another cut reveals ("2.alt1"), a file encoded inside a body ("2.uu1"), or a
        part only the strict reading found. Garbage here (a damaged archive) is what
        a client with that decoder shows: a broken file, not a hidden one."""
        return not (self.path == "" or is_part_path(self.path))


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
        strict: list[Part] = []
        if tolerant.over_limit:
            # Past a limit the strict parser would only repeat the expensive part
            # (e.g. recursing through thousands of levels); the verdict is
            # already "undecidable", and the parts we did collect get scanned.
            pass
        elif (tolerant.param_chars > _STRICT_PARAM_CHARS
              or tolerant.longest_param_field > MAX_PARAM_FIELD):
            # The email package parses parameters in time quadratic in their
            # length (email.message._parseparam); the tolerant reading, linear,
            # reads them every way it does and more.
            problems.append("parameters too long for Python's email parser; "
                            "read by the tolerant reading alone")
        else:
            strict, error = _strict_reading(raw)
            if error:
                # Every part it could have found, the tolerant reading found too.
                problems.append(error)
        merged = _merge(strict, tolerant.parts)
        return cls(raw=raw, strict=tuple(strict), tolerant=tuple(tolerant.parts),
                   parts=tuple(merged), problems=tuple(_unique(problems)),
                   undecidable=tuple(_unique(undecidable)), limits=limits)

    @classmethod
    def unparsed(cls, raw: bytes, reason: str) -> ParsedMessage:
        """The raw bytes alone, when parsing failed: clamd can still scan them."""
        return cls(raw=raw, strict=(), tolerant=(), parts=(), problems=(reason,),
                   undecidable=(reason,))

    def readings_of(self, part: Part) -> tuple[Part, ...]:
        """Every decoding of the part `part` is a decoding of, `part` among them: a
        judgement that one reading is garbage (a damaged archive) holds only if
        every reading of the part is."""
        return tuple(p for p in self.parts if p.origin == part.origin)

    @property
    def suspect_parts(self) -> tuple[Part, ...]:
        """Parts that a MIME decoder like clamd's may not have seen as we did.

        Those only the tolerant reading found, and those whose encoding was odd
        (e.g. base64 with junk that one decoder skips and another stops at).
        Ordinary mail has none, so scanning them separately costs nothing there.
        """
        # Alternative readings too, even where Python's reading agrees: clamd's
        # own MIME decoder is not Python's, and ordinary mail has none.
        return tuple(p for p in self.parts
                     if p.payload and (STRICT not in p.readings or p.anomalies
                                       or p.alternative))


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


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
            merged[key].__dict__["digest"] = key
    return list(merged.values())


# --- the strict reading -----------------------------------------------------------

def _text(value: str) -> str:
    """Undo the email package's surrogateescape of raw 8-bit header bytes, keeping
    the bytes as Latin-1 (display_names reads them as clients do)."""
    return value.encode("utf-8", "surrogateescape").decode("latin-1")


# Total length of the Content-Type and Content-Disposition fields of a message past
# which the strict reading is skipped (the email package is quadratic in them).
_STRICT_PARAM_CHARS = 64 * 1024


def _strict_names(part: email.message.Message) -> list[str]:
    names = []
    for raw in (part.get_filename(), part.get_param("name")):
        if raw is None:
            continue
        if isinstance(raw, tuple):
            try:
                raw = email.utils.collapse_rfc2231_value(raw)
            except (LookupError, UnicodeError, ValueError):
                raw = raw[2]
        # Unfolded and decoded before they are judged: compat32 leaves the line
        # break of a folded value in it, which no client shows.
        names += display_names(_text(str(raw)))
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

# Header bytes are held as Latin-1 text, in which "\x85" and "\xa0" (parts of
# UTF-8 sequences) count as white space to str.strip(); only ASCII white space is.
_WS = " \t\r\n"
# Longest structured field read for its token; the parameters are read in full.
_MAX_TOKEN = 256


def decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded (the first reading; display_names has them all)."""
    return (display_names(value) or [""])[0] if value else value


def _token(value: str) -> str:
    """The type or disposition before the first ";": comments dropped, blanks around
    "/" dropped (`multipart /mixed` is multipart/mixed to clients), lowercased."""
    head = value[:_MAX_TOKEN].split(";", 1)[0]
    if "(" in head:
        head = re.sub(r"\([^()]*\)", "", head)
    head = re.sub(r"[ \t\r\n]*/[ \t\r\n]*", "/", head.strip(_WS))
    words = head.split()
    word = words[0] if words else ""
    return "" if "=" in word else word.lower()


@dataclass
class _Field:
    """A structured header field (Content-Type, Content-Disposition), every reading."""

    token: str                  # "multipart/mixed", "attachment", ...
    params: Params

    @classmethod
    def parse(cls, value: str) -> _Field:
        # Every name=value anywhere, not only after ";": some clients accept
        # "attachment filename=x.exe", so a scanner must as well.
        return cls(token=_token(value), params=Params.parse(unfold(value)))

    def values(self, name: str) -> list[str]:
        """Every name a client might show for parameter `name`."""
        return self.params.values(name)

    def raw_values(self, name: str) -> list[str]:
        """Every reading of parameter `name` as written (boundaries: not decoded)."""
        return [v for k, v in self.params.pairs if k == name]


def _cte_kind(value: str) -> str:
    v = value.strip(_WS + '"').lower()
    if v in ("", "7bit", "8bit", "binary"):
        return "identity"
    if "base64" in v or "base 64" in v:
        return "base64"
    if v.startswith("quoted"):
        return "qp"
    if "yenc" in v:
        return "yenc"
    if "uu" in v:
        return "uu"
    if "binhex" in v:
        return "binhex"
    return "unknown"


# --- the tolerant reading -----------------------------------------------------------

# A line that could be a delimiter: "--", then at most 70 boundary characters, "--" and
# blanks (stripped in Python: a lazy group before optional blanks backtracks over a
# long run of blanks once per character).
_DELIMITER_LINE = re.compile(rb"^--([!-~][ -~]{0,79})\r?$", re.MULTILINE)
_MAX_REASONS = 20
_BARE_CR = re.compile(rb"\r(?!\n)")
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
        self.seen: dict[bytes, int] = {}       # payload digest -> index in parts
        self.emitted = 0                        # parts read, the same payload counted again
        self.problems: list[str] = []
        self.undecidable: list[str] = []
        self.over_limit = False
        self.decoded = 0
        self.max_decoded = min(limits.max_decoded_bytes,
                               limits.decoded_per_byte * len(raw) + 2**20)
        self.work = 0
        self.max_work = _WORK_FACTOR * (len(raw) + 2**20)
        self.param_chars = 0        # length of every Content-Type and -Disposition field
        self.longest_param_field = 0

    def run(self) -> None:
        try:
            self._walk(_Span(self.raw, 0, len(self.raw)), 0, "", "text/plain", len(self.raw))
            # A message written with bare CR line ends (old Macs) is one long header
            # line to a reader that wants LF; clients that accept CR see its structure.
            head = self.raw[:max(split_head(self.raw).body_start, 8192)]
            if head.count(b"\r") != head.count(b"\r\n"):
                self._problem("bare CR line ends in the header; read as line ends too")
                converted = _BARE_CR.sub(b"\r\n", self.raw)
                self._walk(_Span.of(converted), 0, "~cr", "text/plain", len(converted))
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
              anomalies: list[str], span: _Span | None, key: bytes | None = None) -> None:
        budget.check()
        self.emitted += 1
        if self.emitted > self.limits.max_parts:
            raise _OverLimit(f"more than {self.limits.max_parts} MIME parts")
        where = (span.start, span.end) if span is not None and span.buf is self.raw else None
        key = key or _digest(payload)
        at = self.seen.get(key)
        if at is not None:
            # The same bytes by another reading or in another part: kept under
            # this path too (the byte-range editor may need it), stored once,
            # and scanned once (the union has one entry per payload).
            payload = self.parts[at].payload
        else:
            self.decoded += len(payload)
            if self.decoded > self.max_decoded:
                raise _OverLimit(f"MIME parts decode to more than {self.max_decoded} bytes "
                                 f"(every reading together)")
        self.seen.setdefault(key, len(self.parts))
        part = Part(path=path, declared_types=tuple(_unique(types)),
                    filenames=tuple(_unique(names)), payload=payload,
                    readings=frozenset({TOLERANT}), anomalies=tuple(_unique(anomalies)),
                    span=where)
        part.__dict__["digest"] = key       # the cached_property, already known
        self.parts.append(part)

    def _walk(self, entity: _Span, depth: int, path: str, default_type: str,
              outer_end: int) -> None:
        """Read one entity; `outer_end` is where the body enclosing it ends (a nested
        multipart may be read on past its parent's delimiters up to there)."""
        budget.check()
        if depth > self.limits.max_depth:
            raise _OverLimit(f"MIME nesting deeper than {self.limits.max_depth} levels")
        head = split_head(entity.buf, entity.start, entity.end)
        body = _Span(entity.buf, head.body_start, entity.end)
        anomalies = list(head.anomalies)
        for a in anomalies:
            self._problem(f"{_label(path)}: {a}")

        ctype_values = head.all("content-type")
        disp_values = head.all("content-disposition")
        self.param_chars += sum(len(v) for v in ctype_values + disp_values)
        self.longest_param_field = max([self.longest_param_field,
                                        *(len(v) for v in ctype_values + disp_values)])
        ctypes = [_Field.parse(v) for v in ctype_values]
        for f in ctypes:
            if f.params.too_many:
                raise _OverLimit(f"{_label(path)}: a header field with more than "
                                 f"{MAX_PARAMS} parameters")
        types = _unique(f.token for f in ctypes if "/" in f.token) or [default_type]
        if len(ctypes) > 1:
            # Clients take the first or the last: read it as each.
            self._problem(f"{_label(path)}: {len(ctypes)} Content-Type headers")
            anomalies.append("duplicate Content-Type")
        ctes = _unique(_cte_kind(v) for v in head.all("content-transfer-encoding"))
        if len(ctes) > 1:
            self._problem(f"{_label(path)}: conflicting Content-Transfer-Encoding headers")
        if "unknown" in ctes:
            anomalies.append("unknown Content-Transfer-Encoding")
        names = []
        for v in disp_values:
            disposition = _Field.parse(v)
            if disposition.params.too_many:
                raise _OverLimit(f"{_label(path)}: a header field with more than "
                                 f"{MAX_PARAMS} parameters")
            names += disposition.values("filename")
            names += disposition.values("name")
        for f in ctypes:
            names += f.values("name")
        names = _unique(names)

        multipart = [t for t in types if t.startswith("multipart/")]
        message = [t for t in types if t in ("message/rfc822", "message/global")]
        if multipart or message:
            if names:
                self._emit(path, types, names, b"", anomalies, entity)
            bodies = self._container_bodies(body, ctes, path)
            children = _ChildNames(self.raw, entity, path)
            if multipart:
                digest = "multipart/digest" in multipart
                self._multipart(bodies, ctypes, depth, path, children,
                                "message/rfc822" if digest else "text/plain", outer_end)
            if message:
                for inner in bodies:
                    self._walk(inner, depth + 1, children.name(inner), "text/plain", inner.end)
            if len(multipart) + len(message) == len(types):
                return
            # One header says container, another says leaf: read it both ways.
        self._leaf(entity, body, types, names, ctes, anomalies, path)

    def _container_bodies(self, body: _Span, ctes: list[str], path: str) -> list[_Span]:
        """The body of a container as is, and as each declared transfer encoding
        decodes it: the encoding is not allowed there, but some clients apply it."""
        out = [body]
        for cte in ctes:
            if cte in ("identity", "unknown"):
                continue
            self._problem(f"{_label(path)}: a multipart or message part with "
                          f"transfer encoding {cte}")
            for payload, _ in self._decodings(body, cte, path):
                out.append(_Span.of(payload))
        return _unique_spans(out)[: self.limits.max_variants]

    def _decodings(self, body: _Span, cte: str, path: str) -> Iterator[tuple[bytes, str]]:
        """Every reading of `body` under transfer encoding `cte`, lazily, plainest first."""
        data = body.data
        if cte == "base64":
            yield from base64_readings(data)
        elif cte == "qp":
            yield from qp_readings(data)
        elif cte == "uu":
            lines = [line.rstrip(b"\r") for line in data.split(b"\n")]
            while lines and not lines[0].strip():
                lines = lines[1:]
            if lines and lines[0].startswith(b"begin"):
                lines = lines[1:]
            yield uu_decode(lines), ""
        elif cte == "yenc":
            blocks = yenc_blocks(data, 1)
            yield (blocks[0][1] if blocks else yenc_decode(data)), ""
        elif cte == "unknown":
            # A client may guess; so do we, every way.
            yield data, ""
            yield next(base64_readings(data))[0], "unknown transfer encoding read as base64"
            yield next(qp_readings(data))[0], "unknown transfer encoding read as quoted-printable"
        else:
            yield data, ""

    def _leaf(self, entity: _Span, body: _Span, types: list[str], names: list[str],
              ctes: list[str], anomalies: list[str], path: str) -> None:
        emitted = 0
        undecodable = True
        seen: set[bytes] = set()
        text = any(t.startswith("text/") for t in types)
        for cte in ctes or ["identity"]:
            for payload, why in self._decodings(body, cte, path):
                if emitted >= self.limits.max_variants:
                    break
                key = _digest(payload)
                if key in seen:
                    continue
                seen.add(key)
                if payload or not body.data.strip():
                    undecodable = False
                notes = anomalies + ([why] if why else [])
                if why:
                    self._problem(f"{_label(path)}: {why}")
                self._emit(path if emitted == 0 else f"{path}~{emitted}", types, names,
                           payload, notes, entity, key)
                emitted += 1
                # Clients look for uuencode, yEnc and BinHex in text they show, and in
                # bodies sent as they are; a binary attachment decoded cleanly from
                # base64 is saved as it is, and not searched (it costs on every one).
                if (text or cte in ("identity", "unknown") or why
                        or "application/mac-binhex40" in types):
                    self._embedded(payload, types, path)
        if ctes and undecodable and body.data.strip():
            self._undecidable(f"{_label(path)}: its {', '.join(ctes)} body decodes to "
                              f"nothing under any reading")
        if any(c not in ("identity", "unknown") for c in ctes):
            # A part that claims one encoding but carries another (uuencode in
            # a base64 part): clients that sniff find the file in the raw body.
            self._embedded(body.data, types, path, raw=True)

    def _embedded(self, data: bytes, types: list[str], path: str, raw: bool = False) -> None:
        """Files encoded inside a body (uuencode, yEnc, BinHex), which many clients
        show as attachments whatever the part's type."""
        blocks: list[tuple[str, bytes, str]] = []
        limit = self.limits.max_variants
        if b"begin " in data:
            blocks += [(n, d, "uu") for n, d in uu_blocks(data, limit)]
        if b"=ybegin " in data:
            blocks += [(n, d, "yenc") for n, d in yenc_blocks(data, limit)]
        binhex_type = "application/mac-binhex40" in types
        if binhex_type or b"(This file must be converted with BinHex" in data:
            blocks += [(n, d, "binhex") for n, d in
                       binhex_blocks(data, self.max_decoded, whole=binhex_type)]
        kinds = {"uu": "uuencoded", "yenc": "yEnc-encoded", "binhex": "BinHex-encoded"}
        for k, (name, payload, kind) in enumerate(blocks[:limit]):
            what = f"{kinds[kind]} file {name!r}" + (" in the undecoded body" if raw else "")
            self._problem(f"{_label(path)}: {what}")
            self._emit(_sub(path, f"{kind}{k + 1}"), ["application/octet-stream"],
                       [n for n in display_names(name) if n] if name else [], payload,
                       [f"{kinds[kind]} inside a part"], None)

    def _boundaries(self, ctypes: list[_Field]) -> list[bytes]:
        out: list[str] = []
        for f in ctypes:
            for value in f.raw_values("boundary"):
                out += [value, value.rstrip(_WS)]
        return [b.encode("latin-1", "replace") for b in _unique(b for b in out if b)]

    def _discovered(self, body: bytes) -> list[bytes]:
        """Delimiter-looking lines in a body whose declared boundary is missing or absent."""
        counts: dict[bytes, int] = {}
        for m in _DELIMITER_LINE.finditer(body):
            boundary = m.group(1).rstrip(b" \t")
            if boundary.endswith(b"--") and len(boundary) > 2:
                boundary = boundary[:-2]
            if len(boundary) <= 70:
                counts[boundary] = counts.get(boundary, 0) + 1
        likely = sorted((n, b) for b, n in counts.items() if n >= 2)
        return [b for _, b in reversed(likely)][: self.limits.max_variants]

    def _multipart(self, bodies: list[_Span], ctypes: list[_Field], depth: int, path: str,
                   names: _ChildNames, child_default: str, outer_end: int) -> None:
        declared = self._boundaries(ctypes)[: self.limits.max_variants]
        children: list[_Span] = []
        ends: dict[int, int] = {}       # id of a child -> end of the body it was cut from
        for body in self._line_end_readings(bodies):
            first = len(children)
            splits = self._splits(body, declared)
            if not declared:
                self._problem(f"{_label(path)}: multipart without a boundary parameter")
            elif not splits:
                self._problem(f"{_label(path)}: boundary not found in the body")
            if not splits:
                # Every client shows such a body as one text; some also cut it at
                # lines that look like delimiters.
                self._emit(_sub(path, "0"), ["text/plain"], [], body.data,
                           ["multipart that cannot be cut"], body)
                splits = self._splits(body, self._discovered(body.data))
            for boundary, exact, prefix in splits:
                if exact is None or (prefix is not None
                                     and not _same_parts(prefix.children, exact.children)):
                    self._problem(f"{_label(path)}: lines that start with the boundary but "
                                  "are not delimiters; read both ways")
                for s in (exact, prefix):
                    if s is None:
                        continue
                    if not s.closed:
                        self._problem(f"{_label(path)}: no closing boundary")
                        longer = self._read_on(body, boundary, outer_end)
                        if longer is not None:
                            children += longer.children + longer.after_close
                    if s.after_close:
                        self._problem(f"{_label(path)}: parts after the closing boundary")
                    children += s.children + s.after_close
            for child in children[first:]:
                ends[id(child)] = body.end
        for child in _unique_spans(children):
            self._walk(child, depth + 1, names.name(child), child_default, ends[id(child)])

    def _line_end_readings(self, bodies: list[_Span]) -> list[_Span]:
        """Each body, and where it has a bare CR (not before LF), the body with bare CRs
        as line ends, as clients that accept old Mac line ends cut it."""
        out = list(bodies)
        for body in bodies:
            data = body.data
            if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
                self._problem("bare CR line ends; read as line ends too")
                out.append(_Span.of(_BARE_CR.sub(b"\r\n", data)))
        return _unique_spans(out)[: self.limits.max_variants]

    def _read_on(self, body: _Span, boundary: bytes, outer_end: int) -> _Split | None:
        """A multipart never closed within its parent, read on to its own closing
        delimiter beyond the parent's (clients that parse the inner structure first
        let it swallow the parent's delimiter lines)."""
        if body.buf is not self.raw or outer_end <= body.end:
            return None
        close = self.raw.find(b"\n--" + boundary + b"--", body.end, outer_end)
        if close < 0:
            return None
        nl = self.raw.find(b"\n", close + 1, outer_end)
        longer = _Span(self.raw, body.start, outer_end if nl < 0 else nl + 1)
        self._problem("a nested multipart read on past its parent's delimiter")
        exact, prefix = _split_body(longer, boundary)
        return exact or prefix

    def _splits(self, body: _Span, candidates: list[bytes]
                ) -> list[tuple[bytes, _Split | None, _Split | None]]:
        out = []
        for boundary in candidates:
            budget.check()
            self.work += len(body)
            if self.work > self.max_work:
                raise _OverLimit("MIME structure too costly to decide")
            exact, prefix = _split_body(body, boundary)
            if exact is not None or prefix is not None:
                out.append((boundary, exact, prefix))
        return out

