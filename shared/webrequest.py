"""What the web asks the dispatcher to do, and the links in recipients' digests.

The web process may not touch the quarantine or Postfix's spool. It asks for a
release or a delete by dropping a request file into STATE/webrequests (mode
1730, group web.group, like Postfix's maildrop); the dispatcher, as mail_owner,
reads it as hostile input (dispatcher/webrequests.py), carries it out with the
quarantine store's crash-safe operations, and answers in STATE/web/results/.

A request file is one JSON object, at most MAX_SIZE bytes:

    {"v": 1, "id": "<32 hex>", "action": "release" | "delete", "entry": "<quarantine ID>",
     "to": "" | "user@example.com", "by": "admin:NAME" | "recipient:ADDRESS",
     "time": 1700000000.0, "link": "" | "<signed link token>"}

A recipient's request carries the signed link it came through: the dispatcher
checks the signature itself, so the web cannot act for a recipient without one.

Links: base64url(JSON {"r": recipient, "e": entry, "x": expiry}) "." base64url(HMAC-SHA256),
keyed with STATE/web/link.key, which the dispatcher makes (group-readable by the web).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VERSION = 1
MAX_SIZE = 4096
ACTIONS = ("release", "delete")
ENTRY_RE = re.compile(r"[0-9A-Za-z]{1,32}-[0-9]{1,20}")
ADDRESS_RE = re.compile(r"[^\s<>,;@\"\\]{1,200}@[^\s<>,;@\"\\]{1,200}")
_ID_RE = re.compile(r"[0-9a-f]{32}")
_BY_RE = re.compile(r"(admin:[\w.@+-]{1,100}|recipient:" + ADDRESS_RE.pattern + ")")


@dataclass(frozen=True)
class WebPaths:
    """Where the web and the dispatcher meet, under the dispatcher's state directory.

    STATE/                   0710 mail_owner:web   (the web may only pass through)
    STATE/webrequests/       1730 mail_owner:web   requests; the web cannot list it
    STATE/web/               2750 mail_owner:web   what the web may read:
        results/ID.json                            each request's outcome
        audit.log                                  who asked for what, and what came of it
        link.key                                   the digest links' HMAC key
    (STATE/status.json, 0644, is the dispatcher's status for everyone.)
    """

    state_dir: Path

    @property
    def requests(self) -> Path:
        return self.state_dir / "webrequests"

    @property
    def shared(self) -> Path:
        return self.state_dir / "web"

    @property
    def results(self) -> Path:
        return self.shared / "results"

    @property
    def audit(self) -> Path:
        return self.shared / "audit.log"

    @property
    def key(self) -> Path:
        return self.shared / "link.key"

    @property
    def status(self) -> Path:
        return self.state_dir / "status.json"

    def result(self, request_id: str) -> dict[str, Any] | None:
        """A request's outcome, once the dispatcher has written it."""
        if not _ID_RE.fullmatch(request_id):
            return None
        try:
            raw = json.loads((self.results / f"{request_id}.json").read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None


class RequestError(ValueError):
    """A request file that must not be carried out; the message says what is wrong."""


@dataclass(frozen=True)
class Request:
    id: str
    action: str
    entry: str
    by: str
    time: float
    to: str = ""
    link: str = ""

    @classmethod
    def new(cls, action: str, entry: str, by: str, to: str = "", link: str = "") -> Request:
        r = cls(secrets.token_hex(16), action, entry, by, time.time(), to, link)
        r.check()
        return r

    @property
    def recipient(self) -> str:
        """The recipient who asked through a link, or "" for an administrator."""
        return self.by[len("recipient:"):] if self.by.startswith("recipient:") else ""

    def check(self) -> None:
        if not _ID_RE.fullmatch(self.id):
            raise RequestError("id must be 32 hex digits")
        if self.action not in ACTIONS:
            raise RequestError(f"action must be one of {', '.join(ACTIONS)}")
        if not ENTRY_RE.fullmatch(self.entry):
            raise RequestError("entry is not a quarantine ID")
        if not _BY_RE.fullmatch(self.by):
            raise RequestError("by must be admin:NAME or recipient:ADDRESS")
        if self.to and (self.action != "release" or not ADDRESS_RE.fullmatch(self.to)):
            raise RequestError("to must be one plain address, and only for a release")
        if self.recipient and (self.to or not self.link):
            raise RequestError("a recipient's request needs its link and cannot name another "
                               "address")
        if len(self.link) > 1024:
            raise RequestError("link too long")

    def to_bytes(self) -> bytes:
        return json.dumps({"v": VERSION, **asdict(self)}, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Request:
        """Parse and validate a request file's bytes. Raises RequestError."""
        if len(data) > MAX_SIZE:
            raise RequestError(f"larger than {MAX_SIZE} bytes")
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise RequestError("not a JSON object") from None
        if not isinstance(raw, dict) or raw.get("v") != VERSION:
            raise RequestError(f"not a version {VERSION} request")
        fields = {"id": str, "action": str, "entry": str, "by": str, "time": (int, float),
                  "to": str, "link": str}
        extra = set(raw) - set(fields) - {"v"}
        if extra:
            raise RequestError(f"unknown field {sorted(extra)[0]!r}")
        for name, kind in fields.items():
            if name not in raw or not isinstance(raw[name], kind) \
                    or isinstance(raw[name], bool):
                raise RequestError(f"field {name!r} missing or of the wrong type")
        r = cls(raw["id"], raw["action"], raw["entry"], raw["by"], float(raw["time"]),
                raw["to"], raw["link"])
        r.check()
        return r


def submit(paths: WebPaths, request: Request) -> Path:
    """Drop a request for the dispatcher (the web's side): written under a dot name, then
    renamed to its ID, so the dispatcher never reads half a request."""
    request.check()
    tmp = paths.requests / f".{request.id}.tmp"
    # 0644: the dispatcher (mail_owner, not this file's owner) must read it; nobody else
    # can list the directory to find it.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, request.to_bytes())
        os.fsync(fd)
    finally:
        os.close(fd)
    final = paths.requests / request.id
    os.rename(tmp, final)
    return final


# -- signed links ---------------------------------------------------------------------------

class LinkError(ValueError):
    """A link that is forged, damaged, expired or for something else."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_link(key: bytes, recipient: str, entry: str, expires: float) -> str:
    payload = _b64(json.dumps({"r": recipient, "e": entry, "x": int(expires)},
                              separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


@dataclass(frozen=True)
class Link:
    recipient: str
    entry: str
    expires: float


def verify_link(key: bytes, token: str, now: float | None = None) -> Link:
    """The recipient and entry a link is for. Raises LinkError."""
    if len(token) > 1024 or token.count(".") != 1:
        raise LinkError("not a holdscan link")
    payload, _, mac = token.partition(".")
    try:
        given = _unb64(mac)
    except (ValueError, TypeError):
        raise LinkError("not a holdscan link") from None
    want = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(given, want):
        raise LinkError("the link's signature does not match")
    try:
        raw: Any = json.loads(_unb64(payload))
        link = Link(str(raw["r"]), str(raw["e"]), float(raw["x"]))
    except (ValueError, TypeError, KeyError):
        raise LinkError("not a holdscan link") from None
    if (time.time() if now is None else now) > link.expires:
        raise LinkError("the link has expired")
    return link


__all__ = ["ACTIONS", "MAX_SIZE", "Link", "LinkError", "Request", "RequestError", "WebPaths",
           "sign_link", "submit", "verify_link"]
