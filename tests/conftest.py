"""Fixtures that start real parts: a private Postfix with an SMTP sink, and Redis."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest

from holdscan.lab.postfix import PostfixInstance, free_port
from holdscan.lab.redis import RedisServer
from holdscan.lab.sink import Sink


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink(free_port()) as s:
        yield s


@pytest.fixture
def postfix(sink: Sink) -> Iterator[PostfixInstance]:
    with PostfixInstance(sink.port) as pf:
        yield pf


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


def send(port: int, sender: str, recipients: list[str], message: bytes | str,
         **kwargs: object) -> None:
    """Send one message by SMTP to a private Postfix."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(sender, recipients, message, **kwargs)  # type: ignore[arg-type]


def simple_message(n: int, body: str = "hello\r\n", subject: str = "test") -> bytes:
    return (f"From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: {subject} {n}\r\n"
            f"Message-ID: <msg-{n}@holdscan.test>\r\n\r\n{body}").encode()


@pytest.fixture
def clamd():  # noqa: ANN201
    """A real clamd with a generated EICAR signature, on a UNIX socket."""
    from tests.support.clamd import ClamdServer
    with ClamdServer(tcp=False) as c:
        yield c
