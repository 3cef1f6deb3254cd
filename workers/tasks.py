"""The scan task: fetch each message from the content store, scan it, push the verdicts.

A batch of scan requests travels as one task (measured: one task per message
costs more CPU than Postfix spends on the message). Message bytes never travel
in the broker: each request names a key in the content store (Redis), which
the dispatcher deletes once it has applied the verdict. So a task that comes
round again after its message was handled — a redelivery, a duplicate, a
poison message the dispatcher gave up on — finds nothing and does nothing.

Before scanning, the task tells each dispatcher which of its messages it has
started (contract.Started). Only such a message counts as an attempt: a
message whose worker then dies is on its way to being given up on, while a
message that no worker ever took (workers stopped, wrong queue) just waits.
"""

from __future__ import annotations

import json
import logging
import socket
from collections import defaultdict
from typing import Any

import redis

from shared.celeryapp import SCAN_TASK
from shared.contract import ContractError, ScanRequest, Started
from shared.crashpoints import crashpoint
from workers.app import app, cfg

log = logging.getLogger("holdscan.worker")

_state: dict[str, Any] = {}


def _store() -> redis.Redis:
    if "store" not in _state:
        _state["store"] = cfg.content_store(socket_timeout=30, socket_connect_timeout=5)
    return _state["store"]


def _scanners() -> list[Any]:
    # Built once per worker process: the clamd client keeps its connection state.
    if "scanners" not in _state:
        from workers.scanners import build_scanners
        _state["scanners"] = build_scanners(cfg)
    return _state["scanners"]


def worker_name() -> str:
    return cfg.worker.name or socket.gethostname()


def scan_requests(requests: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """Scan a batch; returns verdicts grouped by the reply list they go to."""
    from workers.engine import batch_line, scan_message

    valid: list[ScanRequest] = []
    for r in requests:
        try:
            valid.append(ScanRequest.from_dict(r))
        except ContractError as e:
            log.error("dropping a malformed scan request: %s", e)
    if not valid:
        return {}
    contents = _store().mget([r.content_key for r in valid])
    # Already handled, or expired: the dispatcher sends it again if it still needs it.
    work = [(r, raw) for r, raw in zip(valid, contents, strict=True) if isinstance(raw, bytes)]
    announce_started([r for r, _ in work])
    replies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    verdicts = []
    for request, raw in work:
        crashpoint("worker.before_scan")
        verdict = scan_message(raw, request, _scanners(), cfg.headers, worker_name())
        replies[request.reply_to].append(verdict.to_dict())
        verdicts.append(verdict)
    if verdicts:
        log.info("%s", batch_line(verdicts))
    return replies


def announce_started(requests: list[ScanRequest]) -> None:
    by_reply: dict[str, list[str]] = defaultdict(list)
    for r in requests:
        by_reply[r.reply_to].append(r.queue_id)
    if not by_reply:
        return
    pipe = _store().pipeline(transaction=False)
    for reply_to, queue_ids in by_reply.items():
        pipe.rpush(reply_to, json.dumps(Started(queue_ids, worker_name()).to_dict()))
        pipe.expire(reply_to, cfg.broker.content_ttl)
    pipe.execute()


@app.task(name=SCAN_TASK)
def scan_batch(requests: list[Any]) -> None:
    replies = scan_requests(requests)
    if not replies:
        return
    pipe = _store().pipeline(transaction=False)
    for reply_to, verdicts in replies.items():
        pipe.rpush(reply_to, json.dumps(verdicts))
        pipe.expire(reply_to, cfg.broker.content_ttl)
    pipe.execute()
