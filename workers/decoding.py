"""Transfer encodings, every way a mail client might decode them.

Decoders disagree about broken input, and an attacker picks the input on which
they disagree: base64 with padding in the middle (one decoder stops there,
another reads on), junk lines, lines whose length is not a multiple of four;
quoted-printable with invalid escapes; and encodings MIME does not name but
clients decode anyway (uuencode, yEnc, BinHex 4.0). Each function here yields
the readings of a body lazily, the plainest first, so that a caller can stop
when it has enough and ordinary mail pays for one reading only: a body that
decodes cleanly the strict way has no other reading.

Every function is linear in its input (byte-level work in C, Python loops only
per line or per escape), and no output is larger than `max_out` bytes where an
encoding can expand (BinHex run-length encoding).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator

__all__ = ["base64_readings", "qp_readings", "uu_decode", "uu_blocks", "yenc_decode",
           "yenc_blocks", "binhex_blocks", "lenient_b64decode"]

_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64 = bytes(sorted(set(range(256)) - set(_B64_CHARS)))
_WHITESPACE = b" \t\r\n"
_MAX_PIECES = 1000          # padded pieces decoded one by one; the rest as one piece

Reading = tuple[bytes, str]   # (decoded bytes, what was odd about it; "" if nothing)


def lenient_b64decode(data: bytes) -> bytes:
    """Decode base64, skipping anything outside the alphabet and fixing the padding."""
    clean = data.translate(None, _NOT_B64)
    if len(clean) % 4 == 1:
        clean = clean[:-1]
    return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))


def _b64_line(line: bytes) -> bool:
    """A line a base64 decoder that checks lines would take as data."""
    return bool(line) and not line.translate(None, _B64_CHARS + b"=")


def base64_readings(body: bytes) -> Iterator[Reading]:
    """The readings of a base64 body: strict first, then what lenient decoders make of it."""
    compact = body.translate(None, _WHITESPACE)
    try:
        strict = binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        strict = None
    if strict is not None:
        yield strict, ""
        # Decoders that decode line by line drop the leftover bits of a line whose
        # length is not a multiple of four; only then is there another reading.
        # (Line lengths counted in C: this runs on every base64 attachment.)
        if any(n % 4 for n in set(map(len, body.replace(b"\r", b"").split(b"\n")[:-1]))):
            lines = [line.strip(_WHITESPACE) for line in body.split(b"\n")]
            if any(len(line) % 4 for line in lines[:-1] if line):
                yield b"".join(lenient_b64decode(line) for line in lines if line), \
                    "base64 lines whose length is not a multiple of 4"
        return
    lines = [line.strip(_WHITESPACE) for line in body.split(b"\n")]
    junk = bool(compact.translate(None, _B64_CHARS + b"="))
    why = "base64 with characters outside the alphabet" if junk else "base64 with odd padding"
    # Skip what is not base64 and read on after any padding.
    yield lenient_b64decode(compact), why
    if b"=" in compact:
        # Stop at the first padding.
        yield lenient_b64decode(compact[:compact.find(b"=")]), why
        # Each padded piece a stream of its own (concatenated encodings).
        out = bytearray()
        for n, m in enumerate(re.finditer(rb"[^=]+", compact)):
            if n >= _MAX_PIECES:
                out += lenient_b64decode(compact[m.start():])
                break
            out += lenient_b64decode(m.group())
        yield bytes(out), why
    if junk:
        # Whole lines of junk (a header-like line, a signature) skipped, the rest read.
        good = [line for line in lines if _b64_line(line)]
        yield lenient_b64decode(b"".join(good)), why
        # From the first line that is data to the first that is not.
        run: list[bytes] = []
        for line in lines:
            if _b64_line(line):
                run.append(line)
            elif run and line:
                break
        yield lenient_b64decode(b"".join(run)), why
    if any(len(line) % 4 for line in lines[:-1] if line):
        yield b"".join(lenient_b64decode(line) for line in lines if line), \
            "base64 lines whose length is not a multiple of 4"


_QP_SOFT_BLANKS = re.compile(rb"=[ \t]+\r?(?:\n|\Z)")
# Anchored at the start of a run of blanks: unanchored, a long run not at the end of
# a line is tried from each of its blanks, at a cost of the square of its length.
_QP_TRAILING = re.compile(rb"(?<![ \t])[ \t]+(\r?\n|\Z)")
_QP_INVALID = re.compile(rb"=(?![0-9A-Fa-f]{2}|\r?\n|\Z)")
_QP_INVALID_3 = re.compile(rb"=(?![0-9A-Fa-f]{2}|\r?\n|\Z)[^\r\n]{0,2}")
_QP_JUNK_THEN_HEX = re.compile(rb"=[^0-9A-Fa-f\r\n]([0-9A-Fa-f]{2})")


def qp_readings(body: bytes) -> Iterator[Reading]:
    """The readings of a quoted-printable body: Python's (invalid escapes kept as they
    are, as RFC 2045 advises) first, then those of decoders that do otherwise."""
    yield binascii.a2b_qp(body), ""
    # One search for ordinary mail: "=" and blanks at the end of a line is an
    # invalid escape too.
    if not _QP_INVALID.search(body):
        return
    if _QP_SOFT_BLANKS.search(body):
        # RFC 2045: blanks at the end of a line are to be removed, so "= " ends
        # a soft line break; decoders that do so join the lines.
        yield binascii.a2b_qp(_QP_TRAILING.sub(rb"\1", body)), \
            "quoted-printable soft line break followed by blanks"
    why = "quoted-printable with invalid escapes"
    yield binascii.a2b_qp(_QP_INVALID.sub(b"", body)), why           # "=" dropped
    yield binascii.a2b_qp(_QP_INVALID_3.sub(b"", body)), why         # "=XX" dropped
    yield binascii.a2b_qp(_QP_JUNK_THEN_HEX.sub(rb"=\1", body)), why  # "=W41" -> "A"


# --- uuencode ------------------------------------------------------------------------------

def uu_decode(lines: list[bytes]) -> bytes:
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


# "begin", a mode, a name: on one line. The name is taken greedily to the end of the
# line and stripped in Python: a lazy group followed by optional blanks backtracks
# over a long run of blanks once per blank.
_UU_BEGIN = re.compile(rb"^begin(?:-base64)? {1,8}[0-7]{3,4} {1,8}([^\r\n]*)", re.MULTILINE)
_UU_END = re.compile(rb"^end[ \t]*\r?$", re.MULTILINE)


def uu_blocks(body: bytes, max_blocks: int) -> list[tuple[str, bytes]]:
    """uuencoded files in a body: Outlook and others show them as attachments."""
    if b"begin " not in body:
        return []
    out = []
    for m in _UU_BEGIN.finditer(body):
        name = m.group(1).strip(_WHITESPACE).decode("latin-1")
        if not name:
            continue
        end = _UU_END.search(body, m.end())
        block = body[m.end():end.start() if end else len(body)]
        lines = [line.rstrip(b"\r") for line in block.split(b"\n")]
        if m.group(0).startswith(b"begin-base64"):
            out.append((name, lenient_b64decode(b"".join(lines))))
        else:
            out.append((name, uu_decode(lines)))
        if len(out) >= max_blocks:
            break
    return out


# --- yEnc ----------------------------------------------------------------------------------

_YENC_SHIFT = bytes((i - 42) % 256 for i in range(256))
_YENC_ESCAPE = re.compile(rb"=(.)", re.DOTALL)


def yenc_decode(data: bytes) -> bytes:
    """yEnc data lines (control lines "=y..." already removed): each byte less 42,
    an escaped byte ("=" then the byte plus 64) less 64 more."""
    data = data.replace(b"\r", b"").replace(b"\n", b"")
    data = _YENC_ESCAPE.sub(lambda m: bytes(((m.group(1)[0] - 64) % 256,)), data)
    return data.translate(_YENC_SHIFT)


def _yenc_name(line: bytes) -> str:
    at = line.find(b" name=")
    return line[at + 6:].strip(_WHITESPACE).decode("latin-1") if at >= 0 else ""


def yenc_blocks(body: bytes, max_blocks: int) -> list[tuple[str, bytes]]:
    """Files between "=ybegin" and "=yend" lines (Usenet's yEnc, which some clients
    decode in mail too)."""
    out = []
    pos = body.find(b"=ybegin ")
    while pos >= 0 and len(out) < max_blocks:
        if pos and body[pos - 1:pos] != b"\n":
            pos = body.find(b"=ybegin ", pos + 1)
            continue
        eol = body.find(b"\n", pos)
        eol = len(body) if eol < 0 else eol
        name = _yenc_name(body[pos:eol])
        end = body.find(b"\n=yend", eol)
        stop = len(body) if end < 0 else end
        data = b"\n".join(line for line in body[eol:stop].split(b"\n")
                          if not line.startswith(b"=y"))
        out.append((name, yenc_decode(data)))
        pos = body.find(b"=ybegin ", stop)
    return out


# --- BinHex 4.0 ----------------------------------------------------------------------------

_HQX = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
_HQX_TO_B64 = bytes.maketrans(_HQX, _B64_CHARS)
_NOT_HQX = bytes(sorted(set(range(256)) - set(_HQX)))
_BINHEX_MARK = b"(This file must be converted with BinHex"


def _rle90(data: bytes, max_out: int) -> bytes:
    """BinHex's run-length encoding: 0x90 n repeats the byte before it n times in all
    (0x90 0 is a literal 0x90)."""
    if b"\x90" not in data:
        return data
    out = bytearray()
    pos = 0
    while True:
        at = data.find(b"\x90", pos)
        if at < 0 or at + 1 >= len(data):
            out += data[pos:]
            break
        out += data[pos:at]
        count = data[at + 1]
        if count == 0:
            out.append(0x90)
        elif out:
            out += out[-1:] * (count - 1)
        pos = at + 2
        if len(out) > max_out:
            break
    return bytes(out[:max_out])


def _binhex_decode(text: bytes, max_out: int) -> tuple[str, bytes] | None:
    """(name, data fork) of the BinHex 4.0 text starting at its first ':'."""
    start = text.find(b":")
    if start < 0:
        return None
    end = text.find(b":", start + 1)
    chars = text[start + 1:end if end > 0 else len(text)].translate(None, _NOT_HQX)
    if len(chars) % 4 == 1:
        chars = chars[:-1]
    try:
        packed = binascii.a2b_base64(chars.translate(_HQX_TO_B64) + b"=" * (-len(chars) % 4))
    except binascii.Error:
        return None
    data = _rle90(packed, max_out)
    if not data:
        return None
    n = data[0]
    header = 1 + n + 1 + 4 + 4 + 2
    if len(data) < header + 8:
        return None
    name = data[1:1 + n].decode("mac_roman", "replace")
    size = int.from_bytes(data[header:header + 4], "big")
    fork = data[header + 8 + 2:header + 8 + 2 + size]
    return name, fork


def binhex_blocks(body: bytes, max_out: int, whole: bool = False) -> list[tuple[str, bytes]]:
    """BinHex 4.0 files in a body: after the "(This file must be converted with BinHex
    4.0)" line, or, with `whole` (a part of type application/mac-binhex40), the
    body itself."""
    at = body.find(_BINHEX_MARK)
    if at >= 0:
        nl = body.find(b"\n", at)
        found = _binhex_decode(body[nl + 1 if nl >= 0 else len(body):], max_out)
    elif whole:
        found = _binhex_decode(body, max_out)
    else:
        return []
    return [found] if found else []
