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

Each request names its content store (one per mail host, so that message bytes do not
all cross one Redis); the worker maps the name to a URL ([broker.content_stores]) and
keeps one client per store. A request naming a store this worker does not know is not
scanned: the worker logs the setting to add and cannot tell the dispatcher (its reply
list is in that store), so the message stays in hold, counts no attempt, and its
dispatcher sends it again when its verdict deadline passes; a worker that knows the
store then scans it.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import defaultdict
from typing import Any

import redis

from shared.celeryapp import SCAN_TASK
from shared.config import UnknownStore
from shared.contract import ContractError, ScanRequest, Started
from shared.crashpoints import crashpoint
from workers.app import app, cfg

log = logging.getLogger("holdscan.worker")

_state: dict[str, Any] = {}


def _store(name: str = "") -> redis.Redis:
    """The client of a content store by name ("": the default store), made once per
    process. Raises UnknownStore."""
    stores: dict[str, redis.Redis] = _state.setdefault("stores", {})
    if name not in stores:
        stores[name] = cfg.content_store(socket_timeout=30, socket_connect_timeout=5, name=name)
    return stores[name]


def _scanners() -> list[Any]:
    # Built once per worker process: the clamd client keeps its connection state.
    if "scanners" not in _state:
        from workers.scanners import build_scanners
        _state["scanners"] = build_scanners(cfg)
    return _state["scanners"]


def worker_name() -> str:
    return cfg.worker.name or socket.gethostname()


Replies = dict[tuple[str, str], list[dict[str, Any]]]    # (store, reply list) -> items


def scan_requests(requests: list[Any]) -> Replies:
    """Scan a batch; returns verdicts grouped by the store and reply list they go to."""
    from workers.engine import batch_line, scan_message

    by_store: dict[str, list[ScanRequest]] = defaultdict(list)
    for r in requests:
        try:
            request = ScanRequest.from_dict(r)
        except ContractError as e:
            log.error("dropping a malformed scan request: %s", e)
            continue
        by_store[request.store].append(request)
    work: list[tuple[ScanRequest, bytes]] = []
    for store, valid in by_store.items():
        try:
            contents = _store(store).mget([r.content_key for r in valid])
        except UnknownStore as e:
            log.error("not scanning %d message(s) (queue_id=%s): %s; they stay in hold and "
                      "their dispatcher sends them again after its verdict deadline", len(valid),
                      ",".join(r.queue_id for r in valid), e)
            note_unknown_store(store)
            continue
        # Already handled, or expired: the dispatcher sends it again if it still needs it.
        work += [(r, raw) for r, raw in zip(valid, contents, strict=True)
                 if isinstance(raw, bytes)]
    announce_started([r for r, _ in work])
    replies: Replies = defaultdict(list)
    verdicts = []
    for request, raw in work:
        crashpoint("worker.before_scan")
        verdict = scan_message(raw, request, _scanners(), cfg.headers, worker_name())
        replies[(request.store, request.reply_to)].append(verdict.to_dict())
        verdicts.append(verdict)
    if verdicts:
        log.info("%s", batch_line(verdicts))
    return replies


def unknown_store_key(name: str) -> str:
    return f"holdscan:unknown-store:{name}"


def note_unknown_store(name: str) -> None:
    """Leave a note in the default store for `holdscan check` (it outlives this log line:
    an administrator runs the check when mail waits, maybe long after the request)."""
    try:
        _store().set(unknown_store_key(name), json.dumps({"worker": worker_name(),
                                                          "at": time.time()}),
                     ex=cfg.broker.content_ttl)
    except redis.RedisError as e:
        log.debug("could not note the unknown store %r: %s", name, e)


def announce_started(requests: list[ScanRequest]) -> None:
    by_reply: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in requests:
        by_reply[(r.store, r.reply_to)].append(r.queue_id)
    push(by_reply, lambda queue_ids: Started(queue_ids, worker_name()).to_dict())


def push(replies: dict[tuple[str, str], Any], item: Any) -> None:
    """RPUSH item(value) onto each (store, reply list), one pipeline per store."""
    stores = {store for store, _ in replies}
    for store in stores:
        pipe = _store(store).pipeline(transaction=False)
        for (s, reply_to), value in replies.items():
            if s == store:
                pipe.rpush(reply_to, json.dumps(item(value)))
                pipe.expire(reply_to, cfg.broker.content_ttl)
        pipe.execute()


@app.task(name=SCAN_TASK)
def scan_batch(requests: list[Any]) -> None:
    push(scan_requests(requests), lambda verdicts: verdicts)
