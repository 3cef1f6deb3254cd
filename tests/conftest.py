"""Fixtures that start real parts: a private Postfix with an SMTP sink, Redis, clamd,
and holdscan itself (dispatcher and workers) on top of them.

    sink, postfix           a Postfix that holds the mail it receives, relaying released
                            mail to the sink; one pair per test
    shared_postfix          (postfix, sink) started once for a module, for tests that each
                            leave the queues empty; a module overrides shared_postfix_kind
                            for another kind of Postfix
    redis_server, clamd     one per test
    cluster                 makes holdscan's processes for a test: cluster(**dispatcher)

Helpers to import are in tests/support/ (tests/README.md lists them): mail.py (messages,
EICAR, send), spool.py (quarantine, exactly-once and clean-spool checks).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from holdscan.lab.clamd import ClamdServer
from holdscan.lab.cluster import Cluster, lab_config
from holdscan.lab.postfix import PostfixInstance, free_port
from holdscan.lab.redis import RedisServer
from holdscan.lab.sink import Sink
from holdscan.lab.spam import RspamdServer, SpamdServer, rspamd_available, spamd_available
from tests.support.tools import require


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink(free_port()) as s:
        yield s


@pytest.fixture
def postfix(sink: Sink) -> Iterator[PostfixInstance]:
    with PostfixInstance(sink.port) as pf:
        yield pf


@pytest.fixture(scope="module")
def shared_postfix_kind() -> Callable[[int], PostfixInstance]:
    """What shared_postfix starts: a function of the sink's port that makes the (not yet
    started) Postfix. A module defines its own fixture of this name for another kind, e.g.
    `return functools.partial(PostfixInstance, hold="smtpd")`."""
    return PostfixInstance


@pytest.fixture(scope="module")
def shared_postfix(shared_postfix_kind: Callable[[int], PostfixInstance]
                   ) -> Iterator[tuple[PostfixInstance, Sink]]:
    """One Postfix and its sink for a whole module (starting one costs seconds). The tests
    that share it leave its queues empty; what else they reset before each is theirs."""
    with Sink(free_port()) as sink, shared_postfix_kind(sink.port) as pf:
        yield pf, sink


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


@pytest.fixture
def clamd() -> Iterator[ClamdServer]:
    """A real clamd with a generated EICAR signature, on a UNIX socket."""
    with ClamdServer(tcp=False) as c:
        yield c


@pytest.fixture(scope="module")
def spamd() -> Iterator[SpamdServer]:
    """A real spamd, shared by a module (it takes seconds to start)."""
    require(spamd_available(), "spamd", "spamd")
    with SpamdServer() as server:
        yield server


@pytest.fixture(scope="module")
def rspamd() -> Iterator[RspamdServer]:
    """A real rspamd, shared by a module."""
    require(rspamd_available(), "rspamd", "rspamd")
    with RspamdServer() as server:
        yield server


@pytest.fixture
def cluster(request: pytest.FixtureRequest, clamd: ClamdServer,
            tmp_path: Path) -> Callable[..., Cluster]:
    """Makes holdscan's dispatcher and workers for this test (started by the test):

        c = cluster()                              on the `postfix` fixture, `redis_server`
        c = cluster(max_attempts=2)                other [dispatcher] settings
        c = cluster(tables={"headers": {...}})     other tables of the config (a table the
                                                   lab config has, e.g. "broker", is added to)
        c = cluster(extra_toml=RULES)              text added at the end of the config
        c = cluster(postfix=pf, broker_url=url)    another Postfix, another broker
        cluster(...); cluster(...)                 several: e.g. a mail host's dispatcher each,
                                                   and one for workers that serve them all

    Each is a holdscan.lab.cluster.Cluster with a config from lab_config (short deadlines)
    and clamd's UNIX socket; `postfix` and `redis_server` are started only when used.
    Every cluster is stopped after the test, before the fixtures it runs on.
    """
    made: list[Cluster] = []

    def make(*, postfix: PostfixInstance | None = None, broker_url: str | None = None,
             tables: dict[str, dict[str, Any]] | None = None, extra_toml: str = "",
             **dispatcher: Any) -> Cluster:
        pf = postfix if postfix is not None else request.getfixturevalue("postfix")
        broker = broker_url if broker_url is not None else \
            request.getfixturevalue("redis_server").url
        # Readable to Postfix's mail_owner, as whom the dispatcher runs.
        os.chmod(tmp_path, 0o755)
        name = "holdscan" if not made else f"holdscan-{len(made) + 1}"
        log_dir = tmp_path if not made else tmp_path / name
        log_dir.mkdir(exist_ok=True)
        cfg = lab_config(tmp_path / f"{name}.toml", pf.config_dir, broker, clamd.addresses[0],
                         tables=tables, **dispatcher)
        if extra_toml:
            with open(cfg, "a") as f:
                f.write(extra_toml)
        c = Cluster(cfg, log_dir)
        made.append(c)
        # Registered now, after any fixture fetched above: it runs before their teardown.
        request.node.addfinalizer(c.close)
        return c

    return make
