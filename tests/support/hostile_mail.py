"""Messages built to cost a parser time or memory out of proportion to their size.

    hostile_shapes() -> {name: raw message}

Each is sized so that the reading it targets, if quadratic, would take seconds
(the sizes and the old costs are in the regression tests); linear code reads it
in milliseconds. Also used as seeds of the fuzz target.
"""

from __future__ import annotations

from tests.support.mail import HEADERS, b64, multipart, part

__all__ = ["hostile_shapes", "ambiguous_parts", "charset_cases"]


def hostile_shapes() -> dict[str, bytes]:
    body = b"\r\n\r\nhello\r\n"
    return {
        "Content-Type with a long token run and no =": HEADERS
        + b"Content-Type: text/plain; " + b"a" * 40_000 + body,
        "Content-Disposition with a long token run and no =": multipart(
            b"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
            + b"x" * 40_000 + b"\r\n\r\n%PDF-1.4"),
        # Ended by a blank that no strip removes (U+1680): the search for "blanks,
        # then something" fails at every blank.
        "filename of 40,000 blanks": multipart(
            b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="a'
            + b" " * 40_000 + '\u1680"\r\n\r\n%PDF-1.4'.encode()),
        "begin 644 x and 40,000 blanks": HEADERS + b"Content-Type: text/plain\r\n\r\n"
        b"begin 644 x" + b" " * 40_000 + b"y\r\nend\r\n",
        "50,000 semicolons": HEADERS + b"Content-Type: multipart/mixed; boundary=b"
        + b";" * 50_000 + b"\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
        "a quote then 100,000 semicolons": HEADERS
        + b'Content-Type: multipart/mixed; boundary=b; x="' + b";" * 100_000
        + b"\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
        "delimiter-like lines ending in long blank runs": HEADERS
        + b"Content-Type: multipart/mixed\r\n\r\n" + (b"--x" + b" " * 1500 + b"y\r\n") * 1500,
        "quoted-printable with a soft break and a long blank run": multipart(
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            b"a= \r\n" + b" " * 50_000 + b"x\r\n"),
        "30,000 parameters": HEADERS + b"Content-Type: text/plain"
        + b"; a=b" * 30_000 + body,
        "blocked parts by the hundred": multipart(*[
            part(b"MZ" + bytes([i % 256, i // 256]) * 2000, "application/octet-stream",
                 f"tool{i}.exe") for i in range(400)]),
    }


def ambiguous_parts(count: int) -> bytes:
    """`count` parts, each with every kind of ambiguity the readings enumerate."""
    parts = []
    for i in range(count):
        enc = b64(b"part %d " % i * 50).replace(b"\r\n", b"")
        parts.append(
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Type: text/plain\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n"
            b"Content-Disposition: attachment; filename*1=a.; filename*0=b; "
            b"filena()me='c.txt'\r\n\r\n"
            + enc[:20] + b"==" + enc[20:] + b"\r\nX-junk: line=XX=H\r\n" + enc + b"= \t\r\n")
    return multipart(*parts)


# Charsets Python knows but cannot decode with errors="replace", or that are no
# text encodings at all.
HOSTILE_CHARSETS = ["undefined", "idna", "punycode", "rot13", "hex", "base64", "zlib",
                    "utf-7", "unicode-escape", "uu", "bz2", "quopri"]


def charset_cases() -> dict[str, bytes]:
    out = {}
    for cs in HOSTILE_CHARSETS:
        out[f"RFC 2047 name in {cs}"] = multipart(
            f'Content-Type: application/pdf; name="=?{cs}?B?aW52b2ljZS5wZGY=?="\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n".encode() + b64(b"%PDF-1.4 x"))
        out[f"RFC 2231 name in {cs}"] = multipart(
            f"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
            f"filename*={cs}''%FF%FEinvoice.pdf\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n".encode() + b64(b"%PDF-1.4 x"))
        out[f"text in {cs}"] = HEADERS + (
            f"Subject: =?{cs}?Q?hello?=\r\nContent-Type: text/plain; charset={cs}\r\n"
            f"\r\n\xff\xfe hello\r\n").encode("latin-1")
    return out
