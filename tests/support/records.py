"""Queue-file records written by hand, independent of dispatcher/queuefile.py: what the
codec's tests and the fuzz target build queue files from (see postfix-queue.md: a type
byte, the length in 7-bit groups, low first, then the data)."""

from __future__ import annotations


def length(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def rec(t: bytes, data: bytes = b"") -> bytes:
    return t + length(len(data)) + data
