"""Who is an administrator: passwords (scrypt) or the reverse proxy's word; login limits.

<data_dir>/admins holds one administrator per line, `NAME:scrypt:N:R:P:SALT:HASH` (hex),
written by `holdscan web passwd NAME`. scrypt is memory-hard: a stolen file costs an
attacker memory as well as time per guess. With web.auth = "header", the reverse proxy
authenticates and names the user in web.auth_header; the web believes that header only
from web.trusted_proxies.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

NAME_RE = re.compile(r"[\w.@+-]{1,100}")
# 32 MiB of memory per guess (128 * N * R bytes), about 0.1 s on one core.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
_MAXMEM = 64 * 1024 * 1024


class AuthError(ValueError):
    """A bad name or password file; the message says what to do."""


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P,
                  salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM,
                            dklen=32)
    return f"scrypt:{n}:{r}:{p}:{salt.hex()}:{digest.hex()}"


def check_password(stored: str, password: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split(":")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=_MAXMEM, dklen=len(bytes.fromhex(digest)))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


# Checked against when the name is unknown, so that a wrong name takes as long as a
# wrong password (no telling names apart by time).
_DUMMY = hash_password("not a password", salt=b"\0" * 16)


class Admins:
    """<data_dir>/admins, read at each login (a `passwd` takes effect at once)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            name, sep, stored = line.strip().partition(":")
            if sep and NAME_RE.fullmatch(name):
                out[name] = stored
        return out

    def check(self, name: str, password: str) -> bool:
        stored = self.read().get(name)
        ok = check_password(stored or _DUMMY, password)
        return ok and stored is not None

    def set(self, name: str, password: str) -> None:
        if not NAME_RE.fullmatch(name):
            raise AuthError(f"{name!r}: a name is letters, digits and . @ + - _ (1-100)")
        if len(password) < 10:
            raise AuthError("use a password of 10 characters or more")
        admins = self.read()
        admins[name] = hash_password(password)
        self._write(admins)

    def remove(self, name: str) -> bool:
        admins = self.read()
        if admins.pop(name, None) is None:
            return False
        self._write(admins)
        return True

    def _write(self, admins: dict[str, str]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{n}:{s}\n" for n, s in sorted(admins.items())))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class LoginLimiter:
    """At most `attempts` failed logins per client address and per name in `window`
    seconds; past that, logins are refused without looking at the password."""

    def __init__(self, attempts: int, window: float = 300.0) -> None:
        self.attempts = attempts
        self.window = window
        self._failed: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failed[key]
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def blocked(self, client: str, name: str, now: float | None = None) -> float:
        """Seconds until a login may be tried again; 0 if it may now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            waits = [q[0] + self.window - now
                     for q in (self._recent(f"ip:{client}", now), self._recent(f"n:{name}", now))
                     if len(q) >= self.attempts]
        return max(waits, default=0.0)

    def failed(self, client: str, name: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in (f"ip:{client}", f"n:{name}"):
                self._recent(key, now).append(now)
            if len(self._failed) > 100_000:      # a flood of names: forget the oldest
                for key in list(self._failed)[:50_000]:
                    del self._failed[key]


__all__ = ["AuthError", "Admins", "LoginLimiter", "check_password", "hash_password"]
