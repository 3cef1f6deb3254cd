"""The smuggling scanner: files that HTML builds in the browser, decoded and scanned.

HTML smuggling hides a file in an HTML attachment (or body) as a base64 or hex
blob, which script turns into a download when the page opens: atob() or a
hex/number array decoder, a Blob, URL.createObjectURL or msSaveOrOpenBlob, an
<a download="invoice.iso">. No MIME parser sees the file, and clamd does not
run script. So every such blob (workers/smuggled.py finds them) is decoded here
and handed to the scanners after this one as a derived part
(workers/derived.py): the filename and filetype rules (with the name the script
gives the download), the archive walk and clamd judge it like an attachment.
HTML files inside archives are searched by the archives scanner.

The technique itself gets `on_smuggling`, "clean" by default: a note in the
verdict, since legitimate pages (exported reports with a "download CSV"
button) build files the same way; what is built is judged on its own.

Bounded: HTML parts up to `max_html_size`, at most `max_blobs` blobs and
`max_decoded_size` decoded bytes per message, each blob at most
`max_blob_size` bytes; what goes past a limit gets `on_limits` (unscannable
by default), so that decoys cannot hide the real blob.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared.contract import Finding
from workers.derived import derived_part, is_derived
from workers.message import ParsedMessage, Part
from workers.scanners.base import Scanner, ScanResult, check_fallback, show_name
from workers.smuggled import HTML_TYPES, download_names, find_blobs, looks_like_html
from workers.strip import locate, pinned

MiB = 2**20


def is_html(part: Part) -> bool:
    if any(t in HTML_TYPES for t in part.declared_types):
        return True
    return any(looks_like_html(n, part.payload) for n in part.filenames) \
        or looks_like_html("", part.payload)


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
            blobs, builds = find_blobs(part.payload, self.options["max_blob_size"])
            names = download_names(part.payload)
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
