"""clamd's answers about decoded objects, shared by every worker through Redis.

The same attachment sent to 500 recipients arrives as 500 messages; clamd need
scan it once. An entry means: clamd scanned exactly these bytes, alone, with
this signature database, and found nothing ("") or this signature. Its key:

    holdscan:vcache:<signatures>:<config>:<sha256 of the bytes>

- <signatures>: the engine and database versions every reachable clamd of the
  pool reports (VERSION: "ClamAV 1.4.6/27185/..."), plus a generation that
  `holdscan cache flush` increments. A freshclam update changes the database
  version and so every key; local signatures (.ndb files of one's own or a
  third party's) do not change it, hence the generation. Both are read again at
  most every `refresh` seconds, and whenever the pool had to reconnect (clamd
  may have restarted with other signatures).
- <config>: a hash of what in holdscan's configuration can change clamd's answer
  about given bytes: which clamds answer. Nothing else in the scanners' settings
  does (the other scanners run on every message; they are not cached).

The store is the content store (the workers use it already); entries expire
after `ttl` seconds. The cache is an optimisation and never a source of
verdicts on its own: a Redis that fails, refuses our password or answers
strangely means "no cache" (the message is scanned as it would be without one)
for `RETRY_AFTER` seconds, never an error verdict.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

log = logging.getLogger("holdscan.vcache")

PREFIX = "holdscan:vcache:"
GENERATION_KEY = PREFIX + "generation"
# What an entry means; a change of meaning must change every key.
FORMAT = 1
# After a Redis failure, scan without the cache for this long before trying again, so
# that a Redis that hangs costs one timeout per this many seconds, not one per message.
RETRY_AFTER = 30.0


def config_hash(addresses: Iterable[str]) -> str:
    """The <config> part of a key: which clamds answer (their order does not matter)."""
    text = json.dumps({"format": FORMAT, "addresses": sorted(addresses)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def short_version(reply: str) -> str:
    """ "ClamAV 1.4.6/27185/Mon Dec  1 09:24:02 2026" -> "1.4.6/27185" (the date follows
    from the database version); "ClamAV 1.4.6" (no official database) -> "1.4.6"."""
    fields = reply.removeprefix("ClamAV ").split("/")
    return "/".join(f.strip() for f in fields[:2]).replace(" ", "_")


def flush(store: Any) -> int:
    """Make every entry unreachable (they expire by themselves); the new generation."""
    return int(store.incr(GENERATION_KEY))


class VerdictCache:
    """Lookups and stores for one worker process; counts its hits and misses."""

    def __init__(self, store_factory: Callable[[], Any], versions: Callable[[], list[str]],
                 reconnects: Callable[[], int], config: str, ttl: int,
                 refresh: float = 5.0) -> None:
        self._store_factory = store_factory
        self._store: Any = None
        self._versions = versions           # clamd's VERSION replies, one per clamd reached
        self._reconnects = reconnects       # how often the clamd pool had to reconnect
        self.config = config
        self.ttl = ttl
        self.refresh = refresh
        self.hits = 0
        self.misses = 0
        self._signatures = ""
        self._read_at = -float("inf")
        self._read_reconnects = -1
        self._down_until = 0.0

    def lookup(self, digests: list[bytes]) -> dict[bytes, str | None] | None:
        """clamd's answer for each digest: "" clean, a signature, None not cached.

        None instead of the dict: no cache now (Redis failed, or no clamd version).
        """
        if not digests or time.monotonic() < self._down_until:
            return None
        try:
            signatures = self._current_signatures()
            if not signatures:
                return None
            values = self._client().mget([self._key(signatures, d) for d in digests])
        except (redis.RedisError, ValueError) as e:     # ValueError: a garbled generation
            self._failed(e)
            return None
        out: dict[bytes, str | None] = {}
        for digest, value in zip(digests, values, strict=True):
            if isinstance(value, bytes):
                out[digest] = value.decode("utf-8", "replace")
                self.hits += 1
            else:
                out[digest] = None
                self.misses += 1
        return out

    def store(self, answers: dict[bytes, str]) -> None:
        """Remember clamd's answers (digest -> "" or the signature)."""
        if not answers or not self._signatures or time.monotonic() < self._down_until:
            return
        try:
            pipe = self._client().pipeline(transaction=False)
            for digest, answer in answers.items():
                pipe.set(self._key(self._signatures, digest), answer, ex=self.ttl)
            pipe.execute()
        except redis.RedisError as e:
            self._failed(e)

    def _key(self, signatures: str, digest: bytes) -> str:
        return f"{PREFIX}{signatures}:{self.config}:{digest.hex()}"

    def _client(self) -> Any:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def _current_signatures(self) -> str:
        now = time.monotonic()
        reconnects = self._reconnects()
        if now - self._read_at < self.refresh and reconnects == self._read_reconnects:
            return self._signatures
        versions = sorted({short_version(v) for v in self._versions()})
        generation = self._client().get(GENERATION_KEY)
        # An unreachable clamd gives no version; the scan that follows fails over or
        # waits in hold anyway, and nothing is looked up under a version nobody reported.
        self._signatures = ("+".join(versions) + f".g{int(generation or 0)}"
                            if versions else "")
        self._read_at = now
        self._read_reconnects = reconnects
        return self._signatures

    def _failed(self, e: Exception) -> None:
        log.warning("verdict cache unavailable for %gs (scanning without it): %s",
                    RETRY_AFTER, e)
        self._down_until = time.monotonic() + RETRY_AFTER
        self._signatures = ""
        self._read_at = -float("inf")
