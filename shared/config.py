"""holdscan's configuration: one TOML file, sensible defaults, environment overrides.

Every section is a dataclass; a key the file sets that we do not know is an
error that names the key (a typo must not silently fall back to a default).
Scanner sections (`[scanners.NAME]`) are kept as raw tables and checked by the
scanner that owns them, so adding a scanner touches one file.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.contract import STORE_NAME_RE
from shared.redisurl import SentinelURL, is_sentinel

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


class ConfigError(ValueError):
    """The configuration file or an option is wrong; the message says how to fix it."""


@dataclass
class PostfixConfig:
    config_directory: str = ""      # `postfix -c DIR`; empty: Postfix's default
    queue_directory: str = ""       # empty: `postconf -h queue_directory`
    mail_owner: str = ""            # empty: `postconf -h mail_owner`


@dataclass
class DispatcherConfig:
    state_dir: str = ""             # empty: <queue_directory>/holdscan
    quarantine_dir: str = ""        # empty: <state_dir>/quarantine
    max_in_flight: int = 5000
    batch_size: int = 20            # messages per Celery task
    batch_wait: float = 0.02        # seconds to wait for a batch to fill
    verdict_deadline: float = 300.0 # seconds for a worker to start it, else sent again
    max_attempts: int = 5
    on_max_attempts: str = "quarantine"   # or "hold": leave it in hold for a human
    rescan_interval: float = 30.0
    metrics_address: str = ""       # "127.0.0.1:9911" to serve Prometheus metrics
    local_workers: int = 0          # > 0: scan in local processes, no broker
    quarantine_days: int = 0        # > 0: delete quarantine entries older than this, daily


@dataclass
class BrokerConfig:
    url: str = DEFAULT_BROKER       # also HOLDSCAN_BROKER
    content_url: str = ""           # Redis for message content and verdicts; empty: url
    # A dispatcher: the name of its own content store (content_url), which the workers
    # look up in their content_stores; empty: the workers' default store.
    content_store: str = ""         # also HOLDSCAN_CONTENT_STORE
    # A worker: the stores it can fetch from and reply to, by name (never sent in tasks:
    # URLs carry passwords). A request naming no store uses content_url.
    content_stores: dict[str, str] = field(default_factory=dict)
    # A Celery queue per content store (queue.NAME): a dispatcher sends to its store's,
    # a worker takes from `queue` and from each of its content_stores' in turn, so that
    # a mail host that floods cannot make the others' tasks wait behind its own.
    queue_per_store: bool = False
    sentinel_master: str = "mymaster"   # with sentinel:// URLs: the group Sentinel watches
    sentinel_password: str = ""     # the Sentinels' requirepass; HOLDSCAN_SENTINEL_PASSWORD
    queue: str = "holdscan"
    visibility_timeout: int = 3600
    task_time_limit: int = 600      # must stay below visibility_timeout
    content_ttl: int = 3600
    task_events: bool = False       # Celery task events always on (Flower turns them on anyway)


@dataclass
class WorkerConfig:
    concurrency: int = 0            # 0: one process per core
    name: str = ""


@dataclass
class HeadersConfig:
    prefix: str = "X-Holdscan"
    add_status_header: bool = True
    status_header_on_clean: bool = False   # True: rewrite every clean message to add it
    subject_tags: dict[str, str] = field(default_factory=dict)   # action -> tag


@dataclass
class NotifyConfig:
    admin: str = ""                 # address for notices; empty: none
    recipients: bool = False        # also tell the recipients of stopped mail
    on: list[str] = field(default_factory=lambda: ["quarantine", "strip"])
    sender: str = ""                # From: of notices; empty: postmaster@<host name>
    admin_template: str = ""        # file; empty: built in
    recipient_template: str = ""    # file; empty: built in
    rate_limit: int = 20            # notices per address per hour; 0: no limit
    sendmail: str = "/usr/sbin/sendmail"


NOTIFY_ON = ("quarantine", "strip", "discard")


@dataclass
class WebConfig:
    """`holdscan web` and the dispatcher's side of it (docs/web.md)."""
    enabled: bool = False           # the dispatcher takes requests from the web, sends digests
    listen: str = "127.0.0.1:8025"
    user: str = "holdscan-web"      # the web process runs as this user (dropped from root)
    group: str = "holdscan-web"     # may read quarantine metadata and drop requests
    data_dir: str = "/var/lib/holdscan-web"    # the web's own: index, admins, session key
    auth: str = "password"          # or "header": the reverse proxy names the user
    auth_header: str = "X-Remote-User"
    trusted_proxies: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])
    cookie_secure: bool = False     # true behind a TLS proxy (docs/web.md)
    session_hours: float = 8.0
    login_attempts: int = 5         # failed logins per client and per name in 5 minutes
    base_url: str = ""              # https://quarantine.example.com: links in digests
    digest: bool = False            # a daily digest to each recipient of quarantined mail
    digest_sender: str = ""         # From: of digests; empty: notify.sender's default
    link_days: int = 7              # digest links expire after this many days
    recipient_release: list[str] = field(default_factory=lambda: ["spam", "blocked"])
    page_size: int = 50


# A recipient may never release these, whatever [web] recipient_release says.
NEVER_RECIPIENT_RELEASE = ("infected",)


@dataclass
class Config:
    postfix: PostfixConfig = field(default_factory=PostfixConfig)
    dispatcher: DispatcherConfig = field(default_factory=DispatcherConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    headers: HeadersConfig = field(default_factory=HeadersConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    web: WebConfig = field(default_factory=WebConfig)
    scanners: dict[str, dict[str, Any]] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    source: str = ""                # the file this came from, for messages

    @property
    def content_url(self) -> str:
        """The default content store: a dispatcher's own, a worker's for unnamed requests."""
        b = self.broker
        return b.content_url or b.content_stores.get(b.content_store, "") or b.url

    def store_url(self, name: str) -> str:
        """The URL of the content store a request names; "" names the default store.
        Raises UnknownStore for a name this configuration does not map."""
        if not name:
            return self.content_url
        url = self.broker.content_stores.get(name)
        if url is None:
            raise UnknownStore(name)
        return url

    def content_store(self, socket_timeout: float, socket_connect_timeout: float,
                      name: str = "") -> Any:
        """A Redis client for a content store (the default one, or one by name); through
        Sentinel for a sentinel:// URL."""
        from shared.redisurl import client
        b = self.broker
        return client(self.store_url(name), b.sentinel_master, b.sentinel_password,
                      socket_timeout=socket_timeout,
                      socket_connect_timeout=socket_connect_timeout)


class UnknownStore(LookupError):
    """A request names a content store that [broker.content_stores] does not map."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"the content store {name!r} is not in this worker's configuration; add "
            f'`{name} = "redis://..."` (its URL) under [broker.content_stores]')
        self.name = name


def _fill(obj: Any, table: dict[str, Any], where: str) -> None:
    known = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in table.items():
        f = known.get(key)
        if f is None:
            raise ConfigError(f"{where}: unknown setting {key!r}; "
                              f"known: {', '.join(sorted(known))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            _fill(current, value, f"{where} [{key}]")
            continue
        if isinstance(current, bool):
            ok = isinstance(value, bool)
        elif isinstance(current, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(current, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(current))
        if not ok:
            raise ConfigError(f"{where}: {key} must be {type(current).__name__}, got {value!r}")
        setattr(obj, key, value)


def load(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Read the TOML file (if any), then apply HOLDSCAN_* environment overrides."""
    env = dict(os.environ) if env is None else env
    cfg = Config()
    path = path or env.get("HOLDSCAN_CONFIG") or None
    if path:
        p = Path(path)
        try:
            table = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"config file {p} does not exist; create it or leave out --config") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        _fill(cfg, table, str(p))
        cfg.source = str(p)
    if env.get("HOLDSCAN_BROKER"):
        cfg.broker.url = env["HOLDSCAN_BROKER"]
    if env.get("HOLDSCAN_CONTENT_URL"):
        cfg.broker.content_url = env["HOLDSCAN_CONTENT_URL"]
    if env.get("HOLDSCAN_CONTENT_STORE"):
        cfg.broker.content_store = env["HOLDSCAN_CONTENT_STORE"]
    if env.get("HOLDSCAN_SENTINEL_MASTER"):
        cfg.broker.sentinel_master = env["HOLDSCAN_SENTINEL_MASTER"]
    if env.get("HOLDSCAN_SENTINEL_PASSWORD"):
        cfg.broker.sentinel_password = env["HOLDSCAN_SENTINEL_PASSWORD"]
    if env.get("HOLDSCAN_WEB_ENABLED"):
        cfg.web.enabled = env["HOLDSCAN_WEB_ENABLED"].strip().lower() in ("1", "true", "yes")
    if env.get("HOLDSCAN_CLAMD"):
        cfg.scanners.setdefault("clamav", {})["addresses"] = env["HOLDSCAN_CLAMD"].split(",")
    validate(cfg)
    return cfg


REDIS_SCHEMES = ("redis", "rediss", "unix", "sentinel")


def check_redis_url(url: str, setting: str, broker: bool = False) -> None:
    """The broker and the content store are Redis, plain or through Sentinel."""
    scheme = url.split(":", 1)[0].lower()
    if broker and scheme in ("amqp", "amqps", "pyamqp"):
        # Celery could talk to RabbitMQ, but holdscan's content store, verdict lists and
        # redelivery settings are Redis's; an AMQP broker is not tested and not supported.
        raise ConfigError(f"{setting}: AMQP (RabbitMQ) brokers are not supported; use "
                          "redis://HOST:PORT/0, or sentinel://HOST:26379;sentinel://HOST:26379 "
                          "for a broker that survives the loss of a Redis host")
    # Celery's Redis transport has no unix:// (the content store has).
    if scheme not in REDIS_SCHEMES or (broker and scheme == "unix"):
        raise ConfigError(f"{setting}: {url.split('@')[-1]!r} is not a Redis URL; use "
                          "redis://[:PASSWORD@]HOST:PORT/DB, rediss://, "
                          f"{'' if broker else 'unix:///path, '}"
                          "or sentinel://HOST:PORT;sentinel://HOST:PORT")
    if scheme == "sentinel":
        try:
            SentinelURL.parse(url)
        except ValueError as e:
            raise ConfigError(f"{setting}: {e}") from None


def validate(cfg: Config) -> None:
    b, d = cfg.broker, cfg.dispatcher
    if b.task_time_limit >= b.visibility_timeout:
        raise ConfigError(
            f"broker.task_time_limit ({b.task_time_limit}s) must be below "
            f"broker.visibility_timeout "
            f"({b.visibility_timeout}s), or the broker hands a running scan to a second worker")
    if d.max_in_flight < 1 or d.batch_size < 1 or d.max_attempts < 1:
        raise ConfigError("dispatcher.max_in_flight, batch_size and max_attempts must be at "
                          "least 1")
    if d.quarantine_days < 0:
        raise ConfigError(f"dispatcher.quarantine_days must be 0 (keep) or more, "
                          f"got {d.quarantine_days}")
    n = cfg.notify
    bad = [o for o in n.on if o not in NOTIFY_ON]
    if bad:
        raise ConfigError(f"notify.on: {bad[0]!r} is not an outcome; use some of "
                          f"{', '.join(NOTIFY_ON)}")
    for key, address in (("notify.admin", n.admin), ("notify.sender", n.sender)):
        if address and ("@" not in address or any(c.isspace() or c in "<>,;\"\\" for c in address)):
            raise ConfigError(f"{key} must be one plain address like postmaster@example.com, "
                              f"got {address!r}")
    if n.rate_limit < 0:
        raise ConfigError(f"notify.rate_limit must be 0 (no limit) or more, got {n.rate_limit}")
    _validate_web(cfg.web)
    if d.on_max_attempts not in ("quarantine", "hold"):
        raise ConfigError(f"dispatcher.on_max_attempts must be 'quarantine' or 'hold', "
                          f"got {d.on_max_attempts!r}")
    check_redis_url(b.url, "broker.url (or HOLDSCAN_BROKER, --broker)", broker=True)
    if b.content_url:
        check_redis_url(b.content_url, "broker.content_url (or HOLDSCAN_CONTENT_URL)")
    for name, url in [("", b.content_store)] + list(b.content_stores.items()):
        if name == "" and not url:
            continue
        store = name or url
        if STORE_NAME_RE.fullmatch(store) is None:
            raise ConfigError(f"broker.content_store{'s' if name else ''}: {store[:40]!r} is "
                              "not a store name; use letters, digits, '.', '_' and '-' (at "
                              "most 64), e.g. the mail host's name")
        if name:
            if not isinstance(url, str):
                raise ConfigError(f"broker.content_stores.{name} must be a Redis URL string")
            check_redis_url(url, f"broker.content_stores.{name}")
    if ((is_sentinel(b.url) or is_sentinel(cfg.content_url)
         or any(is_sentinel(u) for u in b.content_stores.values()))
            and not b.sentinel_master):
        raise ConfigError("broker.sentinel_master (or HOLDSCAN_SENTINEL_MASTER) must name the "
                          "group the Sentinels watch (`sentinel monitor NAME ...`)")
    for name, table in cfg.scanners.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[scanners.{name}] must be a table")


def _validate_web(w: WebConfig) -> None:
    if w.auth not in ("password", "header"):
        raise ConfigError(f"web.auth must be 'password' or 'header', got {w.auth!r}")
    bad = [v for v in w.recipient_release if v in NEVER_RECIPIENT_RELEASE]
    if bad:
        raise ConfigError(f"web.recipient_release: a recipient may never release {bad[0]!r} "
                          "mail; an administrator can")
    host, _, port = w.listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"web.listen must be HOST:PORT like 127.0.0.1:8025, got {w.listen!r}")
    if w.digest and not w.base_url.startswith(("https://", "http://")):
        raise ConfigError("web.digest needs web.base_url, the address recipients reach the web "
                          "at (https://quarantine.example.com)")
    if w.link_days < 1 or w.page_size < 1 or w.login_attempts < 1:
        raise ConfigError("web.link_days, web.page_size and web.login_attempts must be at least 1")
