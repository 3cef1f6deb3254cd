"""The archives scanner: list zip, tar, gzip, bzip2 and xz archives, nested too.

Members get the attachments scanner's filename and filetype rules (the same
defaults; this scanner's table takes the same rule keys). Encrypted archives,
whose contents nobody but the recipient can see, get `on_encrypted`; archives
that go past a limit (bombs: too deep, too many members, expanding too far or
too steeply, overlapping zip entries) get `on_limits`; archives that cannot
be read get `on_damaged`.

Nothing is extracted to disk and nothing is decompressed in full without a
cap: a member is sniffed from its first SNIFF_BYTES; only a member that is
itself an archive is read further, and at most `max_nested_size` of it. Zip
sizes are judged from the central directory before anything is inflated;
stream formats count every byte as it comes out. So a bomb costs a few
megabytes of inflating, not gigabytes.

Viruses inside archives are clamd's job: clamd unpacks nested archives itself
(ClamAV's MaxRecursion, 17 levels by default, counts MIME levels too). The
limits here are set inside clamd's, so what clamd would silently skip (it
does not alert on exceeded limits by default) is reported as a limit here
rather than passing as clean.
"""

from __future__ import annotations

import bz2
import io
import itertools
import lzma
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, ClassVar

from shared.contract import Finding
from workers.filetype import ARCHIVE_TYPES, SNIFF_BYTES, sniff
from workers.message import ParsedMessage
from workers.scanners.base import Scanner, check_fallback, show_name
from workers.scanners.filerules import RULE_DEFAULTS, FileRules
from workers.strip import locate, pinned

MiB = 2**20
_RATIO_FLOOR = MiB          # small members may compress steeply (zero padding); ignore them
_STREAM_CHUNK = 16 * 1024   # compressed bytes fed per step: bounds overshoot past a ratio


class _Stop(Exception):
    """A limit is reached; the current archive is not examined further."""


class _Damaged(Exception):
    """An archive (or a member) that cannot be read."""


def archive_kind(data: bytes) -> str | None:
    kind = sniff(data)
    if kind in ARCHIVE_TYPES:
        return kind
    # A zip is read from its end, so anything may precede it (a JPEG, a PDF):
    # every zip reader, and so the recipient, will still find the members.
    if data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557)) >= 0:
        return "zip"
    return None


class ArchivesScanner(Scanner):
    name = "archives"
    defaults: ClassVar[dict[str, Any]] = {
        **RULE_DEFAULTS,
        "max_depth": 5,                     # archives inside archives
        "max_members": 5000,                # over all archives in one message
        "max_expanded_size": 400 * MiB,     # clamd's default MaxScanSize
        "max_nested_size": 32 * MiB,        # an inner archive is held in memory up to this
        "max_ratio": 200,                   # expanded : compressed, per member or stream
        "on_encrypted": "blocked",
        "on_limits": "unscannable",
        "on_damaged": "unscannable",
    }

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.rules = FileRules.from_options(self.name, self.options)
        for key in ("on_encrypted", "on_limits", "on_damaged"):
            check_fallback(self.name, key, self.options[key])

    def scan(self, msg: ParsedMessage) -> list[Finding]:
        walk = _Walk(self.rules, self.options)
        findings: list[Finding] = []
        for part in msg.parts:
            if archive_kind(part.payload) is None:
                continue
            label = show_name(part.filenames[0]) if part.filenames else part.label
            before = len(walk.findings)
            walk.top(part.payload, label, part.filenames[0] if part.filenames else "")
            new = [(a, d) for a, d in walk.findings[before:] if a != "clean"]
            if new:
                # Pinned to the archive's part, so that a `strip` policy can remove it.
                paths = locate(msg.raw, part.payload)
                for verdict, detail in new:
                    findings += pinned(self.finding(verdict, detail), paths)
        return list(dict.fromkeys(findings))


class _Walk:
    """One message's archives: shared budgets, collected findings."""

    def __init__(self, rules: FileRules, options: dict[str, Any]) -> None:
        self.rules = rules
        self.o = options
        self.members = 0
        self.expanded = 0
        self.findings: list[tuple[str, str]] = []

    def top(self, data: bytes, label: str, name: str) -> None:
        try:
            self.archive(data, label, name, 1)
        except _Stop as e:
            self.findings.append((self.o["on_limits"], str(e)))

    # --- budgets ---

    def count(self, nbytes: int, label: str) -> None:
        self.expanded += nbytes
        if self.expanded > self.o["max_expanded_size"]:
            raise _Stop(f"archive expands to more than {self.o['max_expanded_size'] // MiB} MiB: "
                        f"{label}")

    def ratio(self, expanded: int, compressed: int, label: str) -> None:
        if expanded > _RATIO_FLOOR and expanded > self.o["max_ratio"] * max(compressed, 1):
            raise _Stop(f"archive compression ratio above {self.o['max_ratio']}:1 "
                        f"(zip bomb?): {label}")

    def member(self, name: str, label: str) -> None:
        self.members += 1
        if self.members > self.o["max_members"]:
            raise _Stop(f"more than {self.o['max_members']} archive members: {label}")
        rule = self.rules.check_name(name)
        if rule:
            self.findings.append(("blocked", f"{rule}: {show_name(name)} in {label}"))

    # --- dispatch ---

    def archive(self, data: bytes, label: str, name: str, depth: int) -> None:
        kind = archive_kind(data)
        if kind == "zip" and sniff(data) != "zip":
            # Found only by an end-of-directory signature after other data.
            # Any binary file has those four bytes now and then; unless a zip
            # reader can open it, it is no archive, and not a damaged one.
            try:
                zipfile.ZipFile(io.BytesIO(data)).close()
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError,
                    EOFError, OSError):
                return
        try:
            if kind == "zip":
                self.zip(data, label, depth)
            elif kind == "tar":
                self.tar(io.BytesIO(data), label, depth, counted=False)
            elif kind in ("gzip", "bzip2", "xz"):
                self.compressed(data, kind, label, name, depth)
        except _Damaged as e:
            self.findings.append((self.o["on_damaged"], f"damaged archive {label}: {e}"))

    def content(self, head: bytes, read: Callable[[int], bytes], name: str, label: str,
                depth: int) -> None:
        """A member's first bytes: filetype rules, and a nested archive is walked."""
        rule = self.rules.check_type(head)
        if rule:
            self.findings.append(("blocked", f"{rule}: {show_name(name)} in {label}"))
        if archive_kind(head) is None:
            return
        inner = f"{label} > {show_name(name)}"
        if depth >= self.o["max_depth"]:
            raise _Stop(f"archives nested deeper than {self.o['max_depth']} levels: {inner}")
        limit = self.o["max_nested_size"]
        data = head + read(limit + 1 - len(head))
        if len(data) > limit:
            raise _Stop(f"nested archive larger than {limit // MiB} MiB: {inner}")
        self.archive(data, inner, name, depth + 1)

    # --- zip ---

    def zip(self, data: bytes, label: str, depth: int) -> None:
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError,
                EOFError, OSError) as e:
            raise _Damaged(f"{type(e).__name__}: {e}") from None
        with zf:
            infos = zf.infolist()
            if self.members + len(infos) > self.o["max_members"]:
                raise _Stop(f"more than {self.o['max_members']} archive members: {label}")
            self.zip_sizes(infos, label)
            if any(i.flag_bits & 0x1 for i in infos):
                self.findings.append((self.o["on_encrypted"], f"encrypted archive: {label}"))
            for info in infos:
                for name in _zip_names(info, data):
                    self.member(name, label)
                if info.is_dir() or info.flag_bits & 0x1:
                    continue
                try:
                    with zf.open(info) as f:
                        self.content(f.read(SNIFF_BYTES), f.read, info.filename, label, depth)
                except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError,
                        EOFError, OSError, lzma.LZMAError, ValueError) as e:
                    detail = (f"damaged archive member {show_name(info.filename)} in {label}: "
                              f"{type(e).__name__}")
                    self.findings.append((self.o["on_damaged"], detail))

    def zip_sizes(self, infos: list[zipfile.ZipInfo], label: str) -> None:
        """Judge a zip by its directory before inflating anything."""
        for info in infos:
            self.ratio(info.file_size, info.compress_size, f"{show_name(info.filename)} in {label}")
        self.count(sum(i.file_size for i in infos), label)
        # Entries that share compressed data (Fifield's non-recursive bomb)
        # multiply the expansion with no nesting and no steep ratio per entry.
        spans = sorted((i.header_offset, i.compress_size) for i in infos)
        for (start, size), (next_start, _) in itertools.pairwise(spans):
            if next_start < start + 30 + size:
                raise _Stop(f"overlapping zip entries (zip bomb): {label}")

    # --- tar ---

    def tar(self, fileobj: Any, label: str, depth: int, counted: bool) -> None:
        try:
            with tarfile.open(fileobj=fileobj, mode="r|") as tf:
                for ti in tf:
                    self.member(ti.name, label)
                    if not counted:     # a compressed stream counts its own output
                        self.count(ti.size, label)
                    if not ti.isfile():
                        continue
                    f = tf.extractfile(ti)
                    if f is not None:
                        self.content(f.read(SNIFF_BYTES), f.read, ti.name, label, depth)
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as e:
            raise _Damaged(f"{type(e).__name__}: {e}") from None

    # --- gzip, bzip2, xz ---

    def compressed(self, data: bytes, kind: str, label: str, name: str, depth: int) -> None:
        stream = _Stream(data, kind, self, label)
        inner = _gzip_name(data) if kind == "gzip" else ""
        inner = inner or _strip_suffix(name)
        if inner:
            self.member(inner, label)
        try:
            head = stream.read(SNIFF_BYTES)
            if sniff(head) == "tar":
                self.tar(_Prepended(head, stream), label, depth, counted=True)
            else:
                self.content(head, stream.read, inner or "(compressed data)", label, depth)
            # Read to the end, so that a bomb shows as one whatever it contains.
            while stream.read(MiB):
                pass
        except (zlib.error, lzma.LZMAError, OSError, EOFError) as e:
            raise _Damaged(f"{type(e).__name__}: {e}") from None


def _zip_names(info: zipfile.ZipInfo, data: bytes) -> list[str]:
    """The central directory's name, the local header's, and the Info-ZIP Unicode
    path: different unzip programs show different ones."""
    names = [info.filename]
    extra = info.extra
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        if tag == 0x7075 and size >= 5:
            names.append(extra[pos + 9:pos + 4 + size].decode("utf-8", "replace"))
        pos += 4 + size
    off = info.header_offset
    if data[off:off + 4] == b"PK\x03\x04" and off + 30 <= len(data):
        flags, = struct.unpack_from("<H", data, off + 6)
        length, = struct.unpack_from("<H", data, off + 26)
        raw = data[off + 30:off + 30 + length]
        names.append(raw.decode("utf-8" if flags & 0x800 else "cp437", "replace"))
    return list(dict.fromkeys(n for n in names if n))


def _gzip_name(data: bytes) -> str:
    """The original filename a gzip header may carry (FNAME)."""
    if len(data) < 10 or not data[3] & 0x08:
        return ""
    pos = 10
    if data[3] & 0x04:      # FEXTRA comes first
        if len(data) < 12:
            return ""
        pos += 2 + struct.unpack_from("<H", data, 10)[0]
    end = data.find(b"\0", pos, pos + 1024)
    return data[pos:end].decode("latin-1") if end > pos else ""


def _strip_suffix(name: str) -> str:
    lower = name.lower()
    for suffix, replacement in ((".tgz", ".tar"), (".gz", ""), (".bz2", ""), (".xz", "")):
        if lower.endswith(suffix):
            return name[: -len(suffix)] + replacement
    return ""


class _Stream:
    """The decompressed bytes of a gzip, bzip2 or xz stream, read with caps.

    Every byte that comes out counts against the message's expansion budget,
    and the ratio of bytes out to bytes in is watched as it goes, so a bomb is
    stopped after a few megabytes. Concatenated streams (legal in all three
    formats) are followed.
    """

    def __init__(self, data: bytes, kind: str, walk: _Walk, label: str) -> None:
        self.data = memoryview(data)
        self.kind = kind
        self.walk = walk
        self.label = label
        self.pos = 0            # position in the current stream's compressed bytes
        self.fed = 0            # compressed bytes handed to the decompressor, all streams
        self.out = 0
        self.tail = b""         # zlib's unconsumed input
        self.done = False
        self.d = self._decompressor()

    def _decompressor(self) -> Any:
        if self.kind == "gzip":
            return zlib.decompressobj(wbits=31)
        if self.kind == "bzip2":
            return bz2.BZ2Decompressor()
        return lzma.LZMADecompressor()

    def _input(self) -> bytes:
        chunk = bytes(self.data[self.pos:self.pos + _STREAM_CHUNK])
        self.pos += len(chunk)
        self.fed += len(chunk)
        return chunk

    def _step(self, want: int) -> bytes:
        d = self.d
        if self.kind == "gzip":
            given = self.tail or self._input()
            out = d.decompress(given, want)
            self.tail = d.unconsumed_tail
        else:
            given = self._input() if d.needs_input else b""
            out = d.decompress(given, want)
        if d.eof:
            rest = d.unused_data + bytes(self.data[self.pos:])
            if rest and sniff(rest) == self.kind:        # another stream follows
                self.data, self.pos, self.tail = memoryview(rest), 0, b""
                self.d = self._decompressor()
            else:
                self.done = True
        elif not given and not out:
            self.done = True        # truncated: take what there is
        self.out += len(out)
        self.walk.count(len(out), self.label)
        self.walk.ratio(self.out, self.fed, self.label)
        return out

    def read(self, n: int = -1) -> bytes:
        want = n if n is not None and n >= 0 else 1 << 62
        parts = []
        got = 0
        while got < want and not self.done:
            chunk = self._step(min(want - got, MiB))
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)


class _Prepended:
    """A readable that gives `head` first, then the rest of `stream`."""

    def __init__(self, head: bytes, stream: _Stream) -> None:
        self.head = head
        self.stream = stream

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                out, self.head = self.head + self.stream.read(), b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            if len(out) < n:
                out += self.stream.read(n - len(out))
            return out
        return self.stream.read(n)
