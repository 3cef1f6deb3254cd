"""The broker is no single point of failure: Redis behind Sentinel, its master killed
mid-run, a replica promoted, and the mail keeps flowing — real Postfix, dispatcher and
Celery workers as processes, three redis-server and three redis-sentinel on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from holdscan.lab.sentinel import SentinelGroup
from tests.support.mail import eicar_message, send, send_many
from tests.support.spool import assert_exactly_once, assert_spool_clean, quarantined
from tests.support.tools import require_program

pytestmark = [pytest.mark.postfix, pytest.mark.clamd, pytest.mark.redis]


@pytest.fixture
def sentinel_group() -> Iterator[SentinelGroup]:
    # A fixture, not a with-block in the test: the cluster is stopped before this is.
    require_program("redis-sentinel", "redis-sentinel")
    with SentinelGroup(replicas=2, down_after_ms=1000, failover_timeout_ms=3000) as group:
        yield group


def test_master_killed_mid_run_a_replica_takes_over(postfix, sink, cluster, clamd,
                                                   sentinel_group):
    group = sentinel_group
    c = cluster(broker_url=group.url, verdict_deadline=5.0, tables={"broker": {
        "url": group.url, "sentinel_master": group.master_name,
        "sentinel_password": group.sentinel_password,
        # A verdict lost with the master is waited for this long (+30 s) before resending.
        "task_time_limit": 10, "visibility_timeout": 60},
        # clamd's address in the URL form (unix:///path): the EICAR below must reach it.
        "scanners.clamav": {"addresses": ["unix://" + clamd.addresses[0][len("unix:"):]],
                            "timeout": 10.0}})
    c.start_worker(concurrency=1, name="a")
    c.start_worker(concurrency=1, name="b")
    c.start_dispatcher()
    ids = send_many(postfix.port, 30)
    send(postfix.port, "bad@example.test", ["rcpt@example.test"], eicar_message(1))
    c.wait_for(lambda: sink.count() >= 5, 60, "first deliveries")

    old = group.kill_master()
    ids += send_many(postfix.port, 30, start=30)     # while Sentinel fails over
    send(postfix.port, "bad@example.test", ["rcpt@example.test"], eicar_message(2))
    new = group.wait_failover(old)
    assert new != old and new in [s.port for s in group.servers]

    sink.wait_count(60, timeout=120)
    c.wait_for(lambda: len(quarantined(postfix)) == 2, 60, "both EICAR quarantined")
    time.sleep(1.5)         # a duplicate would arrive now
    assert_exactly_once(sink, ids)
    assert sink.count() == 60
    assert not postfix.queue_files("hold")
    assert_spool_clean(postfix)
    # Both the Celery broker and the content store lost the master and found the new one.
    log = c.logs("dispatcher")
    assert "content store is back" in log and "broker is back" in log, log[-3000:]
    # Blocking pops are replicated as plain ones, so a BLPOP on the new master came from
    # the dispatcher's verdict listener (the content store) after the failover. The
    # workers' side is shown by the 30 messages sent after the kill: their tasks could
    # only go through the new master. (Which command kombu fetches them with, BRPOP or
    # RPOP, is kombu's business, and varies after a reconnect.)
    stats = group.server(new).client().info("commandstats")
    assert stats.get("cmdstat_blpop", {}).get("calls", 0) > 0, stats


def test_check_reports_each_sentinel_setting(sentinel_group):
    from holdscan.check import check_broker

    g = sentinel_group
    ok = check_broker(g.url, master_name=g.master_name, sentinel_password=g.sentinel_password)
    assert ok.status == "ok" and "3 of 3 Sentinels answer" in ok.message, ok.line()
    wrong_name = check_broker(g.url, master_name="mymaster",
                              sentinel_password=g.sentinel_password)
    assert not wrong_name.ok and "sentinel_master" in wrong_name.fix, wrong_name.line()
    no_password = check_broker(g.url, master_name=g.master_name)
    assert not no_password.ok and "sentinel_password" in no_password.fix, no_password.line()
    url_without_redis_password = g.url.replace(f":{g.password}@", "")
    no_redis_password = check_broker(url_without_redis_password, master_name=g.master_name,
                                     sentinel_password=g.sentinel_password)
    assert not no_redis_password.ok and "requires a password" in no_redis_password.message, \
        no_redis_password.line()
    g.sentinels[0].stop()
    two = check_broker(g.url, master_name=g.master_name, sentinel_password=g.sentinel_password)
    assert two.ok and "2 of 3" in two.message, two.line()
