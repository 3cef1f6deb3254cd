"""Payloads hidden by how a client reads broken MIME, each with an innocent twin.

    reading_cases() -> {class: {case: (hostile message, innocent twin, expected action)}}

The hostile message of an "infected" case hides a zip holding EICAR, of a
"blocked" case an attachment named *.zip (the tests put .zip on the deny
list). The twin is the same message with an innocent zip (or a .txt name):
whatever the trick does to the structure, the twin must be clean.
Encoders for the formats MIME does not name (yEnc, BinHex 4.0) are here too.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import Callable

from tests.support.mail import EICAR, HEADERS, b64, multipart, part, zip_bytes

__all__ = ["EVIL_ZIP", "GOOD_ZIP", "reading_cases", "yenc", "binhex"]

EVIL_ZIP = zip_bytes({"readme.txt": EICAR})
GOOD_ZIP = zip_bytes({"readme.txt": b"Nothing to see here, just notes.\n" * 3})
TEXT = part(b"Please see the attachment.\r\n", "text/plain", encoding="7bit")

Case = tuple[bytes, bytes, str]


def yenc(data: bytes, name: str = "", line: int = 128) -> bytes:
    """yEnc-encoded `data`; with a name, between =ybegin and =yend lines."""
    out = bytearray()
    for b in data:
        c = (b + 42) % 256
        if c in (0, 10, 13, 61):
            out += bytes((61, (c + 64) % 256))
        else:
            out.append(c)
    lines = b"\r\n".join(bytes(out[i:i + line]) for i in range(0, len(out), line))
    if not name:
        return lines + b"\r\n"
    return (f"=ybegin line={line} size={len(data)} name={name}\r\n".encode() + lines
            + f"\r\n=yend size={len(data)}\r\n".encode())


_HQX = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def binhex(data: bytes, name: str) -> bytes:
    """A BinHex 4.0 file of `data` (data fork only), with its introduction line."""
    n = name.encode("mac_roman")
    header = bytes((len(n),)) + n + b"\0" + b"TEXTttxt" + b"\0\0" + len(data).to_bytes(4, "big") \
        + bytes(4)
    body = header + binascii.crc_hqx(header, 0).to_bytes(2, "big") + data \
        + binascii.crc_hqx(data, 0).to_bytes(2, "big") + b"\0\0"
    body = body.replace(b"\x90", b"\x90\x00")
    text = base64.b64encode(body).rstrip(b"=").translate(bytes.maketrans(_B64, _HQX))
    lines = b"\r\n".join(text[i:i + 64] for i in range(0, len(text), 64))
    return b"(This file must be converted with BinHex 4.0)\r\n\r\n:" + lines + b":\r\n"


def _uu(data: bytes, name: str) -> bytes:
    lines = b"".join(binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45))
    return f"begin 644 {name}\r\n".encode() + lines.replace(b"\n", b"\r\n") + b"`\r\nend\r\n"


def _att(headers: str, body: bytes) -> bytes:
    return multipart(TEXT, headers.encode() + b"\r\n\r\n" + body)


def _pair(build: Callable[[bytes], bytes]) -> Case:
    return build(EVIL_ZIP), build(GOOD_ZIP), "infected"


def _named(build: Callable[[str], bytes], ext: str = "txt") -> Case:
    return build("zip"), build(ext), "blocked"


def _b64_line(data: bytes) -> bytes:
    return base64.b64encode(data)


def _qp(data: bytes) -> bytes:
    """Quoted-printable of binary data: every byte that is not printable ASCII (line
    breaks too) escaped, soft line breaks at 72 characters."""
    out = bytearray()
    line = 0
    for b in data:
        piece = bytes((b,)) if 33 <= b <= 126 and b != 61 else b"=%02X" % b
        if line + len(piece) > 72:
            out += b"=\r\n"
            line = 0
        out += piece
        line += len(piece)
    return bytes(out) + b"\r\n"


def _qp_insert(data: bytes, every: int, junk: bytes) -> bytes:
    """QP of `data` with `junk` put before every `every`-th literal letter G-Z."""
    enc = bytearray()
    n = 0
    for line in _qp(data).split(b"\r\n"):
        out = bytearray()
        for c in line:
            if 71 <= c <= 90 or 103 <= c <= 122:
                n += 1
                if n % every == 0:
                    out += junk
            out.append(c)
        enc += out + b"\r\n"
    return bytes(enc)


def _names(filename: Callable[[str], str]) -> Callable[[str], bytes]:
    return lambda ext: _att("Content-Type: application/octet-stream\r\n"
                            f"Content-Disposition: attachment; {filename(ext)}\r\n"
                            "Content-Transfer-Encoding: base64", b64(b"plain text data"))


def _utf16_2047(ext: str, codec: str) -> str:
    data = f"file.{ext}".encode(codec)
    return f'filename="=?{codec}?B?{base64.b64encode(data).decode()}?="'


def _utf16_2231(ext: str, codec: str) -> str:
    data = f"file.{ext}".encode(codec)
    return f"filename*={codec}''{urllib.parse.quote(data, safe='')}"


def _outer_in_inner(z: bytes) -> bytes:
    enc = b64(z)
    half = len(enc) // 2 - len(enc) // 2 % 78
    inner = (b'Content-Type: multipart/mixed; boundary="inner"\r\n\r\n--inner\r\n'
             b"Content-Type: application/octet-stream\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\n" + enc[:half]
             + b"--outer\r\n" + enc[half:] + b"--inner--\r\n")
    return multipart(TEXT, inner, boundary="outer")


def reading_cases() -> dict[str, dict[str, Case]]:
    z64 = lambda z: b64(z)  # noqa: E731
    cases: dict[str, dict[str, Case]] = {}
    cases["yEnc"] = {
        "=ybegin block in a text body": _pair(lambda z: multipart(
            part(b"Here it is:\r\n" + yenc(z, "notes.zip"), "text/plain", encoding="7bit"))),
        "CTE x-yencode, data only": _pair(lambda z: _att(
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-yencode",
            yenc(z))),
        "CTE x-yencode with =ybegin lines": _pair(lambda z: _att(
            "Content-Type: application/octet-stream; name=notes.zip\r\n"
            "Content-Transfer-Encoding: x-yencode", yenc(z, "notes.zip", line=64))),
    }
    cases["BinHex 4.0"] = {
        "application/mac-binhex40": _pair(lambda z: _att(
            'Content-Type: application/mac-binhex40; name="notes.hqx"', binhex(z, "notes.zip"))),
        "in a text body": _pair(lambda z: multipart(
            part(b"Mac file follows\r\n" + binhex(z, "notes.zip"), "text/plain",
                 encoding="7bit"))),
        "without the Mac type": _pair(lambda z: _att(
            "Content-Type: application/octet-stream", binhex(z, "notes.zip"))),
    }
    cases["uuencode in a part claiming another encoding"] = {
        "claims base64": _pair(lambda z: _att(
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64",
            _uu(z, "notes.zip"))),
        "claims quoted-printable": _pair(lambda z: _att(
            "Content-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: quoted-printable", _uu(z, "notes.zip"))),
        "binary type, 7bit": _pair(lambda z: _att(
            "Content-Type: application/pdf\r\nContent-Transfer-Encoding: 7bit",
            _uu(z, "notes.zip"))),
    }
    b64h = "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64"
    cases["base64 read differently"] = {
        "padding mid-stream then more data": _pair(lambda z: _att(
            b64h, b"eA==\r\n" + z64(z))),
        "padded pieces": _pair(lambda z: _att(
            b64h, b"\r\n".join(_b64_line(z[i:i + 40]) for i in range(0, len(z), 40)))),
        "header-like line before the data": _pair(lambda z: _att(
            b64h, b"X-Attachment-Id: f_abc123\r\n" + z64(z))),
        "junk lines between data": _pair(lambda z: _att(
            b64h, b"\r\n".join(line + b"\r\n-- junk line! --" for line in z64(z).split(b"\r\n")))),
        "lines not a multiple of 4": _pair(lambda z: _att(
            b64h, b"\r\n".join(_b64_line(z[i:i + 29]).rstrip(b"=")
                               for i in range(0, len(z), 29)) + b"\r\n")),
        "non-alphabet characters": _pair(lambda z: _att(
            b64h, b"!".join(z64(z)[i:i + 7] for i in range(0, len(z64(z)), 7)))),
    }
    qph = ("Content-Type: application/octet-stream\r\n"
           "Content-Transfer-Encoding: quoted-printable")
    cases["quoted-printable with invalid escapes"] = {
        "=H before letters": _pair(lambda z: _att(qph, _qp_insert(z, 3, b"="))),
        "=XX inserted": _pair(lambda z: _att(qph, _qp_insert(z, 5, b"=XX"))),
        "=W then hex": _pair(lambda z: _att(qph, _qp(z).replace(b"=0", b"=W0"))),
        "soft breaks followed by blanks": _pair(lambda z: _att(
            qph, _qp(z).replace(b"=\r\n", b"= \t\r\n"))),
    }
    cases["structure"] = {
        "delimiter line ends in a bare CR": _pair(lambda z: multipart(TEXT, part(
            z, "application/zip")).replace(b"--=_b0und4ry\r\nContent-Type: application/zip",
                                           b"--=_b0und4ry\rContent-Type: application/zip")),
        "delimiter line ends in blanks and a bare CR": _pair(lambda z: multipart(TEXT, part(
            z, "application/zip")).replace(b"--=_b0und4ry\r\nContent-Type: application/zip",
                                           b"--=_b0und4ry \t\rContent-Type: application/zip")),
        "outer boundary inside an inner base64 body": _pair(_outer_in_inner),
        "bare CR line ends throughout": _pair(lambda z: multipart(
            TEXT, part(z, "application/zip")).replace(b"\r\n", b"\r")),
        "space in the type": _pair(lambda z: multipart(TEXT, part(z, "application/zip")).replace(
            b"multipart/mixed;", b"multipart /mixed;")),
        "unknown multipart subtype": _pair(lambda z: multipart(
            TEXT, part(z, "application/zip"), subtype="x-unknown")),
    }
    cases["names"] = {
        "RFC 2231 continuations out of order": _named(_names(
            lambda e: f"filename*1=file.; filename*0={e}")),
        "single quotes": _named(_names(lambda e: f"filename='file.{e}'")),
        "comment in the parameter name": _named(_names(lambda e: f"filena()me=file.{e}")),
        "comment in the value": _named(_names(
            lambda e: f"filename=file.{e[0]}(x){e[1:]}")),
        "; in an unquoted value": _named(_names(lambda e: f"filename=file;.{e}")),
        "backslash-escaped ;": _named(_names(lambda e: f"filename=file\\;.{e}")),
        "UTF-16 in RFC 2047": _named(_names(lambda e: _utf16_2047(e, "utf-16"))),
        "UTF-16BE in RFC 2047": _named(_names(lambda e: _utf16_2047(e, "utf-16be"))),
        "UTF-16 in RFC 2231": _named(_names(lambda e: _utf16_2231(e, "utf-16"))),
    }
    return cases


def flat_cases() -> dict[str, Case]:
    return {f"{cls}: {name}": case for cls, group in reading_cases().items()
            for name, case in group.items()}


__all__ += ["flat_cases", "HEADERS"]
