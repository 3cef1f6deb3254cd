"""The workers' Celery app, configured from HOLDSCAN_CONFIG / HOLDSCAN_BROKER.

`celery -A workers worker` and `holdscan worker` both start this app.
"""

from __future__ import annotations

from kombu import Exchange, Queue

from shared import config as config_mod
from shared.celeryapp import make_app, worker_queues

cfg = config_mod.load()
app = make_app(cfg)
# What a plain `celery -A workers.app worker` (no -Q) takes from, as `holdscan worker` does.
app.conf.task_queues = [Queue(q, Exchange(q), routing_key=q) for q in worker_queues(cfg)]
app.conf.imports = ("workers.tasks",)
