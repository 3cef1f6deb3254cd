"""The workers' Celery app, configured from HOLDSCAN_CONFIG / HOLDSCAN_BROKER.

`celery -A workers worker` and `holdscan worker` both start this app.
"""

from __future__ import annotations

from shared import config as config_mod
from shared.celeryapp import make_app

cfg = config_mod.load()
app = make_app(cfg)
app.conf.imports = ("workers.tasks",)
