"""Redis addresses: a plain Redis (redis://, rediss://, unix://) or a group that Redis
Sentinel watches (sentinel://), and a client for either.

A Sentinel URL is the list Celery's broker takes, one sentinel:// per Sentinel:

    sentinel://:PASSWORD@10.0.0.1:26379/0;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379

The password and database in the first one are those of the Redis servers (the master
and its replicas share them); the Sentinels' own password, if they have one, and the
name of the group they watch are settings of their own (broker.sentinel_password,
broker.sentinel_master), as in Celery's transport options. Both sides — the Celery
broker and the content store — ask the Sentinels for the master at every new
connection, so after a failover they reach the promoted replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:       # redis itself only when a client is made: every command loads config
    import redis
    from redis.retry import Retry

SENTINEL_PORT = 26379
SENTINEL_FORM = "sentinel://[:PASSWORD@]HOST:PORT[/DB];sentinel://HOST:PORT;..."


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """Raises ValueError, naming the form, for anything else."""
        parts = [p.strip() for p in url.split(";") if p.strip()]
        if not parts:
            raise ValueError(f"empty Sentinel URL; the form is {SENTINEL_FORM}")
        sentinels = []
        first = None
        for part in parts:
            try:
                u = urlsplit(part)
                port = u.port or SENTINEL_PORT
            except ValueError as e:
                raise ValueError(f"{_redact_part(part)}: {e}; the form is {SENTINEL_FORM}") \
                    from None
            if u.scheme != "sentinel" or not u.hostname:
                raise ValueError(f"{_redact_part(part)} is not sentinel://HOST:PORT; "
                                 f"the form is {SENTINEL_FORM}")
            sentinels.append((u.hostname, port))
            if first is None:
                first = u
            elif u.password is not None and u.password != first.password:
                # Celery takes the password from the first address only.
                raise ValueError("give the Redis password once, in the first sentinel:// "
                                 f"address; the form is {SENTINEL_FORM}")
        assert first is not None
        path = first.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"database {path!r} is not a number; the form is {SENTINEL_FORM}")
        return cls(tuple(sentinels),
                   unquote(first.username) if first.username else None,
                   unquote(first.password) if first.password is not None else None,
                   int(path or 0))


def _redact_part(part: str) -> str:
    head, at, tail = part.rpartition("@")
    return f"{head.split('://', 1)[0]}://***@{tail}" if at else part


def is_sentinel(url: str) -> bool:
    return url.split(":", 1)[0].lower() == "sentinel"


def sentinel_kwargs(password: str, **socket_options: Any) -> dict[str, object]:
    """What redis-py (and Celery's transport option of that name) needs to talk to the
    Sentinels themselves."""
    kwargs: dict[str, object] = dict(socket_options)
    if password:
        kwargs["password"] = password
    return kwargs


def client(url: str, master_name: str = "", sentinel_password: str = "",
           socket_timeout: float = 10.0, socket_connect_timeout: float = 3.0,
           retry: Retry | None = None) -> redis.Redis:
    """A client for `url`; for a Sentinel URL, one that always talks to the current master.
    retry: redis-py's retry policy (its default when None)."""
    timeouts: dict[str, Any] = {"socket_timeout": socket_timeout,
                                "socket_connect_timeout": socket_connect_timeout}
    if retry is not None:
        timeouts["retry"] = retry
    import redis
    from redis.sentinel import Sentinel

    if not is_sentinel(url):
        return redis.Redis.from_url(url, **timeouts)
    s = SentinelURL.parse(url)
    sentinel = Sentinel(list(s.sentinels),
                        sentinel_kwargs=sentinel_kwargs(sentinel_password, **timeouts),
                        username=s.username, password=s.password, db=s.db, **timeouts)
    return sentinel.master_for(master_name)
