"""Windows cabinet (.cab) files: the member list, and the content of stored and
MSZIP-compressed folders.

A cabinet is a header, a table of folders (compressed streams) and a table of
files, each a slice of one folder's output. Listing needs only the tables;
content needs the folder inflated up to the end of the slices wanted, capped
by the caller. MSZIP is deflate in blocks of at most 32 KiB whose history
carries over from block to block. Quantum and LZX folders are listed but not
inflated (clamd reads those itself).

Layout per Microsoft's Cabinet File Format specification (MS-CAB).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

_HEADER = struct.Struct("<4sIIIIIBBHHHHH")     # CFHEADER without its optional parts
_FOLDER = struct.Struct("<IHH")                # CFFOLDER
_FILE = struct.Struct("<IIHHHH")               # CFFILE, then the name
_DATA = struct.Struct("<IHH")                  # CFDATA, then reserve and data
_WINDOW = 32 * 1024
_NAME_MAX = 1024
_FOLDER_CONTINUED = 0xFFFD                     # iFolder values >= this: spans cabinets

NONE, MSZIP = 0, 1


class CabError(Exception):
    """Not a cabinet, or a damaged one."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    folder: int
    offset: int         # in the folder's output


@dataclass(frozen=True)
class Folder:
    start: int          # the first CFDATA block
    blocks: int
    method: int         # low 4 bits of typeCompress


@dataclass(frozen=True)
class Cabinet:
    folders: list[Folder]
    members: list[Member]
    data_reserve: int   # bytes reserved in each CFDATA block


def _cstring(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.find(b"\0", pos, pos + _NAME_MAX)
    if end < 0:
        raise CabError("a name without its end")
    return data[pos:end], end + 1


def read(data: bytes, max_members: int) -> Cabinet:
    """The tables of a cabinet. CabError if they do not fit in `data`."""
    try:
        (sig, _, _, _, files_at, _, _, _, nfolders, nfiles, flags, _,
         _) = _HEADER.unpack_from(data, 0)
        if sig != b"MSCF":
            raise CabError("no MSCF signature")
        if nfiles > max_members:
            raise CabError(f"{nfiles} members, more than {max_members}")
        pos = _HEADER.size
        folder_reserve = data_reserve = 0
        if flags & 0x4:
            header_reserve, folder_reserve, data_reserve = struct.unpack_from("<HBB", data, pos)
            pos += 4 + header_reserve
        for flag in (0x1, 0x2):         # previous / next cabinet: two names each
            if flags & flag:
                for _ in range(2):
                    _, pos = _cstring(data, pos)
        folders = []
        for _ in range(nfolders):
            start, blocks, method = _FOLDER.unpack_from(data, pos)
            pos += _FOLDER.size + folder_reserve
            folders.append(Folder(start, blocks, method & 0xF))
        members = []
        pos = files_at
        for _ in range(nfiles):
            size, offset, folder, _, _, attribs = _FILE.unpack_from(data, pos)
            raw, pos = _cstring(data, pos + _FILE.size)
            name = raw.decode("utf-8" if attribs & 0x80 else "cp1252", "replace")
            members.append(Member(name, size, folder, offset))
    except struct.error:
        raise CabError("truncated tables") from None
    return Cabinet(folders, members, data_reserve)


def inflate(data: bytes, cab: Cabinet, index: int, want: int,
            count: Callable[[int, int], None]) -> bytes | None:
    """Folder `index`'s output up to `want` bytes; None for a method not read here.

    count(out, in) is called after each block with the totals so far, so that the
    caller's ratio and size budgets can stop a bomb between blocks.
    """
    if index >= len(cab.folders):
        return None
    folder = cab.folders[index]
    if folder.method not in (NONE, MSZIP):
        return None
    out = bytearray()
    taken = 0
    pos = folder.start
    for _ in range(folder.blocks):
        if len(out) >= want:
            break
        try:
            _, size, _ = _DATA.unpack_from(data, pos)
        except struct.error:
            raise CabError("truncated data block") from None
        pos += _DATA.size + cab.data_reserve
        block = data[pos:pos + size]
        pos += size
        taken += size
        if len(block) < size:
            raise CabError("truncated data block")
        if folder.method == NONE:
            out += block
        else:
            if block[:2] != b"CK":
                raise CabError("MSZIP block without its CK signature")
            history = bytes(out[-_WINDOW:])
            d = zlib.decompressobj(-15, zdict=history) if history else zlib.decompressobj(-15)
            try:
                out += d.decompress(block[2:], _WINDOW)
            except zlib.error as e:
                raise CabError(f"MSZIP: {e}") from None
        count(len(out), taken)
    return bytes(out[:want])
