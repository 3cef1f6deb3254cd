"""Parameters of a structured header field (Content-Type, Content-Disposition), every
way a mail client might read them.

Clients disagree about broken parameter syntax, and an attacker picks the syntax
on which they disagree: a scanner must judge every name any client might show.
So `Params.parse` keeps, for each parameter, every plausible value:

- comments: RFC 822 comments removed (`filena()me=`, `file.z()ip` -> "file.zip"),
  and the text as written, for clients that know no comments;
- quoted values: with backslash escapes honoured, and with backslashes taken
  literally (the value then ends at the next quote);
- single quotes around a value: stripped, and kept;
- unquoted values: up to `;` or white space (RFC 2045 token), up to `;` (spaces
  allowed, as most clients do), with backslash escapes (`a\\;b.zip` -> "a;b.zip"),
  and up to the next `; name=` (clients that read on over a stray `;`);
- RFC 2231 continuations joined in index order and as written (a client that
  joins `filename*1=...; filename*0=...` as written shows another name);
- RFC 2047 encoded words decoded wherever they stand (quoted or not), adjacent
  words of one charset joined before decoding (mailers cut multibyte characters
  across words), any charset Python knows but cannot decode falling back to
  UTF-8 and Windows-1252 rather than failing.

Linear in the length of the field: no regular expression here can backtrack
over a long run of one character class, and at most MAX_PARAMS "=" signs are
read per field (a limit no real mailer comes near; more is reported through
`Params.too_many`).
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["MAX_PARAMS", "Params", "decode_words", "charset_decode", "unfold"]

MAX_PARAMS = 100
_MAX_NAME = 128             # characters of a parameter name read back from its "="
_MAX_READINGS = 8           # values kept per parameter
_WS = " \t\r\n"
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                         "!#$%&'+.^_`{|}~-*")
_SECTION = re.compile(r"(?P<base>[^*]+)(?:\*(?P<index>[0-9]{1,4}))?(?P<ext>\*)?")


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def unfold(value: str) -> str:
    """A header value with its folds undone (the line break goes, the blank stays)."""
    if "\n" not in value and "\r" not in value:
        return value
    return value.replace("\r\n", "").replace("\n", "").replace("\r", "")


# --- charsets and encoded words ----------------------------------------------------------

def _text_codec(name: str) -> str | None:
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # base64, hex, zlib, rot13 ... are codecs too, but not text encodings; "undefined",
    # "idna" and "punycode" fail even with errors="replace".
    if not getattr(info, "_is_text_encoding", True) or info.name in (
            "undefined", "idna", "punycode", "raw-unicode-escape", "unicode-escape"):
        return None
    return info.name


def charset_decode(data: bytes, charset: str) -> list[str]:
    """`data` as text of `charset`, every way a client might show it.

    One reading for a charset Python decodes; for one it cannot (unknown, or not
    a text encoding), UTF-8 and Windows-1252, which is what clients fall back to.
    UTF-16 without a byte order mark is read both ways round.
    """
    charset = charset.split("*", 1)[0].strip(_WS + "\"'").lower()       # RFC 2231 language
    codec = _text_codec(charset) if charset else "utf-8"
    out: list[str] = []
    if codec in ("utf-16", "utf-32") and data[:2] not in (b"\xff\xfe", b"\xfe\xff"):
        codecs_to_try = [codec + "-le", codec + "-be"]
    elif codec:
        codecs_to_try = [codec]
    else:
        codecs_to_try = ["utf-8", "cp1252"]
    for c in codecs_to_try:
        try:
            text = data.decode(c, "replace")
        except (UnicodeError, LookupError, TypeError, ValueError):   # fails even so
            continue
        out.append(text.lstrip("\ufeff"))
    if not out:
        out = [data.decode("utf-8", "replace"), data.decode("cp1252", "replace")]
    return _unique(out) or [""]


_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,64})\?([bBqQ])\?([^?\s]*)\?=", re.ASCII)
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def _b64(text: str) -> bytes:
    clean = _B64_JUNK.sub(b"", text.encode("ascii", "replace"))
    clean = clean[:len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
    return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))


def _word_bytes(kind: str, text: str) -> bytes:
    if kind in "bB":
        return _b64(text)
    return binascii.a2b_qp(text.replace("_", " ").encode("ascii", "replace"))


def decode_words(value: str) -> list[str]:
    """RFC 2047 encoded words decoded wherever they stand, every way a client might.

    Adjacent words (only white space between them) of one charset are joined as
    bytes before decoding: mailers cut a multibyte character across two words.
    Returns [value] when there are no encoded words.
    """
    if "=?" not in value:
        return [value]
    value = unfold(value)
    # Pieces: literal text, or (charset, bytes) of a run of adjacent words.
    pieces: list[str | tuple[str, bytes]] = []
    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        between = value[pos:m.start()]
        charset = m.group(1).split("*", 1)[0].lower()
        data = _word_bytes(m.group(2), m.group(3))
        last = pieces[-1] if pieces else None
        if isinstance(last, tuple) and between.strip(_WS) == "" and last[0] == charset:
            pieces[-1] = (charset, last[1] + data)
        else:
            if between and not (isinstance(last, tuple) and between.strip(_WS) == ""):
                pieces.append(between)
            pieces.append((charset, data))
        pos = m.end()
    if value[pos:]:
        pieces.append(value[pos:])
    readings = [""]
    for piece in pieces:
        options = [piece] if isinstance(piece, str) else charset_decode(piece[1], piece[0])
        readings = [r + o for r in readings for o in options][:_MAX_READINGS]
    return _unique(readings)


def _eight_bit_readings(value: str) -> list[str]:
    """A value with raw 8-bit bytes (held as Latin-1) or raw ISO-2022-JP escapes, as
    clients show it: UTF-8 if it is valid UTF-8, else Windows-1252."""
    if "\x1b" in value:
        try:
            return [value.encode("latin-1").decode("iso-2022-jp")]
        except (UnicodeError, LookupError):
            pass
    if value.isascii():
        return [value]
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        return [value]
    try:
        return [raw.decode("utf-8")]
    except UnicodeDecodeError:
        return [raw.decode("cp1252", "replace")]


def display_names(value: str) -> list[str]:
    """A raw parameter value as the names a client might show (8-bit, encoded words)."""
    out = []
    for v in _eight_bit_readings(unfold(value)):
        out += decode_words(v) if "=?" in v else [v]
    return _unique(out)


# --- comments ----------------------------------------------------------------------------------

def _without_comments(text: str) -> str:
    """`text` with RFC 822 comments (nested, outside quoted strings) removed."""
    out = []
    depth = 0
    quoted = False
    i = 0
    n = len(text)
    while i < n:
        # Copy runs of ordinary characters in one step: linear, and fast.
        j = i
        while j < n and text[j] not in '()"\\':
            j += 1
        if depth == 0:
            out.append(text[i:j])
        if j >= n:
            break
        c = text[j]
        if c == "\\":
            if depth == 0:
                out.append(text[j:j + 2])
            i = j + 2
            continue
        if quoted:
            if depth == 0:
                out.append(c)
            quoted = c != '"'
        elif c == '"' and depth == 0:
            out.append(c)
            quoted = True
        elif c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(c)
        i = j + 1
    return "".join(out)


# --- parameters ----------------------------------------------------------------------------------

def _quoted(text: str, start: int) -> list[str]:
    """Readings of the quoted string opening at text[start] == '"'."""
    out = []
    # Backslash escapes honoured: up to the first unescaped quote.
    i = start + 1
    buf = []
    while True:
        j = i
        while j < len(text) and text[j] not in '"\\':
            j += 1
        buf.append(text[i:j])
        if j >= len(text) or text[j] == '"':
            break
        buf.append(text[j + 1:j + 2])
        i = j + 2
    out.append("".join(buf))
    # Backslashes literal: up to the next quote.
    end = text.find('"', start + 1)
    out.append(text[start + 1:end if end >= 0 else len(text)])
    return out


def _unquoted(text: str, start: int, stop: int) -> list[str]:
    """Readings of an unquoted value at text[start:], the next parameter at `stop`."""
    out = []
    semi = text.find(";", start, stop)
    upto_semi = text[start:semi if semi >= 0 else stop]
    token_end = start
    while token_end < len(upto_semi) + start and upto_semi[token_end - start] not in _WS:
        token_end += 1
    out.append(text[start:token_end])                   # RFC 2045 token
    out.append(upto_semi.strip(_WS))                    # spaces allowed
    rest = text[start:stop].rstrip(_WS + ";").strip(_WS)
    if "\\" in rest:                                    # backslash-escaped ";" and quotes
        escaped = re.sub(r"\\(.)", r"\1", re.split(r"(?<!\\);", rest, maxsplit=1)[0])
        out.append(escaped.strip(_WS))
    out.append(rest)                                    # on to the next "name="
    if len(upto_semi) >= 2 and upto_semi[0] == "'":
        inner = upto_semi.strip(_WS)
        out.append(inner[1:-1] if inner.endswith("'") else inner[1:])
    return out


@dataclass
class Params:
    """Every (name, value) reading of a header field's parameters, duplicates kept."""

    pairs: list[tuple[str, str]] = field(default_factory=list)     # lowercased names
    order: list[tuple[str, str]] = field(default_factory=list)     # strict reading, in order
    too_many: bool = False

    @classmethod
    def parse(cls, text: str) -> Params:
        out = cls()
        variants = [text]
        if "(" in text:
            plain = _without_comments(text)
            if plain != text:
                variants.append(plain)
        for n, variant in enumerate(variants):
            out._read(variant, strict=n == len(variants) - 1)
        return out

    def _read(self, text: str, strict: bool) -> None:
        equals = []
        pos = text.find("=")
        quoted_until = -1
        while pos >= 0:
            if len(equals) >= MAX_PARAMS:
                self.too_many = True
                break
            if pos > quoted_until:
                equals.append(pos)
            # Skip over a quoted value, so that "=" inside it starts no parameter.
            after = pos + 1
            while after < len(text) and text[after] in _WS:
                after += 1
            if after < len(text) and text[after] == '"':
                close = after + 1
                while True:
                    close = text.find('"', close)
                    if close < 0 or text[close - 1] != "\\":
                        break
                    close += 1
                quoted_until = close if close >= 0 else len(text)
            pos = text.find("=", max(pos + 1, quoted_until + 1))
        names: list[tuple[int, str]] = []
        for eq in equals:
            j = eq
            while j > 0 and text[j - 1] in _WS and eq - j < _MAX_NAME:
                j -= 1
            k = j
            while k > 0 and text[k - 1] in _TOKEN_CHARS and j - k < _MAX_NAME:
                k -= 1
            names.append((k, text[k:j].lower()))
        for i, (eq, (_, name)) in enumerate(zip(equals, names, strict=True)):
            if not name:
                continue
            stop = names[i + 1][0] if i + 1 < len(names) else len(text)
            start = eq + 1
            while start < len(text) and text[start] in _WS:
                start += 1
            if start < len(text) and text[start] == '"':
                values = _quoted(text, start)
            else:
                values = _unquoted(text, start, stop)
            values = _unique(v.strip(_WS) for v in values)[:_MAX_READINGS]
            for v in values:
                self.pairs.append((name, v))
            if strict and values:
                self.order.append((name, values[0]))

    def values(self, name: str) -> list[str]:
        """Every name a client might show for parameter `name` (decoded, unfolded)."""
        plain = [v for k, v in self.pairs if k == name]
        sections: dict[int, list[tuple[str, bool]]] = {}
        written: list[tuple[str, bool]] = []
        for key, value in self.pairs:
            m = _SECTION.fullmatch(key)
            if m and m.group("base") == name and (m.group("index") or m.group("ext")):
                index = int(m.group("index") or 0)
                extended = bool(m.group("ext"))
                sections.setdefault(index, []).append((value, extended))
        for key, value in self.order:
            m = _SECTION.fullmatch(key)
            if m and m.group("base") == name and m.group("index"):
                written.append((value, bool(m.group("ext"))))
        out: list[str] = []
        for v in plain:
            out += display_names(v)
        if sections:
            out += _rfc2231(sections, written)
        return _unique(out)

    def first(self, name: str) -> str | None:
        """The strict reading's first value of `name`, undecoded."""
        return next((v for k, v in self.order if k == name), None)


def _rfc2231(sections: dict[int, list[tuple[str, bool]]],
             written: list[tuple[str, bool]]) -> list[str]:
    """RFC 2231 continuations joined in index order (a duplicated section gives one
    reading per copy) and in the order they are written."""
    variants: list[list[tuple[str, bool]]] = [[]]
    for index in sorted(sections)[:64]:
        variants = [v + [c] for v in variants for c in sections[index][:2]][:4]
    if len(written) > 1 and written not in variants:
        variants.append(written[:64])
    out: list[str] = []
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
        for text in charset_decode(data, charset or "utf-8"):
            out += decode_words(text) if "=?" in text else [text]
    return out


_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")


def _percent_decode(value: str) -> bytes:
    raw = value.encode("latin-1", "replace")
    return _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
