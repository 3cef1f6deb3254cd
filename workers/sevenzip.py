"""7-Zip archives through py7zr: the member list, and the members' content, capped.

A 7z archive may encrypt its contents (AES-256, the key derived from the
password by 2^19 rounds of SHA-256: about 55 ms of CPU per password tried with
py7zr on a 2-core test machine, which is why the archives scanner tries fewer
passwords on 7z than on zip) and even its header, which hides the member names
too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import py7zr
from py7zr.io import BytesIOFactory


class SevenZipError(Exception):
    """Not readable: damaged, or (with a password) the wrong password."""


class NeedsPassword(Exception):
    """The header itself is encrypted: without the password not even names are known."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    is_dir: bool


@dataclass(frozen=True)
class Listing:
    members: list[Member]
    encrypted: bool         # the content needs a password


def _open(data: bytes, password: str | None) -> py7zr.SevenZipFile:
    try:
        return py7zr.SevenZipFile(io.BytesIO(data), password=password)
    except py7zr.PasswordRequired:
        raise NeedsPassword from None
    # py7zr fails on hostile bytes (and on a wrong header password) in many ways.
    except Exception as e:  # noqa: BLE001
        raise SevenZipError(f"{type(e).__name__}: {e}") from None


def listing(data: bytes, password: str | None = None) -> Listing:
    z = _open(data, password)
    try:
        members = [Member(f.filename, int(f.uncompressed or 0), bool(f.is_directory))
                   for f in z.list()]
        return Listing(members, bool(z.needs_password()))
    except Exception as e:  # noqa: BLE001   (as in _open)
        raise SevenZipError(f"{type(e).__name__}: {e}") from None
    finally:
        z.close()


def contents(data: bytes, limit: int, password: str | None = None) -> dict[str, bytes]:
    """Every file's first `limit` bytes (more may be inflated: the caller checked the
    sizes the header declares). SevenZipError on a damaged archive or wrong password:
    py7zr checks each file's CRC."""
    z = _open(data, password)
    factory = BytesIOFactory(limit)
    try:
        z.extract(factory=factory)
    except Exception as e:  # noqa: BLE001   (as in _open)
        raise SevenZipError(f"{type(e).__name__}: {e}") from None
    finally:
        z.close()
    out = {}
    for name, product in factory.products.items():
        product.seek(0)
        out[name] = product.read()[:limit]
    return out
