"""Structured log lines: `key=value` pairs after the message, so `grep ID` tells a
message's story and a log shipper can split the fields."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            base += " " + " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        return base


def _quote(v: object) -> str:
    s = str(v)
    return f'"{s}"' if (not s or any(c in s for c in ' "=')) else s


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def event(logger: logging.Logger, level: int, msg: str, **fields: object) -> None:
    logger.log(level, msg, extra={"fields": fields})


@dataclass(frozen=True)
class LogLine:
    """A log line as data: decided by pure code, written by the code that acts on it."""

    level: int
    message: str
    fields: dict[str, Any]

    def write(self, logger: logging.Logger) -> None:
        event(logger, self.level, self.message, **self.fields)
