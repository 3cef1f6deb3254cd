"""The smuggling scanner: files that HTML builds in the browser, decoded and scanned.

HTML smuggling hides a file in an HTML attachment (or body) as a base64 or hex
blob, which script turns into a download when the page opens: atob() or a
hex/number array decoder, a Blob, URL.createObjectURL or msSaveOrOpenBlob, an
<a download="invoice.iso">. No MIME parser sees the file, and clamd does not
run script. So every such blob is decoded here and handed to the scanners after
this one as a derived part (workers/derived.py): the filename and filetype
rules (with the name the script gives the download), the archive walk and
clamd judge it like an attachment. data: URIs are decoded too, except images
(inline pictures are everyday HTML mail and clamd reads data: URIs itself).

Script literals are looked at only in HTML that builds files (it names one of
Blob, atob, msSaveOrOpenBlob, createObjectURL, fromCharCode, Uint8Array): a
newsletter's tracking tokens are not decoded. Adjacent literals joined by `+`
or listed in an array are joined first, as the script would.

The technique itself gets `on_smuggling`, "clean" by default: a note in the
verdict, since legitimate pages (exported reports with a "download CSV"
button) build files the same way; what is built is judged on its own.

Bounded: HTML parts up to `max_html_size`, at most `max_blobs` blobs and
`max_decoded_size` decoded bytes per message, each blob at most
`max_blob_size` bytes; what goes past a limit gets `on_limits` (unscannable
by default), so that decoys cannot hide the real blob. The patterns are
linear (character classes without nested repetition).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from typing import Any, ClassVar

from shared.contract import Finding
from workers import budget
from workers.derived import derived_part, is_derived
from workers.message import ParsedMessage, Part
from workers.scanners.base import Scanner, ScanResult, check_fallback, show_name
from workers.strip import locate, pinned

MiB = 2**20
_MIN_BLOB = 32          # decoded bytes: shorter blobs are no file worth a stream

_HTML_NAMES = (".htm", ".html", ".xhtml", ".shtml", ".svg", ".hta")
_HTML_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml")
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


def is_html(part: Part) -> bool:
    if any(t in _HTML_TYPES for t in part.declared_types):
        return True
    if any(n.lower().rstrip(". ").endswith(_HTML_NAMES) for n in part.filenames):
        return True
    head = part.payload[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<svg", b"<script"))


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


class SmugglingScanner(Scanner):
    name = "smuggling"
    defaults: ClassVar[dict[str, Any]] = {
        "on_smuggling": "clean",        # HTML that builds a file in script (a note)
        "max_html_size": 32 * MiB,      # larger HTML parts are not searched
        "max_blobs": 32,                # decoded blobs per message
        "max_blob_size": 32 * MiB,      # decoded bytes per blob; longer ones are cut
        "max_decoded_size": 64 * MiB,   # decoded bytes per message, all blobs together
        "on_limits": "unscannable",     # past max_html_size, max_blobs or max_decoded_size
    }

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        for key in ("on_smuggling", "on_limits"):
            check_fallback(self.name, key, self.options[key])

    def scan(self, msg: ParsedMessage) -> list[Finding]:
        return self.run_on(msg).findings

    def run(self, msg: ParsedMessage, request: Any) -> ScanResult:
        return self.run_on(msg)

    def run_on(self, msg: ParsedMessage) -> ScanResult:
        findings: list[Finding] = []
        found: list[Part] = []
        decoded = 0
        limits: list[str] = []      # what went unsearched: a decoy blob must not hide the rest
        for part in msg.parts:
            if is_derived(part) or not is_html(part):
                continue
            label = show_name(part.filenames[0]) if part.filenames else part.label
            if len(part.payload) > self.options["max_html_size"]:
                limits.append(f"HTML larger than {self.options['max_html_size'] // MiB} MiB "
                              f"not searched for smuggled files: {label}")
                continue
            blobs, builds = self.blobs(part.payload)
            names = tuple(dict.fromkeys(
                (m.group(1) or m.group(2)).decode("utf-8", "replace")
                for m in _DOWNLOAD.finditer(part.payload)))[:4]
            guessed = len(blobs) > 1
            for how, data in blobs:
                decoded += len(data)
                if len(found) >= self.options["max_blobs"] \
                        or decoded > self.options["max_decoded_size"]:
                    limits.append(f"more than {self.options['max_blobs']} blobs or "
                                  f"{self.options['max_decoded_size'] // MiB} MiB decoded "
                                  f"from HTML: {label}")
                    break
                found.append(derived_part(part, f"blob{len(found) + 1}", data, names,
                                          f"{how} in HTML {label}", guessed))
            if builds and blobs:
                named = f" as {', '.join(show_name(n) for n in names)}" if names else ""
                detail = (f"HTML builds a file in script{named}: {label} "
                          f"({len(blobs)} blob{'s' if len(blobs) > 1 else ''} decoded)")
                paths = locate(msg.raw, part.payload)
                findings += pinned(self.finding(self.options["on_smuggling"], detail), paths)
        findings += [self.finding(self.options["on_limits"], d) for d in dict.fromkeys(limits)]
        return ScanResult(findings, derived=found)

    def blobs(self, html: bytes) -> tuple[list[tuple[str, bytes]], bool]:
        """(how, bytes) of every blob worth scanning; and whether script builds a file."""
        cap = self.options["max_blob_size"]
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
