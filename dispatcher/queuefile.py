"""Read and write Postfix queue files.

A queue file is a sequence of records: one type byte, the data length in 7-bit
groups (least significant first, high bit = "more"), then the data. Sections
come in this order: the C (size) record, the envelope, M, the content (message
lines as N records, long lines as L pieces ended by an N), X, the extracted
section, E. Records that cleanup appended or edited live after E and are
reached through p (pointer) records; w records are padding.

This module knows the format and nothing else: no spool, no Celery. It reads
a file the way Postfix's own readers do (rec_get() follows p and skips w, the
queue manager checks the C record, pairs O/DSN records with the next R) and
refuses what the queue manager would refuse, so that a file this module
accepts is one Postfix will accept too. It writes one straight record stream
with every offset in the C record recomputed, and it keeps every envelope
record it does not interpret byte for byte, in order.

Decisions where Postfix leaves a choice (each explained where it is made):

* a record length of 5 bytes is refused (Postfix's reader would take one, but
  no record it writes needs more than 4, and 4 bytes already allow 256 MB);
* a C record with fewer than 6 fields (Postfix < 3.0) is read, and written
  back with 6: a missing qmgr-flags or send-options field becomes 0;
* `attributes` follows the queue manager: the first value of a name wins,
  except for the names that qmgr lets a later record override;
* a content line is split the way cleanup_out() splits one: pieces of exactly
  `line_length_limit` bytes as L records, the rest (1..limit bytes) as N;
* an empty message (no content line at all: only p or w records between M
  and X, e.g. a pointer from M straight to X) is written as one dummy pointer
  record (offset 0), the placeholder cleanup itself puts after the last
  header, because qmgr refuses a content size of 0 (a real Postfix delivers
  such a file as an empty message).

Whatever parse() accepts, serialize() writes back: parse(serialize(parse(x)))
has the same envelope, content and extracted records as parse(x).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from shared.headers import line_names

__all__ = [
    "QueueFileError",
    "Record",
    "Recipient",
    "QueueFile",
    "parse",
    "read",
    "serialize",
    "DEFAULT_LINE_LENGTH_LIMIT",
]

DEFAULT_LINE_LENGTH_LIMIT = 2048

# Record types (src/global/rec_type.h), as byte values.
_C, _T, _M, _N, _L, _X, _E = b"CTMNLXE"
_S, _R, _D, _O, _A, _P, _W = b"SRDOApw"
_DRCP = ord("/")
_CTIME, _ENVID, _RET, _ORCPT, _NOTIFY = b"ci<on"

# What Postfix's cleanup accepts in each section (REC_TYPE_ENVELOPE and
# REC_TYPE_EXTRACT without their terminators). Anything else means the file is
# not what Postfix wrote, and `postsuper -r` would reject it, so we refuse it.
_ENVELOPE_TYPES = frozenset(b"TcFILSDRO/WVA>K<ion")
_EXTRACTED_TYPES = frozenset(b"DRO/PreAFIL>Kon")

# The size record: "%15ld" fields. qmgr reads 5 of them, cleanup writes 6.
_SIZE_FIELD_WIDTH = 15
_SIZE_FIELDS_WRITTEN = 6
# qmgr refuses a C record whose flags field has bits outside QMGR_READ_FLAG_USER:
# bit 0 = mixed recipient/other records, bits 1-4 = DSN NOTIFY flags << 1.
_QMGR_USER_FLAGS = 0x1F
# Send-options bit that cleanup sets when a header is not ASCII (smtputf8.h).
_SMTPUTF8_FLAG_HEADER = 1 << 1

# At most 4 length bytes: 28 bits.
_MAX_RECORD_LEN = (1 << 28) - 1

# The content of an empty message: cleanup's dummy pointer record ("%15ld" of 0),
# which every Postfix reader skips (rec_goto(): "Dummy record").
_EMPTY_CONTENT = b"p\x0f" + b"%15d" % 0

# 18 digits keep every number inside a C long and far from Python's limit on
# int() of very long digit strings.
_INT_RE = re.compile(rb"[+-]?[0-9]{1,18}")
_TIME_RE = re.compile(rb"[ \t]*([0-9]{1,18})(?:[ \t]+([0-9]{1,9}))?[ \t]*")
_PTR_RE = re.compile(rb"[ \t\n\r\x0b\x0c]*([0-9]{1,18})")
# A header field name followed by a colon (RFC 5322; Postfix's is_header()
# also allows blanks before the colon).
_HEADER_RE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_FIELD_NAME_RE = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_EOL_RE = re.compile(rb"\r?\n")
# split_nameval(): blanks, a name without blanks or "=", blanks, "=", the value.
_ATTR_RE = re.compile(rb"[ \t\n\r\x0b\x0c]*([^ \t\n\r\x0b\x0c=]*)[ \t\n\r\x0b\x0c]*=(.*)",
                      re.DOTALL)

# Attributes whose later value replaces an earlier one in qmgr_message_read()
# ("Allow extra segment to override envelope segment info"). For every other
# name the queue manager keeps the first value, and so do we.
_LAST_WINS = frozenset({
    "encoding", "log_client_name", "log_client_address", "log_protocol_name",
    "log_helo_name", "trace_flags",
})
# Pseudo record types and the attribute names they stand for (rec_attr_map.c).
_PSEUDO_NAMES = {
    _CTIME: "create_time", _ENVID: "envelope_id", _RET: "ret_flags",
    _ORCPT: "dsn_orig_rcpt", _NOTIFY: "notify_flags",
}
# Per-recipient attributes: they belong to the next R record, not the message.
_RCPT_ATTRS = frozenset({"dsn_orig_rcpt", "notify_flags"})


class QueueFileError(ValueError):
    """A queue file that Postfix would not accept, with where it went wrong."""

    def __init__(self, offset: int, problem: str) -> None:
        super().__init__(f"offset {offset}: {problem}")
        self.offset = offset
        self.problem = problem

    def __reduce__(self) -> tuple[type[QueueFileError], tuple[int, str]]:
        # The default pickling would call __init__ with the message only.
        return (QueueFileError, (self.offset, self.problem))


@dataclass
class Record:
    """One record, kept byte for byte. `type` is one character, e.g. "R"."""

    type: str
    data: bytes


@dataclass
class Recipient:
    """One R (to deliver) or D (already delivered) record and what qualifies it.

    orig_rcpt, dsn_orig_rcpt and notify come from the O, dsn_orig_rcpt and
    notify_flags records (A records or their pseudo forms o and n) that precede
    the R or D record, as Postfix's queue manager pairs them.
    """

    address: str
    orig_rcpt: str | None = None
    dsn_orig_rcpt: str | None = None
    notify: int | None = None
    done: bool = False


@dataclass
class _RawContent:
    """The content records exactly as read, for writing back unchanged content.

    Postfix's smtpd ends a line whose length is a multiple of the line length
    limit with an empty N record, cleanup with a full one; both mean the same
    line. Keeping the records as read makes an unedited file come back out
    byte for byte.
    """

    lines: list[bytes]
    data: bytes
    max_piece: int


def _decode(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _encode(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


@functools.lru_cache(maxsize=4096)
def _split_attr(data: bytes) -> tuple[bytes, bytes] | None:
    """Split "name=value" as Postfix's split_nameval() does, or None if malformed."""
    # Postfix handles the record as a C string: a NUL ends it.
    m = _ATTR_RE.match(data.split(b"\0", 1)[0])
    if m is None:
        return None
    return m.group(1), m.group(2).strip()


def _notify(value: bytes) -> int | None:
    """DSN NOTIFY flags, or None where qmgr would ignore them as malformed."""
    if not value.isdigit() or len(value) > 9:
        return None
    n = int(value)
    # DSN_NOTIFY_OK(): NEVER (1) alone, or any of SUCCESS, FAILURE, DELAY (2, 4, 8).
    if n == 0 or n & ~0xF or (n & 1 and n != 1):
        return None
    return n


def _type_name(t: int) -> str:
    return repr(chr(t)) if 0x20 < t < 0x7F else f"0x{t:02x}"


def _next_record(buf: bytes, pos: int, n: int) -> tuple[int, int, int]:
    """Decode the record header at pos: (type, data start, data end)."""
    if pos + 1 >= n:
        raise QueueFileError(pos, f"truncated record: type {_type_name(buf[pos])} "
                                  "without a length")
    b = buf[pos + 1]
    if b < 0x80:
        ds = pos + 2
        de = ds + b
    else:
        length = b & 0x7F
        i = pos + 2
        shift = 7
        while True:
            if shift >= 28:
                raise QueueFileError(pos, "record length has more than 4 bytes")
            if i >= n:
                raise QueueFileError(pos, "truncated record: end of file inside the length")
            b = buf[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        ds = i
        de = i + length
    if de > n:
        raise QueueFileError(pos, f"truncated record: type {_type_name(buf[pos])} needs "
                                  f"{de - ds} data bytes, the file has {n - ds} left")
    return buf[pos], ds, de


def _parse_size(data: bytes, offset: int) -> list[int]:
    tokens = data.split()
    if len(tokens) < 3:
        # One field is the Postfix < 1.0 layout, which qmgr handles by a full
        # scan; nobody runs a queue that old, so we do not.
        raise QueueFileError(offset, f"size record has {len(tokens)} fields, expected 6 "
                                     "(at least 3)")
    for tok in tokens:
        if not _INT_RE.fullmatch(tok):
            raise QueueFileError(offset, f"size record field {tok[:20]!r} is not a number")
    fields = [int(tok) for tok in tokens]
    # The same checks as qmgr_message_read(): failing them sends a file to corrupt/.
    if fields[0] <= 0 or fields[1] <= 0:
        raise QueueFileError(offset, f"size record has content size {fields[0]} and content "
                                     f"offset {fields[1]}; both must be positive")
    if len(fields) > 3 and fields[3] & ~_QMGR_USER_FLAGS:
        raise QueueFileError(offset, f"size record has invalid queue manager flags {fields[3]}")
    if len(fields) > 4 and fields[4] < 0:
        raise QueueFileError(offset, f"size record has negative content length {fields[4]}")
    return fields


def parse(data: bytes | bytearray | memoryview) -> QueueFile:
    """Parse a whole queue file. Raises QueueFileError for anything Postfix would refuse."""
    buf = bytes(data)
    n = len(buf)
    if n == 0:
        raise QueueFileError(0, "empty file")
    if buf[0] != _C:
        raise QueueFileError(0, f"first record has type {_type_name(buf[0])}, expected C "
                                "(not a queue file)")
    _, ds, de = _next_record(buf, 0, n)
    size_fields = _parse_size(buf[ds:de], 0)
    pos = de

    envelope: list[Record] = []
    content: list[bytes] = []
    extracted: list[Record] = []
    pieces: list[bytes] = []        # L pieces of the line being read
    raw_runs: list[bytes] = []      # content records as read, p and w left out
    max_piece = 0
    section = 0                     # 0 envelope, 1 content, 2 extracted
    run_start = m_end = x_offset = -1
    arrival_seen = sender_seen = False
    # Loop guards. A file that Postfix wrote reads every byte at most once, so
    # reading more bytes than the file has, or jumping to a target twice,
    # means a pointer loop; both keep the work linear in the file size.
    visited: set[int] = set()
    budget = n - pos

    while True:
        if pos >= n:
            missing = ("M (start of content)", "X (end of content)", "E (end of file)")[section]
            raise QueueFileError(pos, f"end of file before the {missing} record")
        rec = pos
        t, ds, de = _next_record(buf, pos, n)
        pos = de
        budget -= de - rec
        if budget < 0:
            raise QueueFileError(rec, "pointer loop: records are read more than once")

        if t == _P:
            m = _PTR_RE.fullmatch(buf, ds, de)
            if m is None:
                raise QueueFileError(rec, f"malformed pointer record {buf[ds:de][:20]!r}")
            target = int(m.group(1))
            if target == 0:             # a placeholder that cleanup may fill in later
                continue
            if target >= n:
                raise QueueFileError(rec, f"pointer to offset {target}, beyond the end of "
                                          f"the file ({n} bytes)")
            if target in visited:
                raise QueueFileError(rec, f"pointer loop: offset {target} is reached twice")
            visited.add(target)
            if section == 1 and rec > run_start:
                raw_runs.append(buf[run_start:rec])
            pos = run_start = target
            continue
        if t == _W:
            if section == 1:
                if rec > run_start:
                    raw_runs.append(buf[run_start:rec])
                run_start = pos
            continue

        if section == 1:
            if t == _N and not pieces and de - ds < 0x80:
                # Most of a message: N records of one-byte length, one after another.
                # Read the run in one tight loop; anything else goes the long way.
                content.append(buf[ds:de])
                ln = de - ds
                if ln > max_piece:
                    max_piece = ln
                while pos + 1 < n and buf[pos] == _N:
                    ln = buf[pos + 1]
                    if ln >= 0x80 or pos + 2 + ln > n:
                        break
                    content.append(buf[pos + 2:pos + 2 + ln])
                    if ln > max_piece:
                        max_piece = ln
                    budget -= 2 + ln
                    pos += 2 + ln
                if budget < 0:
                    raise QueueFileError(pos, "pointer loop: records are read more than once")
                continue
            ln = de - ds
            if ln > max_piece:
                max_piece = ln
            if t == _N:
                if pieces:
                    pieces.append(buf[ds:de])
                    content.append(b"".join(pieces))
                    pieces.clear()
                else:
                    content.append(buf[ds:de])
            elif t == _L:
                pieces.append(buf[ds:de])
            elif t == _X:
                if pieces:
                    # cleanup never ends the content inside a line, but a
                    # delivery agent would still write the piece out as a line.
                    content.append(b"".join(pieces))
                    pieces.clear()
                if rec > run_start:
                    raw_runs.append(buf[run_start:rec])
                x_offset = rec
                if m_end != size_fields[1] or m_end + size_fields[0] != x_offset:
                    raise QueueFileError(0, f"size record points at offsets {size_fields[1]} "
                                            f"and {size_fields[1] + size_fields[0]}, but the "
                                            f"content runs from {m_end} to the X record at "
                                            f"{x_offset}")
                section = 2
            else:
                raise QueueFileError(rec, f"unexpected record type {_type_name(t)} in the "
                                          "message content")
        elif section == 0:
            if t == _M:
                m_end = run_start = pos
                section = 1
                if not arrival_seen:
                    raise QueueFileError(rec, "envelope has no T (arrival time) record")
                if not sender_seen:
                    raise QueueFileError(rec, "envelope has no S (sender) record")
            elif t in _ENVELOPE_TYPES:
                d = buf[ds:de]
                if t == _A and _split_attr(d) is None:
                    raise QueueFileError(rec, f"malformed attribute record {d[:40]!r}")
                if t == _T and not arrival_seen:
                    m = _TIME_RE.fullmatch(d)
                    if m is None or int(m.group(1)) == 0:
                        raise QueueFileError(rec, f"malformed T (arrival time) record {d[:40]!r}")
                    arrival_seen = True
                elif t == _S:
                    sender_seen = True
                envelope.append(Record(chr(t), d))
            elif t == _C:
                raise QueueFileError(rec, "second C (size) record")
            else:
                raise QueueFileError(rec, f"unexpected record type {_type_name(t)} in the "
                                          "envelope")
        else:
            if t == _E:
                break
            if t in _EXTRACTED_TYPES:
                d = buf[ds:de]
                if t == _A and _split_attr(d) is None:
                    raise QueueFileError(rec, f"malformed attribute record {d[:40]!r}")
                extracted.append(Record(chr(t), d))
            else:
                raise QueueFileError(rec, f"unexpected record type {_type_name(t)} after the "
                                          "X record")

    raw = raw_runs[0] if len(raw_runs) == 1 else b"".join(raw_runs)
    return QueueFile(size_fields, envelope, content, extracted,
                     _RawContent(list(content), raw, max_piece))


def read(path: str | os.PathLike[str]) -> QueueFile:
    """Read and parse the queue file at path. OSError if it cannot be read."""
    with open(path, "rb") as f:
        return parse(f.read())


# -- writing -------------------------------------------------------------------------------------

def _length_bytes(n: int) -> bytes:
    if n < 0x80:
        return _SMALL_LENGTHS[n]
    if n > _MAX_RECORD_LEN:
        raise ValueError(f"record of {n} bytes is too long for a queue file")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_SMALL_LENGTHS = [bytes((i,)) for i in range(0x80)]
_SMALL_N = [b"N" + bytes((i,)) for i in range(0x80)]


def _record_bytes(t: bytes, data: bytes) -> bytes:
    return t + _length_bytes(len(data)) + data


def _encode_content(lines: Sequence[bytes], limit: int) -> bytes:
    parts: list[bytes] = []
    add = parts.append
    piece_header = b"L" + _length_bytes(limit)
    for line in lines:
        ln = len(line)
        if ln <= limit:
            add(_SMALL_N[ln] if ln < 0x80 else b"N" + _length_bytes(ln))
            add(line)
        else:
            # As cleanup_out() does it: L pieces of exactly `limit` bytes while
            # more than `limit` bytes are left, then an N with the rest.
            start = 0
            while ln - start > limit:
                add(piece_header)
                add(line[start:start + limit])
                start += limit
            add(b"N" + _length_bytes(ln - start))
            add(line[start:])
    return b"".join(parts)


def _check_records(records: Sequence[Record], allowed: frozenset[int], where: str) -> None:
    for r in records:
        if len(r.type) != 1 or ord(r.type) not in allowed:
            raise ValueError(f"record type {r.type!r} does not belong in the {where}")
        if r.type == "A" and _split_attr(r.data) is None:
            raise ValueError(f"malformed attribute record {r.data[:40]!r} in the {where}")


def _check_required(envelope: Sequence[Record]) -> None:
    """The envelope records without which qmgr refuses a file."""
    types = {r.type for r in envelope}
    if "S" not in types:
        raise ValueError("the envelope has no S (sender) record")
    first_t = next((r for r in envelope if r.type == "T"), None)
    m = _TIME_RE.fullmatch(first_t.data) if first_t else None
    if m is None or int(m.group(1)) == 0:
        raise ValueError("the envelope has no valid T (arrival time) record")


def serialize(qf: QueueFile, line_length_limit: int = DEFAULT_LINE_LENGTH_LIMIT) -> bytes:
    """Write qf as one straight record stream: C, envelope, M, content, X, extracted, E.

    No p or w records are written. The C record is "%15ld" x 6: field 1 is the
    size of the content records (M to X), field 2 the offset just after M, field
    5 the content length (cleanup's cont_length: the bytes of the content
    records, which in a straight file equals field 1), fields 3, 4 and 6 are
    copied (missing ones become 0; extra fields of a newer Postfix are kept).

    Unedited content (the lines still equal to what parse() read) is written
    back with its records as read; edited content is split as cleanup splits
    lines, at line_length_limit. A message without any content line is
    written as one dummy p record (offset 0): qmgr refuses a content size of
    0, and every Postfix reader skips that record, as parse() does. Raises
    ValueError for a model that parse() (like the queue manager) would
    refuse: a record type outside its section, a malformed attribute, no S or
    T record.
    """
    if line_length_limit < 1:
        raise ValueError(f"line_length_limit must be positive, not {line_length_limit}")
    _check_records(qf.envelope, _ENVELOPE_TYPES, "envelope")
    _check_records(qf.extracted, _EXTRACTED_TYPES, "extracted section")
    _check_required(qf.envelope)

    raw = qf._raw_content
    if raw is not None and raw.max_piece <= line_length_limit and qf.content == raw.lines:
        content = raw.data
    else:
        content = _encode_content(qf.content, line_length_limit)
    if not content:
        # No line at all: a file that Postfix reaches X in only through p or w
        # records (a pointer from M straight to X, say). Written straight, its
        # content size would be 0, which qmgr refuses.
        content = _EMPTY_CONTENT

    envelope = b"".join([_record_bytes(r.type.encode("latin-1"), r.data) for r in qf.envelope])
    extracted = b"".join([_record_bytes(r.type.encode("latin-1"), r.data) for r in qf.extracted])

    fields = list(qf.size_fields) + [0] * (_SIZE_FIELDS_WRITTEN - len(qf.size_fields))
    fields[0] = len(content)
    fields[4] = len(content)
    # The C record's own length enters data_offset. With fixed-width fields the
    # guess is right at once; a field that outgrew 15 digits takes another try.
    size_len = 2 + _SIZE_FIELDS_WRITTEN * (_SIZE_FIELD_WIDTH + 1) - 1
    while True:
        fields[1] = size_len + len(envelope) + 2      # 2 = the empty M record
        text = " ".join(f"{v:{_SIZE_FIELD_WIDTH}d}" for v in fields).encode("ascii")
        size_record = _record_bytes(b"C", text)
        if len(size_record) == size_len:
            break
        size_len = len(size_record)
    return b"".join((size_record, envelope, b"M\x00", content, b"X\x00", extracted, b"E\x00"))


# -- the model -----------------------------------------------------------------------------------

@dataclass
class QueueFile:
    """A parsed queue file.

    size_fields: the C record's numbers as read.
    envelope:    every envelope record in the order read (p followed, p and w
                 dropped), without C and M.
    content:     the message lines without line endings (L pieces joined).
    extracted:   the records after X and before E.
    """

    size_fields: list[int]
    envelope: list[Record]
    content: list[bytes]
    extracted: list[Record] = field(default_factory=list)
    _raw_content: _RawContent | None = field(default=None, repr=False, compare=False)

    # -- derived, read-only ---------------------------------------------------------------------
    @property
    def sender(self) -> str:
        """The envelope sender; '' for the null sender <>. The first S record wins, as in qmgr."""
        for r in self.envelope:
            if r.type == "S":
                return _decode(r.data)
        raise ValueError("queue file has no S (sender) record")

    @property
    def arrival_time(self) -> float:
        """The T record "sec usec" as seconds since the epoch."""
        for r in self.envelope:
            if r.type == "T":
                m = _TIME_RE.fullmatch(r.data)
                if m is None:
                    raise ValueError(f"malformed T record {r.data[:40]!r}")
                return int(m.group(1)) + int(m.group(2) or 0) / 1e6
        raise ValueError("queue file has no T (arrival time) record")

    @property
    def create_time(self) -> float | None:
        """The create_time attribute (what expiry counts from), or None."""
        value = self.attributes.get("create_time")
        if value is None or not _INT_RE.fullmatch(_encode(value)):
            return None
        return float(int(value))

    @property
    def attributes(self) -> dict[str, str]:
        """Named attributes of the message, from A records and pseudo records.

        The pseudo records c, i and < appear under create_time, envelope_id and
        ret_flags. Per-recipient attributes (dsn_orig_rcpt, notify_flags) are
        on Recipient instead. Like the queue manager, the first value wins,
        except for encoding and the log_* client names, where the last does
        (so the extracted section can override the envelope).
        """
        attrs: dict[str, str] = {}
        for r in self._records():
            t = r.type
            if t == "A":
                split = _split_attr(r.data)
                if split is None:
                    continue
                name = _decode(split[0])
                value = _decode(split[1])
            elif len(t) == 1 and ord(t) in (_CTIME, _ENVID, _RET):
                name = _PSEUDO_NAMES[ord(t)]
                value = _decode(r.data)
            else:
                continue
            if name in _RCPT_ATTRS:
                continue
            if name in _LAST_WINS or name not in attrs:
                attrs[name] = value
        return attrs

    @property
    def recipients(self) -> list[Recipient]:
        """Every R and D recipient, envelope first, then the extracted section."""
        return [rcpt for rcpt, _ in self._recipient_groups()]

    def _records(self) -> Iterator[Record]:
        yield from self.envelope
        yield from self.extracted

    def _recipient_groups(self) -> Iterator[tuple[Recipient, list[tuple[int, int]]]]:
        """Each recipient with the (section, index) of the records that make it.

        Pairs O, dsn_orig_rcpt and notify_flags records with the next R or D
        as qmgr_message_read() does: a later record of the same kind replaces
        an earlier one, and R, D and / (canceled) end the group. The state
        carries from the envelope into the extracted section, as in qmgr.
        """
        orig: str | None = None
        dsn: str | None = None
        notify: int | None = None
        pending: list[tuple[int, int]] = []
        for sec, records in enumerate((self.envelope, self.extracted)):
            for i, r in enumerate(records):
                t = r.type
                if t == "R" or t == "D":
                    yield (Recipient(_decode(r.data), orig, dsn, notify, t == "D"),
                           pending + [(sec, i)])
                    orig = dsn = notify = None
                    pending = []
                elif t == "/":
                    orig = dsn = notify = None
                    pending = []
                elif t == "O":
                    orig = _decode(r.data)
                    pending.append((sec, i))
                else:
                    if t == "A":
                        # Most A records are about the client, not a recipient.
                        if b"dsn_orig_rcpt" not in r.data and b"notify_flags" not in r.data:
                            continue
                        split = _split_attr(r.data)
                        if split is None:
                            continue
                        name, value = _decode(split[0]), split[1]
                    elif t == "o" or t == "n":
                        name, value = _PSEUDO_NAMES[ord(t)], r.data
                    else:
                        continue
                    if name == "dsn_orig_rcpt":
                        dsn = _decode(value)
                        pending.append((sec, i))
                    elif name == "notify_flags":
                        notify = _notify(value)
                        pending.append((sec, i))

    # -- the message ----------------------------------------------------------------------------
    def message_bytes(self, eol: bytes = b"\r\n") -> bytes:
        """The message: every line followed by eol.

        An empty message (no content lines) is b"", with no line ending.
        """
        if not self.content:
            return b""
        return eol.join(self.content) + eol

    def header_end(self) -> int:
        """Index of the first content line after the primary header section.

        The header section ends at the first empty line, or earlier at the
        first line that is neither a header field ("Name:") nor a
        continuation (leading blank), the way Postfix's header parser ends it.
        """
        for i, line in enumerate(self.content):
            if not line:
                return i
            if line[0] in (0x20, 0x09):
                if i == 0:
                    return 0
                continue
            if not _HEADER_RE.match(line):
                return i
        return len(self.content)

    # -- edits: each returns a new QueueFile ------------------------------------------------------
    def with_headers(self, add: Sequence[tuple[str, str]] = (),
                     replace: Sequence[tuple[str, str]] = (),
                     subject_tag: str | None = None) -> QueueFile:
        """Return a copy with header edits in the primary header section.

        replace: every header of that name (case-insensitive, with its
        continuation lines) is removed, then the new one added. Added headers
        go to the end of the header section, `add` first, then `replace`, in
        the order given. subject_tag prefixes every Subject value once (not
        again if it already starts with the tag); without a Subject header,
        one is added holding the tag. A value may be folded ("a\\r\\n\\tb");
        each continuation line must start with a blank. Raises ValueError for
        a bad field name or a line break that would end the header.
        """
        lines = list(self.content)
        end = self.header_end()
        header, body = lines[:end], lines[end:]
        if end == 0 and body and body[0]:
            # No header section (the text starts with a blank or a non-header
            # line): an empty line keeps the new headers from swallowing it.
            body.insert(0, b"")

        new_lines: list[bytes] = []
        for name, value in list(add) + list(replace):
            new_lines.extend(_header_lines(name, value))
        remove = {_encode(name).lower() for name, _ in replace}
        if remove:
            header = [ln for ln, hname in zip(header, line_names(header), strict=True)
                      if hname not in remove]
        header.extend(new_lines)

        fields = list(self.size_fields)
        non_ascii = any(not ln.isascii() for ln in new_lines)
        if subject_tag is not None:
            header, tagged = _tag_subject(header, subject_tag)
            non_ascii = non_ascii or tagged and not subject_tag.isascii()
        if non_ascii:
            # cleanup_out_header() marks a message with a non-ASCII header so
            # that the SMTP client asks for SMTPUTF8 when it relays it.
            fields += [0] * (_SIZE_FIELDS_WRITTEN - len(fields))
            fields[5] |= _SMTPUTF8_FLAG_HEADER
        # The records as read go along: serialize() uses them only if the
        # lines turn out unchanged.
        return QueueFile(fields, list(self.envelope), header + body, list(self.extracted),
                         self._raw_content)

    def with_message(self, message: bytes) -> QueueFile:
        """Return a copy whose content is `message`, split into lines at CRLF or LF.

        A final line ending ends the last line; it does not start an empty one.
        """
        lines = _EOL_RE.split(message)
        if lines and lines[-1] == b"":
            lines.pop()
        return QueueFile(list(self.size_fields), list(self.envelope), lines,
                         list(self.extracted), self._raw_content)

    def with_recipients(self, keep: Callable[[Recipient], bool]) -> QueueFile:
        """Return a copy with only the recipients for which keep() is true.

        A dropped recipient takes its R or D record and the O, dsn_orig_rcpt and
        notify_flags records that belong to it. The recipient count in the C
        record (field 3) goes down by as many, since qmgr counts it down for
        every recipient record it reads. All other records stay as they are.
        """
        drop: set[tuple[int, int]] = set()
        dropped = 0
        for rcpt, where in self._recipient_groups():
            if not keep(rcpt):
                drop.update(where)
                dropped += 1
        envelope = [r for i, r in enumerate(self.envelope) if (0, i) not in drop]
        extracted = [r for i, r in enumerate(self.extracted) if (1, i) not in drop]
        fields = list(self.size_fields)
        if len(fields) > 2:
            fields[2] = max(0, fields[2] - dropped)
        return QueueFile(fields, envelope, list(self.content), extracted,
                         self._raw_content)

    def with_recipient_added(self, address: str) -> QueueFile:
        """Return a copy with one more recipient: an R record at the end of the envelope.

        The recipient count in the C record (field 3) goes up by one.
        """
        data = _encode(address)
        if not data or b"\n" in data or b"\0" in data:
            raise ValueError(f"{address!r} is not a recipient address")
        fields = list(self.size_fields)
        if len(fields) > 2:
            fields[2] += 1
        return QueueFile(fields, list(self.envelope) + [Record("R", data)],
                         list(self.content), list(self.extracted), self._raw_content)

    def with_attribute(self, name: str, value: str) -> QueueFile:
        """Return a copy whose envelope attribute `name` is `value`.

        The first A record of that name (or its pseudo record, e.g. c for
        create_time) is replaced in place; without one, an A record is added
        at the end of the envelope.
        """
        envelope = list(self.envelope)
        pseudo = {v: k for k, v in _PSEUDO_NAMES.items()}.get(name)
        for i, r in enumerate(envelope):
            split = _split_attr(r.data) if r.type == "A" else None
            if (split is not None and _decode(split[0]) == name) or \
                    (pseudo is not None and r.type == chr(pseudo)):
                envelope[i] = Record(r.type, _encode(value) if r.type != "A"
                                     else _encode(f"{name}={value}"))
                break
        else:
            envelope.append(Record("A", _encode(f"{name}={value}")))
        return QueueFile(list(self.size_fields), envelope, list(self.content),
                         list(self.extracted), self._raw_content)


def _header_lines(name: str, value: str) -> list[bytes]:
    if not _FIELD_NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a header field name")
    if "\0" in value:
        raise ValueError(f"header {name} value contains a NUL byte")
    lines = _EOL_RE.split(_encode(value))
    for cont in lines[1:]:
        if cont[:1] not in (b" ", b"\t") or b"\r" in cont:
            raise ValueError(f"header {name} value has a line break that is not a fold")
    if b"\r" in lines[0]:
        raise ValueError(f"header {name} value contains a carriage return")
    first = _encode(name) + b":" + (b" " + lines[0] if lines[0] else b"")
    return [first] + lines[1:]


def _tag_subject(header: list[bytes], tag: str) -> tuple[list[bytes], bool]:
    """Prefix every Subject value with tag unless it is there already.

    Returns the new header lines and whether any line changed.
    """
    tag_b = _encode(tag.strip())
    if not tag_b:
        return header, False
    out = list(header)
    names = list(line_names(header))
    changed = False
    found = False
    for i, name in enumerate(names):
        if name != b"subject" or header[i][:1] in (b" ", b"\t"):
            continue
        found = True
        # The value as a reader sees it: the first line after the colon, plus
        # its continuation lines, with leading blanks dropped.
        colon = header[i].find(b":")
        value = header[i][colon + 1:]
        j = i + 1
        while j < len(header) and names[j] == b"subject" and header[j][:1] in (b" ", b"\t"):
            value += header[j]
            j += 1
        if value.lstrip(b" \t").startswith(tag_b):
            continue
        first = header[i][colon + 1:].lstrip(b" \t")
        out[i] = header[i][:colon + 1] + b" " + tag_b + (b" " + first if first else b"")
        changed = True
    if not found:
        out.append(b"Subject: " + tag_b)
        changed = True
    return out, changed
