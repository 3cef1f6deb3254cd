"""Disc images and cabinets for the archive tests, built in code.

    iso_image({"/INVOICE.PDF;1": b"..."}, joliet={"/INVOICE.PDF;1": "/invoice.exe"})
        an ISO 9660 image with Joliet, Rock Ridge and UDF trees (pycdlib writes it);
        each tree gets the name given for it, else one made from the ISO name
    cab_bytes({"a.txt": b"..."}, method)     a one-folder cabinet, stored or MSZIP
"""

from __future__ import annotations

import io
import struct
import zlib

import pycdlib

_WINDOW = 32 * 1024


def iso_image(files: dict[str, bytes], joliet: dict[str, str] | None = None,
              udf: dict[str, str] | None = None, with_udf: bool = True) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09",
            udf="2.60" if with_udf else None)
    for iso_path, data in files.items():
        plain = iso_path.split(";")[0].lower()
        names = {"joliet_path": (joliet or {}).get(iso_path, plain),
                 "rr_name": plain.rsplit("/", 1)[-1]}
        if with_udf:
            names["udf_path"] = (udf or {}).get(iso_path, plain)
        iso.add_fp(io.BytesIO(data), len(data), iso_path, **names)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def _mszip(blocks: list[bytes]) -> list[bytes]:
    out = []
    history = b""
    for block in blocks:
        c = (zlib.compressobj(9, zlib.DEFLATED, -15, zdict=history) if history
             else zlib.compressobj(9, zlib.DEFLATED, -15))
        out.append(b"CK" + c.compress(block) + c.flush())
        history = (history + block)[-_WINDOW:]
    return out


def cab_bytes(members: dict[str, bytes], method: int = 1) -> bytes:
    """A cabinet with one folder holding `members`; method 0 stores, 1 is MSZIP."""
    stream = b"".join(members.values())
    raw_blocks = [stream[i:i + _WINDOW] for i in range(0, len(stream), _WINDOW)] or [b""]
    packed = _mszip(raw_blocks) if method == 1 else raw_blocks
    files = b""
    offset = 0
    for name, data in members.items():
        files += struct.pack("<IIHHHH", len(data), offset, 0, 0x5821, 0, 0x20)
        files += name.encode() + b"\0"
        offset += len(data)
    header_size = 36
    folder_size = 8
    files_at = header_size + folder_size
    data_at = files_at + len(files)
    blocks = b"".join(struct.pack("<IHH", 0, len(p), len(r)) + p
                      for p, r in zip(packed, raw_blocks, strict=True))
    total = data_at + len(blocks)
    header = struct.pack("<4sIIIIIBBHHHHH", b"MSCF", 0, total, 0, files_at, 0, 3, 1, 1,
                         len(members), 0, 0, 0)
    folder = struct.pack("<IHH", data_at, len(raw_blocks), method)
    return header + folder + files + blocks
