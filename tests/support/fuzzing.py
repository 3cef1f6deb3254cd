"""Mutated and generated messages for the fuzz target, and queue files to carry them.

    seeds() -> list of raw messages (innocent, hidden payloads, hostile shapes)
    mutate(rnd, raw) -> a message one to four mutations away from `raw`
    queue_file(message) -> the bytes of a Postfix queue file carrying it
    mutate_queue_file(rnd, data) -> a damaged queue file

The mutations are the ones MIME parsers trip on: MIME tokens dropped in
("--", "=?", ";", quotes, comments, "begin 644", "=ybegin"), bytes flipped,
ranges repeated (many parts, long runs), cut, or spliced from another seed.
The queue-file builder is independent of dispatcher/queuefile.py, so that the
codec is tested against what Postfix writes, not against itself.
"""

from __future__ import annotations

import random

from tests.support.hostile_mail import charset_cases
from tests.support.innocent_mail import innocent_corpus
from tests.support.reading_cases import flat_cases
from tests.support.records import rec

__all__ = ["seeds", "mutate", "queue_file", "mutate_queue_file"]

TOKENS = [b"\r\n", b"\n", b"\r", b"--", b"--=_b0und4ry", b"--=_b0und4ry--", b"=?utf-8?B?",
          b"?=", b";", b'"', b"'", b"(", b")", b"\\", b"=", b"==", b"=XX", b"= \r\n",
          b"filename*0*=utf-16''%FF", b"name=", b"boundary=", b"Content-Type: multipart/mixed",
          b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: x-yencode",
          b"begin 644 a.exe\r\n", b"=ybegin line=128 size=10 name=a.zip\r\n",
          b"(This file must be converted with BinHex 4.0)\r\n:", b"\x00", b"\xff",
          b" " * 64, b"a" * 64, b";" * 64, b"PK\x03\x04", b"MZ"]


def seeds() -> list[bytes]:
    out = list(innocent_corpus().values())
    for hostile, twin, _ in flat_cases().values():
        out += [hostile, twin]
    out += list(charset_cases().values())[:6]
    return out


def mutate(rnd: random.Random, raw: bytes, others: list[bytes] | None = None) -> bytes:
    data = bytearray(raw)
    for _ in range(rnd.randint(1, 4)):
        at = rnd.randrange(len(data) + 1)
        kind = rnd.randrange(7)
        if kind == 0:
            data[at:at] = rnd.choice(TOKENS)
        elif kind == 1 and data:
            for _ in range(rnd.randint(1, 8)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
        elif kind == 2 and data:
            # A range repeated: many parts, long runs of one token.
            end = min(len(data), at + rnd.randint(1, 400))
            data[at:at] = bytes(data[at:end]) * rnd.randint(2, 200)
        elif kind == 3:
            data[at:at] = rnd.choice(TOKENS) * rnd.randint(100, 3000)
        elif kind == 4:
            del data[at:at + rnd.randint(1, 200)]
        elif kind == 5 and others:
            other = rnd.choice(others)
            start = rnd.randrange(len(other) + 1)
            data[at:at] = other[start:start + rnd.randint(1, 2000)]
        else:
            data = data[:at]
    return bytes(data)


# -- queue files ---------------------------------------------------------------------------

def queue_file(message: bytes, limit: int = 2048) -> bytes:
    """A straight queue file as Postfix's cleanup writes one, carrying `message`."""
    env = b"".join([rec(b"T", b"1700000000 123456"), rec(b"A", b"create_time=1700000001"),
                    rec(b"S", b"sender@example.test"), rec(b"O", b"rcpt@example.test"),
                    rec(b"R", b"rcpt@example.test")])
    body = bytearray()
    for line in message.replace(b"\r\n", b"\n").split(b"\n"):
        while len(line) > limit:
            body += rec(b"L", line[:limit])
            line = line[limit:]
        body += rec(b"N", line)
    c_len = 2 + 16 * 6 - 1
    fields = [len(body), c_len + len(env) + 2, 1, 0, len(body), 0]
    c = rec(b"C", " ".join(f"{v:15d}" for v in fields).encode())
    return c + env + rec(b"M") + bytes(body) + rec(b"X") + rec(b"E")


def mutate_queue_file(rnd: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rnd.randint(1, 3)):
        at = rnd.randrange(len(out))
        kind = rnd.randrange(4)
        if kind == 0:
            out[at] = rnd.randrange(256)
        elif kind == 1:
            out[at:at] = bytes([rnd.choice(b"CTASORMNLXEpw"), rnd.randrange(256)])
        elif kind == 2:
            del out[at:at + rnd.randint(1, 50)]
        else:
            out[at:at] = b"\xff" * rnd.randint(1, 8)
    return bytes(out)
