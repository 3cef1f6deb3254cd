"""The files on an ISO 9660 / UDF disc image, as every reader of the image sees them.

A disc image carries up to four directory trees over the same data: ISO 9660
(short upper-case names), Joliet (the names Windows shows), Rock Ridge (the
names Linux shows) and UDF (which Windows prefers when present). They need not
agree: a file can be "INVOICE.PDF" in one tree and "invoice.exe" in another,
so every name in every tree is listed. pycdlib parses the trees.

Content is read through a capped writer: no file is copied past the caller's
limit, whatever size its directory entry claims.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pycdlib

FACETS = ("udf_path", "joliet_path", "rr_path", "iso_path")


class DiscError(Exception):
    """pycdlib could not read the image."""


class _Full(Exception):
    pass


class _Capped:
    """A write-only file that keeps at most `limit` bytes, then stops the copy."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        room = self.limit - len(self.buf)
        self.buf += data[:room]
        if len(data) > room:
            raise _Full
        return len(data)


@dataclass(frozen=True)
class Entry:
    name: str           # the path as a desktop shows it
    path: str           # the path as that tree spells it
    facet: str          # which tree
    size: int
    key: tuple[str, int]    # the same data under several names has one key


class Disc:
    def __init__(self, data: bytes) -> None:
        self.iso = pycdlib.PyCdlib()
        try:
            self.iso.open_fp(io.BytesIO(data))
        # pycdlib's failures on hostile bytes are not only its own exception type
        # (struct errors, index errors, recursion): all mean "cannot read it".
        except Exception as e:  # noqa: BLE001
            raise DiscError(f"{type(e).__name__}: {e}") from None

    def facets(self) -> list[str]:
        present = {"udf_path": self.iso.has_udf(), "joliet_path": self.iso.has_joliet(),
                   "rr_path": self.iso.has_rock_ridge(), "iso_path": True}
        return [f for f in FACETS if present[f]]

    def entries(self, max_entries: int) -> Iterator[Entry]:
        seen = 0
        for facet in self.facets():
            try:
                for root, _, files in self.iso.walk(**{facet: "/"}):
                    for name in files:
                        seen += 1
                        if seen > max_entries:
                            raise DiscError(f"more than {max_entries} names")
                        path = f"{root.rstrip('/')}/{name}"
                        record = self.iso.get_record(**{facet: path})
                        yield Entry(name=_plain(path, facet), path=path, facet=facet,
                                    size=record.get_data_length(), key=_key(facet, record))
            except DiscError:
                raise
            except Exception as e:  # noqa: BLE001   (as in __init__)
                raise DiscError(f"{type(e).__name__}: {e}") from None

    def read(self, entry: Entry, limit: int) -> bytes:
        """The first `limit` bytes of the file."""
        out = _Capped(limit)
        try:
            self.iso.get_file_from_iso_fp(out, **{entry.facet: entry.path})
        except _Full:
            pass
        except Exception as e:  # noqa: BLE001   (as in __init__)
            raise DiscError(f"{type(e).__name__}: {e}") from None
        return bytes(out.buf)

    def close(self) -> None:
        try:
            self.iso.close()
        except Exception:  # noqa: BLE001   (nothing to keep from a failed close)
            pass


def _plain(path: str, facet: str) -> str:
    # ISO 9660 names end in a version (";1") that no desktop shows.
    if facet == "iso_path" and ";" in path:
        return path.rsplit(";", 1)[0]
    return path


def _key(facet: str, record: Any) -> tuple[str, int]:
    if facet == "udf_path":
        descs = getattr(record, "alloc_descs", None) or []
        first = getattr(descs[0], "log_block_num", id(record)) if descs else id(record)
        return ("udf", int(first))
    return ("iso", int(record.extent_location()))
