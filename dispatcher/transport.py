"""How scan requests reach workers and verdicts come back.

CeleryTransport: message bytes go to the content store (Redis, one key per
held message, with a TTL), one Celery task carries a batch of requests that
name those keys, and workers push verdicts onto this dispatcher's own reply
list, which one thread here reads with BLPOP — no polling per message. The content
store is this mail host's own when `[broker] content_store` names it: the requests carry
that name, and the workers map it to the store's URL.

Content by reference rather than inline in the task: the broker never holds
message bytes longer than the TTL, a task that outlives its message (a
redelivery after the dispatcher gave up on a poison message) finds nothing to
scan, and a JSON task stays small (inline bytes would need base64).

LocalTransport (`holdscan dispatch --local N`): the same scan code in N local
processes, no broker; for a single host.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Protocol

import redis

from shared.celeryapp import SCAN_TASK, make_app, send_queue
from shared.config import Config
from shared.contract import ScanRequest, Started

log = logging.getLogger("holdscan.transport")

OnVerdicts = Callable[[list[Any]], None]
OnState = Callable[[str, str], None]     # (component, "up" | "down: reason")


class Transport(Protocol):
    """What the dispatcher needs of a transport (CeleryTransport, LocalTransport)."""

    def key(self, queue_id: str) -> str: ...
    def start(self, on_verdicts: Any, on_state: Any) -> None: ...
    def submit(self, batch: list[tuple[ScanRequest, bytes]], expires: float) -> None: ...
    def forget(self, keys: list[str]) -> None: ...
    def close(self) -> None: ...


class TransportError(RuntimeError):
    """Requests could not be handed over; they stay in hold and are sent again."""


def content_key(dispatcher_id: str, queue_id: str) -> str:
    return f"holdscan:msg:{dispatcher_id}:{queue_id}"


def reply_key(dispatcher_id: str) -> str:
    return f"holdscan:verdicts:{dispatcher_id}"


def default_dispatcher_id() -> str:
    """This host's name: the dispatcher's ID, and so the name of its reply list."""
    return socket.gethostname()


class CeleryTransport:
    def __init__(self, cfg: Config, dispatcher_id: str) -> None:
        self.cfg = cfg
        self.dispatcher_id = dispatcher_id
        self.reply_to = reply_key(dispatcher_id)
        self.app = make_app(cfg)
        self.queue = send_queue(cfg)
        self.store = cfg.content_store(socket_timeout=10, socket_connect_timeout=3)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def key(self, queue_id: str) -> str:
        return content_key(self.dispatcher_id, queue_id)

    def start(self, on_verdicts: OnVerdicts, on_state: OnState) -> None:
        self._thread = threading.Thread(target=self._listen, args=(on_verdicts, on_state),
                                        name="verdicts", daemon=True)
        self._thread.start()

    def submit(self, batch: list[tuple[ScanRequest, bytes]], expires: float) -> None:
        try:
            pipe = self.store.pipeline(transaction=False)
            for request, raw in batch:
                pipe.set(request.content_key, raw, ex=self.cfg.broker.content_ttl)
            pipe.execute()
            # argsrepr: what Celery shows of the task (logs, Flower); without it Celery
            # would build a repr of every request in the batch, for each task sent.
            self.app.send_task(SCAN_TASK, args=[[r.to_dict() for r, _ in batch]],
                               queue=self.queue, expires=expires, retry=False,
                               argsrepr=f"[{len(batch)} scan requests: "
                                        f"{' '.join(r.queue_id for r, _ in batch)}]",
                               kwargsrepr="{}")
        except Exception as e:   # redis, kombu and socket errors all mean "not handed over"
            raise TransportError(f"{type(e).__name__}: {e}") from e

    def forget(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            self.store.delete(*keys)
        except redis.RedisError as e:
            # The TTL removes them anyway; a late task finds its content and scans once more.
            log.debug("could not delete content keys: %s", e)

    def _listen(self, on_verdicts: OnVerdicts, on_state: OnState) -> None:
        # A read that times out drops the connection, and with it a reply Redis may already
        # have popped for us (that message would wait for its deadline): the socket timeout
        # stays far above BLPOP's own 1 s, so only a Redis stalled for half a minute does so.
        client = self.cfg.content_store(socket_timeout=30, socket_connect_timeout=3)
        backoff = 0.5
        up: bool | None = None
        while not self._stop.is_set():
            try:
                item = client.blpop([self.reply_to], timeout=1)
                if up is not True:
                    on_state("content store", "up")
                    up, backoff = True, 0.5
                if item is None:
                    continue
                on_verdicts(json.loads(item[1]))
            except (redis.RedisError, OSError) as e:
                if up is not False:
                    on_state("content store", f"down: {e}")
                    up = False
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10)
            except ValueError as e:
                log.error("dropping an unreadable verdict message: %s", e)

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)


# -- local processes ------------------------------------------------------------------
_local: dict[str, Any] = {}


def _local_init(cfg: Config) -> None:
    from workers.scanners import build_scanners
    _local["cfg"] = cfg
    _local["scanners"] = build_scanners(cfg)


def _local_scan(batch: list[tuple[dict[str, Any], bytes]]) -> list[dict[str, Any]]:
    import socket

    from workers.engine import batch_line, scan_message
    cfg: Config = _local["cfg"]
    verdicts = []
    for req_dict, raw in batch:
        request = ScanRequest.from_dict(req_dict)
        verdicts.append(scan_message(raw, request, _local["scanners"], cfg.headers,
                                     cfg.worker.name or f"{socket.gethostname()}-local"))
    logging.getLogger("holdscan.worker").info("%s", batch_line(verdicts))
    return [v.to_dict() for v in verdicts]


def _new_pool(cfg: Config, processes: int) -> ProcessPoolExecutor:
    # "spawn", never fork: a forked child would inherit the descriptors of our claimed hold
    # files, and with them their flocks, so qmgr would find released mail still locked.
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_local_init, initargs=(cfg,))


class LocalTransport:
    def __init__(self, cfg: Config, processes: int) -> None:
        self.cfg = cfg
        self.processes = processes
        self.pool = _new_pool(cfg, processes)
        self._on_verdicts: OnVerdicts | None = None
        self._on_state: OnState | None = None

    def key(self, queue_id: str) -> str:
        return f"local:{queue_id}"

    def start(self, on_verdicts: OnVerdicts, on_state: OnState) -> None:
        self._on_verdicts, self._on_state = on_verdicts, on_state

    def submit(self, batch: list[tuple[ScanRequest, bytes]], expires: float) -> None:
        assert self._on_verdicts is not None
        # A local pool starts what it is given: each message is an attempt from now on.
        self._on_verdicts([Started([r.queue_id for r, _ in batch], "local").to_dict()])
        fut = self.pool.submit(_local_scan, [(r.to_dict(), raw) for r, raw in batch])
        fut.add_done_callback(self._done)

    def _done(self, fut: Future[list[dict[str, Any]]]) -> None:
        assert self._on_verdicts is not None and self._on_state is not None
        try:
            self._on_verdicts(fut.result())
        except Exception as e:  # noqa: BLE001  (a dead pool process: no verdict; the deadline resends)
            self._on_state("local scanner", f"down: {type(e).__name__}: {e}")
            try:
                self.pool.shutdown(wait=False, cancel_futures=True)
            finally:
                self.pool = _new_pool(self.cfg, self.processes)
                time.sleep(0.5)

    def forget(self, keys: list[str]) -> None:
        pass

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
