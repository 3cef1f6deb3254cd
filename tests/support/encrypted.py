"""Encrypted archives for the tests: ZipCrypto (Info-ZIP's zip), AES zip (pyzipper), 7z
(py7zr, optionally with the names encrypted too)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import py7zr
import pyzipper

from tests.support.tools import require_program


def zipcrypto(tmp_path: Path, members: dict[str, bytes], password: str) -> bytes:
    # Python's zipfile cannot encrypt; the zip program writes ZipCrypto.
    require_program("zip")
    work = tmp_path / "zipcrypto"
    work.mkdir(exist_ok=True)
    for name, data in members.items():
        (work / name).write_bytes(data)
    subprocess.run(["zip", "-q", "-P", password, "out.zip", *members], cwd=work, check=True)
    out = (work / "out.zip").read_bytes()
    (work / "out.zip").unlink()
    return out


def aes_zip(members: dict[str, bytes], password: str) -> bytes:
    buf = io.BytesIO()
    with pyzipper.AESZipFile(buf, "w", compression=pyzipper.ZIP_DEFLATED,
                             encryption=pyzipper.WZ_AES) as z:
        z.setpassword(password.encode())
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def seven_zip(members: dict[str, bytes], password: str | None = None,
              hide_names: bool = False) -> bytes:
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password=password,
                            header_encryption=hide_names and password is not None) as z:
        for name, data in members.items():
            z.writestr(data, name)
    return buf.getvalue()
