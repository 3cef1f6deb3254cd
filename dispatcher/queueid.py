"""Postfix queue IDs: built from (time, inode), decoded back to the inode, and
mapped to a path in a (possibly hashed) queue directory.

A queue file's name must match its inode (rule 5): Postfix's queue manager and
`postsuper -s` rely on it, and only inode-derived names are free of
collisions, since rename() silently replaces a target. So holdscan never
invents a name: it creates the file first, reads its inode, and names it from
that, the way Postfix's mail_queue_enter() does.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# Postfix's "safe" alphabet: digits and consonants, so that IDs spell no words.
SAFE_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
_SAFE_INDEX = {c: i for i, c in enumerate(SAFE_ALPHABET)}
LONG_SEC_BASE = 52
LONG_SEC_PAD = 6
LONG_USEC_BASE = 52
LONG_USEC_PAD = 4
LONG_INUM_SEP = "z"
LONG_INUM_BASE = 51          # base 51, so the inode part never contains the 'z' separator
SHORT_USEC_PAD = 5

_SHORT_RE = re.compile(r"[0-9A-F]{6,}\Z")
_LONG_RE = re.compile(r"[0-9BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz]{10,}z"
                      r"[0-9BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxy]+\Z")


class QueueIdError(ValueError):
    """A string that is not a Postfix queue ID."""


def _encode(value: int, base: int, pad: int) -> str:
    digits = []
    while True:
        value, r = divmod(value, base)
        digits.append(SAFE_ALPHABET[r])
        if value == 0:
            break
    return "".join(reversed(digits)).rjust(pad, "0")


def _decode(text: str, base: int) -> int:
    value = 0
    for c in text:
        d = _SAFE_INDEX.get(c)
        if d is None or d >= base:
            raise QueueIdError(f"{text!r} is not base {base} in Postfix's safe alphabet")
        value = value * base + d
    return value


def short_id(usec: int, inode: int) -> str:
    """The default ID: 5 hex digits of microseconds, then the inode in hex."""
    return f"{usec:05X}{inode:X}"


def long_id(sec: int, usec: int, inode: int) -> str:
    """The `enable_long_queue_ids = yes` ID."""
    return (_encode(sec, LONG_SEC_BASE, LONG_SEC_PAD) + _encode(usec, LONG_USEC_BASE, LONG_USEC_PAD)
            + LONG_INUM_SEP + _encode(inode, LONG_INUM_BASE, 0))


def make_id(sec: int, usec: int, inode: int, long: bool) -> str:
    return long_id(sec, usec, inode) if long else short_id(usec, inode)


def is_long(queue_id: str) -> bool:
    sep = queue_id.rfind(LONG_INUM_SEP)
    return sep >= LONG_SEC_PAD + LONG_USEC_PAD


def is_valid(queue_id: str) -> bool:
    """True for a well-formed short or long queue ID (what Postfix's mail_queue_id_ok() accepts,
    narrowed to IDs that encode an inode)."""
    return bool(_LONG_RE.match(queue_id) if is_long(queue_id) else _SHORT_RE.match(queue_id))


def inode_of(queue_id: str) -> int:
    """The inode number a queue ID encodes."""
    if not is_valid(queue_id):
        raise QueueIdError(f"{queue_id!r} is not a Postfix queue ID")
    if is_long(queue_id):
        return _decode(queue_id[queue_id.rfind(LONG_INUM_SEP) + 1:], LONG_INUM_BASE)
    return int(queue_id[SHORT_USEC_PAD:], 16)


def matches_inode(queue_id: str, inode: int) -> bool:
    """Does this name belong to this inode? Postfix compares only the bits that fit."""
    try:
        return inode_of(queue_id) == inode
    except QueueIdError:
        return False


def hash_key(queue_id: str) -> str:
    """The characters that hashed queue directories are named from.

    Short IDs hash on their own first characters; long IDs on their
    microseconds re-encoded as five hex digits, so that both forms of a
    message spread the same way.
    """
    if is_long(queue_id):
        sep = queue_id.rfind(LONG_INUM_SEP)
        usec = _decode(queue_id[sep - LONG_USEC_PAD:sep], LONG_USEC_BASE)
        return f"{usec:05X}"
    return queue_id


def queue_path(queue_dir: str | Path, queue: str, queue_id: str,
               hashed_queues: frozenset[str] | set[str], depth: int) -> Path:
    """Where `queue_id` lives in `queue` (e.g. "incoming"), honouring hash_queue_names/_depth."""
    return Path(queue_path_str(queue_dir, queue, queue_id, hashed_queues, depth))


def queue_path_str(queue_dir: str | Path, queue: str, queue_id: str,
                   hashed_queues: frozenset[str] | set[str], depth: int) -> str:
    """queue_path as a string: several lookups per message need no Path."""
    parts = [os.fspath(queue_dir), queue]
    if queue in hashed_queues:
        parts += hash_key(queue_id)[:depth]
    parts.append(queue_id)
    return "/".join(parts)
