"""Several mail hosts, one worker cluster: each host's dispatcher has its own content store
(its own Redis), all share the broker and the workers, which map store names to URLs
([broker.content_stores]). Real Postfix instances, Redis servers, clamd and Celery workers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from holdscan.lab.postfix import PostfixInstance, free_port
from holdscan.lab.redis import RedisServer
from holdscan.lab.sink import Sink
from tests.support.mail import send, simple_message
from tests.support.spool import assert_exactly_once, assert_spool_clean

pytestmark = [pytest.mark.postfix, pytest.mark.clamd, pytest.mark.redis]

BIG = 100 * 1024        # host A's messages: their bytes must show in one store only


@pytest.fixture
def stores() -> Iterator[tuple[RedisServer, RedisServer]]:
    with RedisServer() as a, RedisServer() as b:
        yield a, b


@pytest.fixture
def second_host() -> Iterator[tuple[PostfixInstance, Sink]]:
    with Sink(free_port()) as sink, PostfixInstance(sink.port) as pf:
        yield pf, sink


def input_bytes(r: RedisServer) -> int:
    return int(r.client().info("stats")["total_net_input_bytes"])


def send_range(pf: PostfixInstance, numbers: range, body: str) -> list[str]:
    for n in numbers:
        send(pf.port, "sender@example.test", ["rcpt@example.test"], simple_message(n, body=body))
    return [f"<msg-{n}@holdscan.test>" for n in numbers]


def test_two_mail_hosts_share_the_workers_each_with_its_own_content_store(
        postfix, sink, second_host, redis_server, stores, cluster):
    pf_b, sink_b = second_host
    store_a, store_b = stores
    named = {"mxa": store_a.url, "mxb": store_b.url}
    # Each host's config names its own store; the workers' config maps both names. A
    # queue per store: the workers take from both hosts' queues in turn.
    host_a = cluster(postfix=postfix, tables={"broker": {
        "content_store": "mxa", "content_url": store_a.url, "queue_per_store": True}})
    host_b = cluster(postfix=pf_b, tables={"broker": {
        "content_store": "mxb", "content_url": store_b.url, "queue_per_store": True}})
    workers = cluster(postfix=postfix, tables={"broker": {"queue_per_store": True},
                                               "broker.content_stores": named})
    line = "a line of host A's message, to make it big\r\n"
    ids_a = send_range(postfix, range(0, 20), line * (BIG // len(line)))
    ids_b = send_range(pf_b, range(1000, 1020), "host B\r\n")
    postfix.wait_held(20)
    pf_b.wait_held(20)
    before = {"a": input_bytes(store_a), "b": input_bytes(store_b),
              "broker": input_bytes(redis_server)}
    # The same dispatcher ID on both hosts: each one's reply list is in its own store.
    host_a.start_dispatcher("--id", "mx")
    host_b.start_dispatcher("--id", "mx")
    workers.start_worker(concurrency=1, name="a")
    workers.start_worker(concurrency=1, name="b")
    sink.wait_count(20, timeout=60)
    sink_b.wait_count(20, timeout=60)
    assert_spool_clean(postfix)
    assert_spool_clean(pf_b)
    # Each host delivered its own messages once, and none of the other's.
    assert_exactly_once(sink, ids_a)
    assert_exactly_once(sink_b, ids_b)
    assert {d.message_id for d in sink.deliveries()} == set(ids_a)
    assert {d.message_id for d in sink_b.deliveries()} == set(ids_b)
    # Host A's 2 MB went into store A only: not into B's store, not through the broker.
    grew = {"a": input_bytes(store_a) - before["a"], "b": input_bytes(store_b) - before["b"],
            "broker": input_bytes(redis_server) - before["broker"]}
    assert grew["a"] > 20 * BIG, grew
    assert grew["b"] < 2 * BIG and grew["broker"] < 2 * BIG, grew
    assert not store_a.client().keys("holdscan:msg:*")
    assert not store_b.client().keys("holdscan:msg:*")
    # The tasks went through each host's own queue, which the workers bound.
    bindings = {k.decode() for k in redis_server.client().keys("_kombu.binding.*")}
    assert {"_kombu.binding.holdscan.mxa", "_kombu.binding.holdscan.mxb"} <= bindings, bindings


def test_a_store_the_workers_do_not_know_waits_in_hold_until_one_does(
        postfix, sink, redis_server, stores, cluster):
    store_c = stores[0]
    host = cluster(postfix=postfix, verdict_deadline=4.0,
                   tables={"broker": {"content_store": "mxc", "content_url": store_c.url}})
    unaware = cluster(postfix=postfix, tables={"broker.content_stores": {"mxa": stores[1].url}})
    aware = cluster(postfix=postfix, tables={"broker.content_stores": {"mxc": store_c.url}})
    ids = send_range(postfix, range(0, 3), "hello\r\n")
    postfix.wait_held(3)
    host.start_dispatcher("--id", "mxc-host")
    w = unaware.start_worker(concurrency=1, name="unaware")
    unaware.wait_for(lambda: "[broker.content_stores]" in unaware.logs("worker"), 30,
                     "the worker's error about the unknown store")
    log = unaware.logs("worker")
    assert "'mxc' is not in this worker's configuration" in log
    assert 'add `mxc = "redis://..."`' in log and "verdict deadline" in log
    # Not scanned, not lost, no attempt counted: still in hold.
    assert sink.count() == 0
    assert len(postfix.queue_files("hold")) == 3
    check = subprocess.run([sys.executable, "-m", "holdscan.cli", "check", "--config",
                            str(unaware.config)], capture_output=True, text=True, timeout=60)
    [names] = [x for x in check.stdout.splitlines() if x[5:].startswith("content store names:")]
    assert names.startswith("FAIL") and "'mxc'" in names, check.stdout
    assert "[broker.content_stores]" in names
    assert check.returncode == 1
    # A worker that knows the store takes the resent requests: each message delivered once.
    unaware.kill_worker(w)
    aware.start_worker(concurrency=1, name="aware")
    sink.wait_count(3, timeout=30)
    assert_exactly_once(sink, ids)
    assert_spool_clean(postfix)
    check = subprocess.run([sys.executable, "-m", "holdscan.cli", "check", "--config",
                            str(aware.config)], capture_output=True, text=True, timeout=60)
    # The note the first worker left is answered by this configuration.
    assert "ok   content store names: 1 named store(s)" in check.stdout, check.stdout


def test_with_a_queue_per_store_an_unmapped_stores_queue_waits_and_check_names_it(
        postfix, sink, redis_server, cluster):
    per_store = {"queue_per_store": True}
    host = cluster(postfix=postfix, tables={"broker": {"content_store": "mxq", **per_store}})
    unaware = cluster(postfix=postfix, tables={"broker": per_store,
                                               "broker.content_stores": {"mxa": "redis://x/0"}})
    aware = cluster(postfix=postfix, tables={"broker": per_store, "broker.content_stores": {
        "mxq": redis_server.url}})
    ids = send_range(postfix, range(0, 3), "hello\r\n")
    postfix.wait_held(3)
    host.start_dispatcher("--id", "mxq-host")
    host.wait_for(lambda: redis_server.client().llen("holdscan.mxq") > 0, 30,
                  "a task in the host's own queue")
    check = subprocess.run([sys.executable, "-m", "holdscan.cli", "check", "--config",
                            str(unaware.config)], capture_output=True, text=True, timeout=60)
    [names] = [x for x in check.stdout.splitlines() if x[5:].startswith("content store names:")]
    assert names.startswith("FAIL") and "'mxq'" in names, check.stdout
    aware.start_worker(concurrency=1, name="aware")
    sink.wait_count(3, timeout=30)
    assert_exactly_once(sink, ids)
    assert_spool_clean(postfix)
