"""The Celery app both sides use: the dispatcher as producer, the workers as consumers.

The settings are the ones that keep mail safe under an at-least-once broker:
acknowledge a task only after it ran (acks_late), give it back if the worker
process dies (reject_on_worker_lost), hold one task at a time per process
(prefetch 1), and finish a task well before the broker would hand it to
another worker (time limit < visibility timeout). JSON only: the broker
carries data from untrusted mail, and pickle would run it.
"""

from __future__ import annotations

from celery import Celery

from shared.config import Config
from shared.redisurl import is_sentinel, sentinel_kwargs

SCAN_TASK = "holdscan.scan_batch"


def make_app(cfg: Config) -> Celery:
    app = Celery("holdscan", broker=cfg.broker.url, set_as_current=False)
    b = cfg.broker
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,          # verdicts come back through the content store
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=b.task_time_limit,
        task_soft_time_limit=max(1, b.task_time_limit - 10),
        task_default_queue=b.queue,
        task_routes={SCAN_TASK: {"queue": b.queue}},
        broker_transport_options=transport_options(cfg),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        task_publish_retry=False,         # the dispatcher retries by itself, with backoff
        # Task events cost a worker about a third of its Celery CPU (three events per task,
        # measured with benchmarks/throughput.py --profile); Flower turns them on in the
        # workers while it runs, and broker.task_events has them always on.
        worker_send_task_events=b.task_events,
        task_send_sent_event=b.task_events,
        worker_hijack_root_logger=False,
    )
    return app


def send_queue(cfg: Config) -> str:
    """The queue this dispatcher sends its tasks to."""
    b = cfg.broker
    return f"{b.queue}.{b.content_store}" if b.queue_per_store and b.content_store else b.queue


def worker_queues(cfg: Config) -> list[str]:
    """The queues a worker takes tasks from; kombu's Redis transport takes from them in
    turn (round robin): after a task from one queue, the others come first."""
    b = cfg.broker
    if not b.queue_per_store:
        return [b.queue]
    return [b.queue] + [f"{b.queue}.{name}" for name in sorted(b.content_stores)]


def transport_options(cfg: Config) -> dict[str, object]:
    b = cfg.broker
    options: dict[str, object] = {"visibility_timeout": b.visibility_timeout}
    if is_sentinel(b.url):
        # Celery asks the Sentinels for the master at every new connection, so a worker
        # or a dispatcher that lost the master reconnects to the promoted replica.
        options["master_name"] = b.sentinel_master
        options["sentinel_kwargs"] = sentinel_kwargs(b.sentinel_password,
                                                     socket_timeout=5.0,
                                                     socket_connect_timeout=3.0)
    return options
