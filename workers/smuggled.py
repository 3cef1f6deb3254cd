"""Files that HTML builds in the browser: the blobs a page's script decodes.

HTML smuggling hides a file in a page as a base64 or hex blob, which script
turns into a download when the page opens: atob() or a hex/number array
decoder, a Blob, URL.createObjectURL or msSaveOrOpenBlob, an <a download>.
`find_blobs` decodes every such blob, and every data: URI that is not an
image; `download_names` lists the names the page gives its downloads.

Script literals are decoded only in HTML that builds files (it names one of
Blob, atob, msSaveOrOpenBlob, createObjectURL, fromCharCode, Uint8Array): a
newsletter's tracking tokens are not decoded. Adjacent literals joined by `+`
or listed in an array are joined first, as the script would, and all pieces
joined in order are tried too. The patterns are linear (character classes
without nested repetition, bounded repeats).

Used by the smuggling scanner (HTML parts) and the archives scanner (HTML
files in archives).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse

from workers import budget

_MIN_BLOB = 32          # decoded bytes: shorter blobs are no file worth a stream

_HTML_NAMES = (".htm", ".html", ".xhtml", ".shtml", ".svg", ".hta")
HTML_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml")
_BUILDS = re.compile(rb"Blob|atob|msSaveOrOpenBlob|msSaveBlob|createObjectURL|fromCharCode|"
                     rb"Uint8Array")
_LITERAL = re.compile(rb"""(["'`])([A-Za-z0-9+/=_-]{16,})\1""")
_JOINER = re.compile(rb"[\s+,\[\]()]*")             # between pieces of one blob
_NUMBERS = re.compile(rb"\[\s*(?:\d{1,3}\s*,\s*){31,}\d{1,3}\s*\]")
# Each piece bounded and unambiguous: a long run without the closing "," costs its length.
_DATA_URI = re.compile(rb"data:([\w.+-]{0,100}(?:/[\w.+-]{0,100})?)"
                       rb"((?:;[\w.+-]{1,100}(?:=[\w.+-]{0,200})?){0,10}),", re.I)
_URI_BODY = re.compile(rb"[A-Za-z0-9+/=%_.~!$&'()*,;:@-]*")
_DOWNLOAD = re.compile(rb"""download\s*=\s*["']([^"'<>\r\n]{1,200})["']|"""
                       rb"""(?:msSaveOrOpenBlob|msSaveBlob)\s*\([^,()]{1,200},\s*["']"""
                       rb"""([^"'<>\r\n]{1,200})["']""", re.I)
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM", b"<svg", b"<?xml",
                b"wOFF", b"wOF2", b"\x00\x01\x00\x00")


def _b64(text: bytes) -> bytes | None:
    text = re.sub(rb"\s+", b"", text).rstrip(b"=")
    if b"-" in text or b"_" in text:
        text = text.replace(b"-", b"+").replace(b"_", b"/")
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_blob(text: bytes) -> bytes | None:
    """A literal's bytes: hex if it is all hex digits, else base64."""
    if len(text) % 2 == 0 and re.fullmatch(rb"[0-9a-fA-F]+", text):
        return bytes.fromhex(text.decode())
    return _b64(text)




def looks_like_html(name: str, head: bytes) -> bool:
    """A file a browser would open as a page, by its name or its first bytes."""
    if name.lower().rstrip(". ").endswith(_HTML_NAMES):
        return True
    return head[:512].lstrip().lower().startswith(
        (b"<!doctype html", b"<html", b"<svg", b"<script"))


def download_names(html: bytes) -> tuple[str, ...]:
    """The names the page gives the files it builds (at most four)."""
    return tuple(dict.fromkeys(
        (m.group(1) or m.group(2)).decode("utf-8", "replace")
        for m in _DOWNLOAD.finditer(html)))[:4]


def find_blobs(html: bytes, cap: int) -> tuple[list[tuple[str, bytes]], bool]:
    """(how, bytes) of every blob worth scanning, each cut at `cap` bytes; and
    whether script in the page builds a file."""
    out: list[tuple[str, bytes]] = []
    for m in _DATA_URI.finditer(html):
        body = _URI_BODY.match(html, m.end())
        raw = body.group() if body else b""
        params = m.group(2).lower()
        data = _b64(raw) if b";base64" in params else urllib.parse.unquote_to_bytes(raw)
        if data and len(data) >= _MIN_BLOB and not data.startswith(_IMAGE_MAGIC):
            out.append(("a data: URI", data[:cap]))
    builds = _BUILDS.search(html) is not None
    if builds:
        runs = _literal_runs(html)
        # Pieces kept apart by other code (var x = "..."; var y = "..."; atob(x + y))
        # are tried joined too, in the order they appear.
        if len(runs) > 1:
            runs.append(b"".join(runs))
        for run in runs:
            budget.check()
            data = decode_blob(run[:2 * cap + 16])
            if data and len(data) >= _MIN_BLOB:
                out.append(("a blob decoded from script", data[:cap]))
        for m in _NUMBERS.finditer(html):
            numbers = [int(n) for n in re.findall(rb"\d+", m.group())]
            if all(n < 256 for n in numbers):
                out.append(("a byte array in script", bytes(numbers)[:cap]))
    # The same blob twice (a fallback path in the script) is one file.
    unique = {data: how for how, data in reversed(out)}
    return [(how, data) for data, how in reversed(unique.items())], builds


def _literal_runs(html: bytes) -> list[bytes]:
    """Long base64/hex literals, with those joined by + or listed together merged."""
    runs: list[bytes] = []
    pieces: list[bytes] = []
    last_end = -1
    for m in _LITERAL.finditer(html):
        gap = html[last_end:m.start()] if last_end >= 0 else b"x"
        if pieces and _JOINER.fullmatch(gap) is None:
            runs.append(b"".join(pieces))
            pieces = []
        pieces.append(m.group(2))
        last_end = m.end()
    if pieces:
        runs.append(b"".join(pieces))
    return [r for r in runs if len(r) >= 40]
