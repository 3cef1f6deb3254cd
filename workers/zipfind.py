"""Every zip archive in some bytes, not only the one a zip reader finds.

A zip is read from its end: the last end-of-central-directory record (EOCD)
names a central directory, which names the members. Two zips written one
after the other are therefore one file that zip readers disagree about:
Python, Windows Explorer and most scanners read the last directory and never
see the first archive's members; 7-Zip and others that read from the start
show the first. Entries with a local header that no directory lists (a zip
whose directory was cut off, put in front of another) are seen only by
readers that walk local headers.

`find` returns every archive whose EOCD opens as a zip, and every local entry
that none of them lists, so that a scanner can judge all of them. Nested zips
stored uncompressed inside a member have their own EOCD and local headers in
the outer bytes; those lie inside a member's data and are left to the walk
into that member, not counted as concatenation.

Bounded: at most `max_records` EOCD candidates and `max_locals` local header
candidates are examined; beyond that the bytes are reported as over a limit.
Nothing is copied: archives are opened through a read-only window on the
bytes.
"""

from __future__ import annotations

import bisect
import io
import itertools
import struct
import zipfile
from dataclasses import dataclass, field

EOCD = b"PK\x05\x06"
LOCAL = b"PK\x03\x04"
_EOCD_LEN = 22
_LOCAL_LEN = 30
# Compression methods a local entry may plausibly use (stored, deflate, deflate64,
# bzip2, LZMA, zstd, xz, jpeg, WavPack, PPMd, AES); anything else is not a header.
_METHODS = frozenset({0, 8, 9, 12, 14, 93, 95, 96, 97, 98, 99})

ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError,
              EOFError, OSError, struct.error, UnicodeDecodeError)


class TooMany(Exception):
    """More EOCD or local header candidates than the limits allow."""


class Window(io.RawIOBase):
    """A read-only, seekable file over data[:end], without copying."""

    def __init__(self, data: bytes | memoryview, end: int) -> None:
        super().__init__()
        self.view = memoryview(data)[:end]
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: len(self.view)}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, n: int | None = -1) -> bytes:
        end = len(self.view) if n is None or n < 0 else min(len(self.view), self.pos + n)
        out = bytes(self.view[self.pos:end])
        self.pos = max(self.pos, end)
        return out

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self.read(len(b))
        b[:len(chunk)] = chunk
        return len(chunk)


@dataclass
class Archive:
    """One zip found in the bytes: its directory ends at `end`."""

    zf: zipfile.ZipFile
    base: int               # where the archive's offset 0 is in the bytes
    start: int              # its first local header (or base, for an empty archive)
    end: int                # just after its EOCD record and comment
    spans: list[tuple[int, int]] = field(default_factory=list)   # members' local entries

    def piece(self, data: bytes) -> bytes:
        """The archive alone, offsets intact: what a reader of just this zip gets."""
        return data[self.base:self.end]


@dataclass(frozen=True)
class LocalEntry:
    """A local header no central directory lists."""

    offset: int
    name: str
    flags: int
    method: int
    crc: int
    compressed: bytes | None    # None when the size is not in the header (data descriptor)
    size: int


@dataclass
class Layout:
    archives: list[Archive]     # in the order of their EOCDs; the last is what Python reads
    orphans: list[LocalEntry]

    @property
    def prefix(self) -> int:
        """Bytes before the first archive's first local header (or first orphan)."""
        starts = [a.start for a in self.archives] + [o.offset for o in self.orphans]
        return min(starts) if starts else 0

    @property
    def concatenated(self) -> bool:
        return len(self.archives) + (1 if self.orphans else 0) > 1

    def close(self) -> None:
        for a in self.archives:
            a.zf.close()


def _positions(data: bytes, sig: bytes, limit: int) -> list[int]:
    out = []
    pos = data.find(sig)
    while pos >= 0:
        out.append(pos)
        if len(out) > limit:
            what = "end-of-directory records" if sig == EOCD else "local headers"
            raise TooMany(f"more than {limit} zip {what}")
        pos = data.find(sig, pos + 1)
    return out


def _local_span(data: bytes, offset: int, csize: int) -> tuple[int, int]:
    if data[offset:offset + 4] != LOCAL or offset + _LOCAL_LEN > len(data):
        return (offset, offset + _LOCAL_LEN)
    nlen, xlen = struct.unpack_from("<HH", data, offset + 26)
    return (offset, offset + _LOCAL_LEN + nlen + xlen + csize)


def _open(data: bytes, pos: int) -> Archive | None:
    """The zip whose EOCD is at `pos`, or None if none opens there."""
    if pos + _EOCD_LEN > len(data):
        return None
    cd_size, cd_offset, comment_len = struct.unpack_from("<IIH", data, pos + 12)
    end = min(len(data), pos + _EOCD_LEN + comment_len)
    try:
        zf = zipfile.ZipFile(Window(data, end))
    except ZIP_ERRORS:
        return None
    infos = zf.infolist()
    if cd_offset != 0xFFFFFFFF:
        base = pos - cd_size - cd_offset
    else:       # zip64: the record that has the offset is elsewhere; the members tell
        base = min((i.header_offset for i in infos), default=pos)
    if base < 0:
        zf.close()
        return None
    spans = [_local_span(data, i.header_offset, i.compress_size) for i in infos]
    start = min((s for s, _ in spans), default=base)
    return Archive(zf=zf, base=base, start=start, end=end, spans=sorted(spans))


class _Spans:
    """(start, end) ranges, asked "is this position strictly inside one?" in log time."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int]] = []
        self.starts: list[int] = []
        self.reach: list[int] = []      # the furthest end of any range starting up to here

    def add(self, spans: list[tuple[int, int]]) -> None:
        self.items = sorted(self.items + spans)
        self.starts = [s for s, _ in self.items]
        self.reach = list(itertools.accumulate((e for _, e in self.items), max))

    def inside(self, pos: int) -> bool:
        i = bisect.bisect_left(self.starts, pos) - 1
        return i >= 0 and self.reach[i] > pos


def find(data: bytes, max_records: int = 64, max_locals: int = 10_000) -> Layout:
    """Every zip archive, and every unlisted local entry, in `data`.

    Raises TooMany when the bytes hold more candidates than the limits.
    """
    archives: list[Archive] = []
    covered = _Spans()      # members' local entries and data: nested zips live there
    for pos in reversed(_positions(data, EOCD, max_records)):
        if covered.inside(pos) or any(a.start <= pos < a.end for a in archives):
            continue
        archive = _open(data, pos)
        if archive is not None:
            archives.append(archive)
            covered.add(archive.spans)
    archives.reverse()
    listed = set(covered.starts)
    orphans = []
    # Each unlisted header is judged on its own, even one inside another's data: a
    # made-up header claiming a long stored entry must not hide the ones after it.
    for pos in _positions(data, LOCAL, max_locals):
        if pos in listed or covered.inside(pos):
            continue
        entry = _local_entry(data, pos)
        if entry is not None:
            orphans.append(entry)
    return Layout(archives=archives, orphans=orphans)


def _local_entry(data: bytes, pos: int) -> LocalEntry | None:
    if pos + _LOCAL_LEN > len(data):
        return None
    (_, _, flags, method, _, _, crc, csize, usize, nlen,
     xlen) = struct.unpack_from("<4sHHHHHIIIHH", data, pos)
    if method not in _METHODS or nlen == 0:
        return None
    start = pos + _LOCAL_LEN + nlen + xlen
    raw_name = data[pos + _LOCAL_LEN:pos + _LOCAL_LEN + nlen]
    if start > len(data) or b"\0" in raw_name:
        return None
    name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
    if flags & 0x8 and csize == 0:
        compressed = None       # sizes follow the data; only a decoder finds its end
    else:
        if start + csize > len(data):
            return None
        compressed = data[start:start + csize]
    return LocalEntry(offset=pos, name=name, flags=flags, method=method, crc=crc,
                      compressed=compressed, size=usize)
