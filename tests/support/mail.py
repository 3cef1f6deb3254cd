"""Test mail, built in code so that no binary is committed, and sent by SMTP.

Messages for a Postfix (numbered, so each has its own Message-ID):

    simple_message(n)      a plain text message, Message-ID <msg-N@holdscan.test>
    eicar_message(n)       EICAR as a base64 attachment, Message-ID <bad-N@holdscan.test>
    attachment_message(n, data)  `data` attached to message N (its own recipient, Subject
                           and Message-ID <att-N@holdscan.test>): one file sent to many
    send(port, sender, recipients, message)     one message by SMTP
    send_many(port, count)                      clean messages over parallel sessions

Building blocks for the scanners (HEADERS is a fixed set of headers):

    simple(body), part(data, ctype, name), multipart(*parts), b64(data)
    zip_bytes / tar_bytes (members), encrypted_flag, zeros_zip, zeros_gzip,
    nested_bomb, overlapping_bomb, eicar_variants(), PE (a minimal Windows program)

EICAR is the 68-byte test string, built at run time by holdscan.lab.clamd, whose
clamd detects it as DETECTED_AS.
"""

from __future__ import annotations

import base64
import io
import re
import smtplib
import struct
import tarfile
import threading
import zipfile
import zlib

from holdscan.lab.clamd import EICAR

__all__ = [
    "EICAR", "HEADERS", "PE", "attachment_message", "b64", "eicar_message", "eicar_variants",
    "encrypted_flag",
    "multipart", "nested_bomb", "overlapping_bomb", "part", "send", "send_many", "simple",
    "simple_message", "tar_bytes", "zeros_gzip", "zeros_zip", "zip_bytes",
]


# -- messages for a Postfix ----------------------------------------------------------------------

def simple_message(n: int, body: str = "hello\r\n", subject: str = "test") -> bytes:
    return (f"From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: {subject} {n}\r\n"
            f"Message-ID: <msg-{n}@holdscan.test>\r\n\r\n{body}").encode()


def eicar_message(n: int) -> bytes:
    payload = base64.encodebytes(EICAR).decode()
    return (
        "From: bad@example.test\r\nTo: rcpt@example.test\r\n"
        f"Subject: infected {n}\r\nMessage-ID: <bad-{n}@holdscan.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
        "--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        "--b1\r\nContent-Type: application/octet-stream\r\n"
        "Content-Disposition: attachment; filename=\"eicar.com.txt\"\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{payload}\r\n--b1--\r\n").encode()


def attachment_message(n: int, data: bytes, name: str = "report.bin") -> bytes:
    headers = (f"From: sender@example.test\r\nTo: rcpt{n}@example.test\r\n"
               f"Subject: the report, copy {n}\r\nMessage-ID: <att-{n}@holdscan.test>\r\n"
               "MIME-Version: 1.0\r\n").encode()
    return multipart(part(f"Hello {n},\r\nthe report is attached.\r\n".encode(), "text/plain",
                          encoding="7bit"),
                     part(data, name=name), headers=headers)


def send(port: int, sender: str, recipients: list[str], message: bytes | str,
         **kwargs: object) -> None:
    """Send one message by SMTP to a private Postfix."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(sender, recipients, message, **kwargs)  # type: ignore[arg-type]


def send_many(port: int, count: int, start: int = 0, threads: int = 5) -> list[str]:
    """Send `count` clean messages over a few parallel SMTP sessions; returns Message-IDs."""
    ids = [f"<msg-{n}@holdscan.test>" for n in range(start, start + count)]
    chunks = [list(range(start + i, start + count, threads)) for i in range(threads)]

    def one(numbers: list[int]) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            for n in numbers:
                s.sendmail("sender@example.test", ["rcpt@example.test"],
                           simple_message(n, body=f"body of message {n}\r\n" * 20))

    ts = [threading.Thread(target=one, args=(c,)) for c in chunks if c]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return ids


# -- building blocks for the scanners ------------------------------------------------------------

HEADERS = (b"Received: from mx.example.test by hold.example.test;\r\n"
           b"\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
           b"From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: test\r\n"
           b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <t@example.test>\r\n"
           b"MIME-Version: 1.0\r\n")

# A minimal but real PE header: "MZ", e_lfanew -> "PE\0\0".
PE = b"MZ" + b"\x90\x00" * 29 + struct.pack("<I", 64) + b"PE\0\0" + b"\x4c\x01" + b"\0" * 200


def with_id(raw: bytes, message_id: str) -> bytes:
    """`raw` with its Message-ID replaced: how a test tells its deliveries apart."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    head = re.sub(rb"(?im)^message-id:.*$", b"Message-ID: " + message_id.encode(), head)
    return head + sep + body


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def part(data: bytes, ctype: str = "application/octet-stream", name: str | None = None,
         encoding: str = "base64", extra: str = "") -> bytes:
    """A body part: headers and (encoded) body, without delimiters."""
    head = f"Content-Type: {ctype}"
    if name is not None:
        head += f'; name="{name}"\r\nContent-Disposition: attachment; filename="{name}"'
    head += f"\r\nContent-Transfer-Encoding: {encoding}\r\n{extra}"
    body = b64(data) if encoding == "base64" else data
    return head.encode() + b"\r\n" + body


def multipart(*parts: bytes, boundary: str = "=_b0und4ry", subtype: str = "mixed",
              headers: bytes = HEADERS) -> bytes:
    out = headers + f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()
    out += b"This is a multi-part message in MIME format.\r\n"
    for p in parts:
        out += f"--{boundary}\r\n".encode() + p + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def simple(body: bytes, headers: bytes = HEADERS) -> bytes:
    return headers + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + body


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def encrypted_flag(zip_data: bytes) -> bytes:
    """Mark every entry of a zip as encrypted (general purpose flag bit 0), in
    both the local headers and the central directory, as an encrypting zip
    program does. Readers then ask for a password; scanners cannot look in."""
    data = bytearray(zip_data)
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = data.find(sig)
        while pos >= 0:
            flags = struct.unpack_from("<H", data, pos + flag_at)[0]
            struct.pack_into("<H", data, pos + flag_at, flags | 1)
            pos = data.find(sig, pos + 4)
    return bytes(data)


def zeros_zip(name: str, size: int) -> bytes:
    """A zip with one member of `size` zero bytes, written in pieces (little memory)."""
    buf = io.BytesIO()
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, \
            zf.open(name, "w", force_zip64=size > 2**31) as f:
        left = size
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    return buf.getvalue()


def zeros_gzip(size: int) -> bytes:
    """gzip data of `size` zero bytes, compressed in pieces (little memory)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)   # about 1000:1 for zeros
    chunk = bytes(1 << 20)
    out = []
    for start in range(0, size, len(chunk)):
        out.append(compressor.compress(chunk[:min(len(chunk), size - start)]))
    out.append(compressor.flush())
    return b"".join(out)


def nested_bomb(layers: int = 3, copies: int = 10, bottom: int = 20 << 20) -> bytes:
    """A 42.zip in miniature: `copies` zips of `copies` zips ... of `bottom` zeros."""
    data = zeros_zip("0.bin", bottom)
    for layer in range(layers):
        data = zip_bytes({f"{layer}-{i}.zip": data for i in range(copies)})
    return data


def overlapping_bomb(entries: int = 1000, size: int = 100 * 1024) -> bytes:
    """Fifield's non-recursive bomb, simplified: many central directory entries
    all pointing at one local file, so the expansion multiplies without
    nesting or a steep ratio per entry."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = compressor.compress(bytes(size)) + compressor.flush()
    crc = zlib.crc32(bytes(size))
    name = b"0"
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(packed), size,
                        len(name), 0) + name + packed
    central = b""
    for i in range(entries):
        n = str(i).encode()
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc,
                               len(packed), size, len(n), 0, 0, 0, 0, 0, 0) + n
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, entries, entries, len(central),
                      len(local), 0)
    return local + central + end


def eicar_variants() -> dict[str, bytes]:
    """EICAR delivered the ways the tests need."""
    return {
        "plain body": simple(EICAR + b"\r\n"),
        "base64 attachment": multipart(part(b"see attachment\r\n", "text/plain", encoding="7bit"),
                                       part(EICAR, "application/octet-stream", "eicar.com.txt")),
        "in a zip": multipart(part(zip_bytes({"eicar.txt": EICAR}), "application/zip", "a.zip")),
        "in a zip in a zip": multipart(part(zip_bytes({"inner.zip": zip_bytes({"e.txt": EICAR})}),
                                            "application/zip", "outer.zip")),
    }
