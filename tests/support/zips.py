"""Zip archives written byte by byte, for shapes the zipfile module will not write.

    raw_zip([(b"name", b"data"), ...])      a zip; names are raw bytes (b"" allowed)
    local_entries([(b"name", b"data")])     local entries alone, no central directory
    concatenated(*zips)                     zips one after the other

Members are stored or deflated (method 8) with correct CRCs and sizes, so every
zip reader accepts what a test means it to accept.
"""

from __future__ import annotations

import struct
import zlib

Entry = tuple[bytes, bytes]


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _local(name: bytes, data: bytes, method: int) -> tuple[bytes, bytes, int]:
    packed = _deflate(data) if method == 8 else data
    crc = zlib.crc32(data)
    header = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(packed),
                         len(data), len(name), 0) + name
    return header + packed, packed, crc


def local_entries(entries: list[Entry], method: int = 8) -> bytes:
    return b"".join(_local(name, data, method)[0] for name, data in entries)


def raw_zip(entries: list[Entry], method: int = 8, comment: bytes = b"") -> bytes:
    body = b""
    central = b""
    for name, data in entries:
        local, packed, crc = _local(name, data, method)
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc,
                               len(packed), len(data), len(name), 0, 0, 0, 0, 0,
                               len(body)) + name
        body += local
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                      len(central), len(body), len(comment)) + comment
    return body + central + end


def concatenated(*zips: bytes) -> bytes:
    return b"".join(zips)
