"""Clients for the spam daemons: SpamAssassin's spamd (SPAMC protocol) and rspamd (HTTP).

Both answer the same question, so both return a SpamReport: the score, the
daemon's own required score, and the names of the rules (symbols) that fired.

    client = spam_client("spamd://127.0.0.1:783", timeout=30.0)
    report = client.check(message_bytes, Envelope("a@example.test", ["b@example.test"], "4Xy"))

Addresses, by URL:

    spamd://HOST[:PORT]         spamd over TCP (port 783)
    spamd:///path/to/socket     spamd on a Unix socket (spamd --socketpath)
    rspamd://HOST[:PORT]        rspamd's normal worker (port 11333), POST /checkv2
    http[s]://HOST[:PORT][/PATH]    rspamd at that URL (PATH defaults to /checkv2),
                                    e.g. through its proxy worker or a load balancer

One connection per message: spamd closes it after every answer anyway, and
a connection that is not kept cannot go stale, so a daemon that restarts is
used again by the next message without anything to reset here. `timeout`
bounds the whole exchange (connect, send, answer), not each read.

Errors: SpamUnavailable when no answer came (refused, timed out, closed
early); SpamReplyError when the daemon answered with an error or something
that is not an answer. Both mean: no score for this message. Their text
starts with the daemon's address; the caller knows which kind it asked.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

SPAMD_PORT = 783
RSPAMD_PORT = 11333
RSPAMD_PATH = "/checkv2"

# A spamd SYMBOLS answer is a line of rule names; an rspamd answer lists
# symbols with descriptions. Neither comes near this; a peer that sends more
# is not a spam daemon, and reading on would only cost memory.
MAX_REPLY = 4 << 20

# "Spam: True ; 15.0 / 5.0" (spamd says "Yes"/"No" in the SPAMC/1.2 dialect)
_SPAM_LINE = re.compile(r"^(True|False|Yes|No)\s*;\s*(-?[0-9.]+)\s*/\s*(-?[0-9.]+)\s*$",
                        re.IGNORECASE)


class SpamError(Exception):
    """No score for this message; the text says from which address and why."""


class SpamUnavailable(SpamError):
    """The daemon did not answer: connection refused, timed out or closed early."""


class SpamReplyError(SpamError):
    """The daemon answered with an error, or with something that is not an answer."""


@dataclass(frozen=True)
class Envelope:
    """What Postfix knows and the message headers may not say (rspamd uses it)."""

    sender: str
    recipients: tuple[str, ...]
    queue_id: str


@dataclass(frozen=True)
class SpamReport:
    score: float
    required: float             # the daemon's own threshold (rspamd: its reject score)
    symbols: tuple[str, ...]    # sorted, so that a verdict does not depend on reply order


class SpamClient(Protocol):
    kind: str                   # "spamd" or "rspamd", for messages
    where: str                  # the address, for messages

    def check(self, message: bytes, envelope: Envelope | None = None) -> SpamReport: ...


def spam_client(url: str, timeout: float) -> SpamClient:
    """A client for `url` (see the module docstring); ValueError says what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number from 1 to 65535") from None
    if scheme == "spamd":
        if parts.hostname:
            return SpamdClient((parts.hostname, port or SPAMD_PORT), timeout)
        if parts.path:
            return SpamdClient(parts.path, timeout)
        raise ValueError(f"{url!r}: give a host (spamd://127.0.0.1:783) or a socket path "
                         "(spamd:///run/spamd.sock)")
    if scheme in ("rspamd", "http", "https"):
        if not parts.hostname:
            raise ValueError(f"{url!r}: give a host, e.g. rspamd://127.0.0.1:11333")
        default_port = RSPAMD_PORT if scheme == "rspamd" else None
        path = RSPAMD_PATH if scheme == "rspamd" else (parts.path or RSPAMD_PATH)
        return RspamdClient(parts.hostname, port or default_port, path,
                            tls=scheme == "https", timeout=timeout)
    raise ValueError(f"{url!r}: use spamd://HOST:PORT, spamd:///SOCKET, rspamd://HOST:PORT "
                     "or an http(s):// URL of rspamd's /checkv2")


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise SpamReplyError(f"{what} is not a number: {text!r}") from None


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left


class SpamdClient:
    """SpamAssassin's spamd, by the SPAMC protocol (what spamc speaks)."""

    kind = "spamd"

    def __init__(self, address: tuple[str, int] | str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self.where = (address if isinstance(address, str)
                      else f"{address[0]}:{address[1]}" if ":" not in address[0]
                      else f"[{address[0]}]:{address[1]}")

    def _connect(self, deadline: _Deadline) -> socket.socket:
        if isinstance(self.address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(deadline.left())
                sock.connect(self.address)
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection(self.address, timeout=deadline.left())

    def _exchange(self, request: bytes) -> bytes:
        """Send `request`, return everything spamd answers (it closes when done)."""
        deadline = _Deadline(self.timeout)
        try:
            with self._connect(deadline) as sock:
                sock.settimeout(deadline.left())
                sock.sendall(request)
                # spamd reads on until end of input (as spamc sends it), whatever
                # Content-length says; without this it waits for our timeout.
                sock.shutdown(socket.SHUT_WR)
                chunks: list[bytes] = []
                size = 0
                while True:
                    sock.settimeout(deadline.left())
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_REPLY:
                        raise SpamReplyError(f"{self.where} answered more than "
                                             f"{MAX_REPLY} bytes")
        except OSError as e:        # refused, reset, no such socket, timed out
            raise SpamUnavailable(f"{self.where}: {e}") from None
        return b"".join(chunks)

    def ping(self) -> bool:
        try:
            return b" PONG" in self._exchange(b"PING SPAMC/1.5\r\n\r\n")
        except SpamError:
            return False

    def check(self, message: bytes, envelope: Envelope | None = None) -> SpamReport:
        # SYMBOLS: the verdict line plus the names of the rules that fired, and
        # not the whole message back (as PROCESS would send).
        request = (b"SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(message)) + message
        reply = self._exchange(request)
        if not reply:
            raise SpamUnavailable(f"{self.where} closed the connection without "
                                  "an answer")
        return self._parse(reply)

    def _parse(self, reply: bytes) -> SpamReport:
        head, sep, body = reply.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(None, 2)
        if len(status) < 2 or not status[0].startswith("SPAMD/"):
            raise SpamReplyError(f"{self.where}: not a SPAMD answer: {lines[0][:100]!r}")
        if status[1] != "0":
            # e.g. "SPAMD/1.0 76 Bad header line: ..." (EX_PROTOCOL), 64 EX_USAGE ...
            raise SpamReplyError(f"{self.where} answered {lines[0][:200]!r}")
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                fields[name.strip().lower()] = value.strip()
        m = _SPAM_LINE.match(fields.get("spam", ""))
        if not m:
            raise SpamReplyError(f"{self.where}: no score in the answer "
                                 f"(Spam: {fields.get('spam')!r})")
        length = fields.get("content-length")
        if length is not None and length.isdigit():
            body = body[:int(length)]
        names = body.decode("latin-1").strip()
        symbols = tuple(sorted({s.strip() for s in names.split(",") if s.strip()}))
        return SpamReport(score=_number(m.group(2), "spamd's score"),
                          required=_number(m.group(3), "spamd's required score"),
                          symbols=symbols)


class RspamdClient:
    """rspamd's /checkv2 (HTTP POST, the message as the body, the envelope in headers)."""

    kind = "rspamd"

    def __init__(self, host: str, port: int | None, path: str, tls: bool,
                 timeout: float) -> None:
        self.host, self.port, self.path, self.tls = host, port, path, tls
        self.timeout = timeout
        shown = f"[{host}]" if ":" in host else host
        self.where = (f"{'https' if tls else 'http'}://{shown}"
                      f"{f':{port}' if port else ''}{path}")

    def check(self, message: bytes, envelope: Envelope | None = None) -> SpamReport:
        status, body = self._post(message, envelope)
        if status != 200:
            raise SpamReplyError(f"{self.where} answered HTTP {status}: "
                                 f"{body[:200].decode('utf-8', 'replace')!r}")
        try:
            answer = json.loads(body)
        except ValueError:
            raise SpamReplyError(f"{self.where}: the answer is not JSON: "
                                 f"{body[:100]!r}") from None
        if isinstance(answer, dict) and "error" in answer:
            raise SpamReplyError(f"{self.where}: {str(answer['error'])[:200]}")
        if not isinstance(answer, dict) or "score" not in answer:
            raise SpamReplyError(f"{self.where}: no score in the answer "
                                 f"{str(answer)[:200]!r}")
        symbols: Any = answer.get("symbols") or {}
        names = symbols.keys() if isinstance(symbols, dict) else []
        return SpamReport(score=_number(answer["score"], "rspamd's score"),
                          required=_number(answer.get("required_score", 0.0),
                                           "rspamd's required score"),
                          symbols=tuple(sorted(str(n) for n in names)))

    def _post(self, message: bytes, envelope: Envelope | None) -> tuple[int, bytes]:
        deadline = _Deadline(self.timeout)
        cls = http.client.HTTPSConnection if self.tls else http.client.HTTPConnection
        try:
            conn = cls(self.host, self.port, timeout=deadline.left())
            try:
                conn.putrequest("POST", self.path, skip_accept_encoding=True)
                conn.putheader("Content-Length", str(len(message)))
                if envelope is not None:
                    for name, value in _envelope_headers(envelope):
                        conn.putheader(name, value)
                conn.endheaders()
                if conn.sock is not None:
                    conn.sock.settimeout(deadline.left())
                conn.send(message)
                if conn.sock is not None:
                    conn.sock.settimeout(deadline.left())
                response = conn.getresponse()
                if conn.sock is not None:
                    conn.sock.settimeout(deadline.left())
                body = response.read(MAX_REPLY + 1)
            finally:
                conn.close()
        except OSError as e:        # refused, reset, timed out; also RemoteDisconnected
            raise SpamUnavailable(f"{self.where}: {e}") from None
        except http.client.HTTPException as e:
            raise SpamReplyError(f"{self.where}: not an HTTP answer: "
                                 f"{type(e).__name__}: {e}") from None
        if len(body) > MAX_REPLY:
            raise SpamReplyError(f"{self.where} answered more than {MAX_REPLY} bytes")
        return response.status, body


def _envelope_headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    """rspamd's request headers for the envelope: one Rcpt per recipient.

    Addresses may be UTF-8 (SMTPUTF8); header values go as bytes. A CR, LF or
    NUL cannot be in an address Postfix accepted, but would end the header
    here, so they are dropped rather than trusted.
    """
    def clean(value: str) -> bytes:
        return value.translate({0: None, 10: None, 13: None}).encode("utf-8")

    out: list[tuple[str, bytes]] = [("Queue-Id", clean(envelope.queue_id))]
    if envelope.sender:         # the null sender (bounces): rspamd takes no From as <>
        out.append(("From", clean(envelope.sender)))
    out += [("Rcpt", clean(r)) for r in envelope.recipients]
    return out
