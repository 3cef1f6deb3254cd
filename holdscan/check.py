"""`holdscan check`: is this host set up so that holdscan can run safely?

Each check answers one question and, when the answer is no, says in one line
what is wrong and what to do about it. Nothing here changes the system: the
check only reads Postfix's configuration, stats directories and talks to the
broker and to clamd, so it is safe to run at any time on a live mail host.

    ok   postfix: Postfix 3.7.11, queue /var/spool/postfix, mail_owner postfix
    FAIL broker: Redis requires a password — put it in the URL: redis://:PASSWORD@host:port/db

A check that depends on one that failed is reported as "skip", so the first
FAIL is the one to fix. A "warn" line is worth knowing but no failure: e.g. one
for every other HOLD source in Postfix's configuration, whose mail holdscan
scans and releases like new mail.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dispatcher.postfix import PostfixError, PostfixSettings, postconf
from dispatcher.spool import Spool, SpoolError
from holdscan.holdsources import find_hold_sources
from shared import config as config_mod
from workers.clamdclient import DEFAULT_ADDRESSES, Address

DEFAULT_CLAMD_ADDRESSES = list(DEFAULT_ADDRESSES)
TIMEOUT = 3.0   # seconds; a check must answer quickly even when a peer is a black hole

# A header line that every message received by smtpd carries (smtpd adds it itself).
PROBE_HEADER = "Received: from mail.example.com (mail.example.com [192.0.2.1])"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str          # "ok", "FAIL", "warn" (worth knowing, not a failure) or "skip"
    message: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"

    def line(self) -> str:
        text = f"{self.status:<4} {self.name}: {self.message}"
        return f"{text} — {self.fix}" if self.fix else text


def _ok(name: str, message: str) -> CheckResult:
    return CheckResult(name, "ok", message)


def _fail(name: str, message: str, fix: str) -> CheckResult:
    return CheckResult(name, "FAIL", message, fix)


def _skip(name: str, why: str) -> CheckResult:
    return CheckResult(name, "skip", why)


# -- Postfix ------------------------------------------------------------------------

def check_postfix(cfg: config_mod.Config) -> tuple[CheckResult, PostfixSettings | None]:
    p = cfg.postfix
    try:
        settings = PostfixSettings.read(p.config_directory, queue_directory=p.queue_directory,
                                        mail_owner=p.mail_owner)
        version = postconf(["mail_version"], p.config_directory)["mail_version"]
    except PostfixError as e:
        return _fail("postfix", "cannot read Postfix's settings",
                     str(e).replace("\n", " ")), None
    except ValueError as e:   # a setting postconf printed that is not what we expect
        return _fail("postfix", f"unexpected Postfix setting: {e}",
                     "check `postconf -n` for a typo in main.cf"), None
    return _ok("postfix", f"Postfix {version}, queue {settings.queue_directory}, "
                          f"mail_owner {settings.mail_owner}"), settings


def _postconf_lines(args: list[str], config_directory: str) -> list[str]:
    argv = ["postconf"] + (["-c", config_directory] if config_directory else []) + args
    p = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise PostfixError(f"`{shlex.join(argv)}` failed: {p.stderr.strip()}")
    return p.stdout.splitlines()


@dataclass(frozen=True)
class MasterService:
    name: str
    type: str
    private: str
    command: str


def master_services(config_directory: str = "") -> dict[tuple[str, str], MasterService]:
    """master.cf's services, as `postconf -M` prints them (one line per service)."""
    out = {}
    for line in _postconf_lines(["-M"], config_directory):
        f = line.split()
        if len(f) >= 8:
            out[(f[0], f[1])] = MasterService(f[0], f[1], f[2], f[7])
    return out


def master_overrides(config_directory: str = "") -> dict[tuple[str, str], dict[str, str]]:
    """master.cf's `-o name=value` settings per service, with $names expanded."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for line in _postconf_lines(["-P", "-x"], config_directory):
        key, sep, value = line.partition(" = ")
        if not sep:
            key, value = line.rstrip().rstrip("="), ""
        parts = key.strip().split("/")
        if len(parts) == 3:
            out.setdefault((parts[0], parts[1]), {})[parts[2]] = value.strip()
    return out


def table_holds(table: str, config_directory: str = "") -> tuple[bool, str]:
    """Does this header_checks table answer HOLD for a Received: header?

    Asks Postfix itself (`postmap -q`), so every table type Postfix supports
    is judged the way cleanup will judge it. Returns (holds, error).
    """
    argv = ["postmap"] + (["-c", config_directory] if config_directory else [])
    argv += ["-q", PROBE_HEADER, table]
    p = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    if "fatal" in p.stderr or "warning" in p.stderr:
        return False, p.stderr.strip().splitlines()[-1]
    return p.returncode == 0 and p.stdout.strip().upper().startswith("HOLD"), ""


def _tables(value: str) -> list[str]:
    return [t for t in value.replace(",", " ").split() if t]


def check_hold_rule(cfg: config_mod.Config) -> CheckResult:
    """Rule 3: mail from outside lands in hold; locally forwarded mail does not.

    The HOLD rule must sit in a cleanup service that only the public smtpd
    uses (master.cf: smtpd -o cleanup_service_name=holdscan-cleanup), never in
    main.cf's header_checks, which every cleanup client (pickup, local
    forwarding, bounces) shares.
    """
    name = "hold rule"
    snippet = "see deploy/postfix/master.cf.snippet and docs/install.md"
    cd = cfg.postfix.config_directory
    try:
        services = master_services(cd)
        overrides = master_overrides(cd)
        global_checks = _postconf_lines(["-x", "-h", "header_checks"], cd)[0].strip()
    except (PostfixError, IndexError, subprocess.TimeoutExpired) as e:
        return _fail(name, f"cannot read Postfix's master.cf: {e}",
                     "fix the Postfix configuration (`postfix check`)")
    for table in _tables(global_checks):
        holds, _ = table_holds(table, cd)
        if holds:
            return _fail(name, f"main.cf header_checks ({table}) holds all mail, also locally "
                               "forwarded mail and bounces (rule 3)",
                         "remove the HOLD rule from main.cf's header_checks and hold only mail "
                         f"that the public smtpd receives; {snippet}")

    # Which cleanup services hold, and can smtpd reach them (public class)?
    def cleanup_problem(service: str) -> tuple[str, str] | None:
        """None if `service` holds mail, else (what is wrong, how to fix it)."""
        svc = services.get((service, "unix"))
        if svc is None or svc.command != "cleanup":
            return ((f"cleanup_service_name={service} but master.cf has no "
                    f"`{service} unix ... cleanup` service"), snippet)
        if svc.private != "n":
            return (f"cleanup service {service} is private, but smtpd connects to public ones",
                    f"set the private column of {service} in master.cf to n")
        value = overrides.get((service, "unix"), {}).get("header_checks", global_checks)
        for table in _tables(value):
            holds, error = table_holds(table, cd)
            if error:
                return (f"cleanup service {service}: {error}",
                        "create the table, e.g. deploy/postfix/holdscan_hold_checks")
            if holds:
                return None
        return ((f"the header_checks of cleanup service {service} ({value or 'none'}) do not "
                "HOLD a Received: header"), f"add `/^Received:/ HOLD` to them; {snippet}")

    holding: list[str] = []
    not_holding: list[str] = []
    problems: list[tuple[str, str]] = []
    for (sname, stype), svc in sorted(services.items()):
        if stype != "inet" or svc.command != "smtpd":
            continue
        cleanup = overrides.get((sname, stype), {}).get("cleanup_service_name", "")
        problem = cleanup_problem(cleanup) if cleanup else None
        if cleanup and problem is None:
            holding.append(f"{sname}/{stype} via {cleanup}")
            continue
        not_holding.append(f"{sname}/{stype}")
        if problem:
            problems.append(problem)
    if not holding:
        if problems:
            return _fail(name, problems[0][0], problems[0][1])
        return _fail(name, "no smtpd service holds incoming mail: nothing will reach holdscan",
                     "add `-o cleanup_service_name=holdscan-cleanup` to the public smtpd in "
                     f"master.cf and a holdscan-cleanup service with the HOLD rule; {snippet}")
    rest = f"; not held: {', '.join(not_holding)}" if not_holding else ""
    return _ok(name, f"HOLD only for mail from smtpd {', '.join(holding)}{rest}")


def postconf_all(config_directory: str = "") -> dict[str, str]:
    """Every main.cf parameter as Postfix sees it (`postconf -x`: $names expanded)."""
    out: dict[str, str] = {}
    last = ""
    for line in _postconf_lines(["-x"], config_directory):
        if line[:1].isspace() and last:
            out[last] += " " + line.strip()
            continue
        key, sep, value = line.partition(" = ")
        if not sep:
            key, value = line.rstrip().rstrip("="), ""
        last = key.strip()
        out[last] = value.strip()
    return out


def _postmap_dump(table: str, config_directory: str) -> str | None:
    """An indexed table's entries (`postmap -s`), for one whose source file is gone."""
    argv = ["postmap"] + (["-c", config_directory] if config_directory else []) + ["-s", table]
    p = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30,
                       errors="replace")
    return p.stdout if p.returncode == 0 else None


def check_hold_sources(cfg: config_mod.Config) -> list[CheckResult]:
    """Other sources of HOLD: holdscan scans and releases what they park (new mail).

    One "warn" line per HOLD rule, access table, policy service or milter setting
    that parks mail in hold besides holdscan's own rule (holdscan.holdsources).
    """
    name = "hold sources"
    cd = cfg.postfix.config_directory
    try:
        main = postconf_all(cd)
        services = {k: v.command for k, v in master_services(cd).items()}
        overrides = master_overrides(cd)
    except (PostfixError, subprocess.TimeoutExpired) as e:
        return [_fail(name, f"cannot read Postfix's configuration: {e}",
                      "fix the Postfix configuration (`postfix check`)")]

    def read(path: str) -> str:
        return Path(path).read_text(errors="replace")

    findings = find_hold_sources(main, services, overrides, read,
                                 partial(_postmap_dump, config_directory=cd))
    if not findings:
        return [_ok(name, "nothing else in Postfix's configuration parks mail in hold")]
    return [CheckResult(name, "warn", f.message, f.fix) for f in findings]


# -- the spool ----------------------------------------------------------------------

def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _spool(cfg: config_mod.Config, settings: PostfixSettings) -> Spool:
    d = cfg.dispatcher
    return Spool(settings, d.state_dir, d.quarantine_dir)


def check_filesystem(cfg: config_mod.Config, settings: PostfixSettings) -> CheckResult:
    """Rule 2: hold, incoming and holdscan's own directories on one file system."""
    name = "one file system"
    try:
        spool = _spool(cfg, settings)
    except SpoolError as e:
        return _fail(name, str(e).split(";")[0], str(e).partition("; ")[2] or "fix mail_owner")
    for d in (spool.hold_dir, spool.incoming_dir):
        if not d.is_dir():
            return _fail(name, f"{d} does not exist",
                         f"is {spool.queue_dir} Postfix's queue_directory? "
                         "(`postconf -h queue_directory`; `postfix check` creates the queues)")
    # The dispatcher creates its directories at start; until then, judge each by the
    # directory it will be created in.
    spool.tmp_dir = _nearest_existing(spool.tmp_dir)
    spool.custody_dir = _nearest_existing(spool.custody_dir)
    spool.journal.dir = _nearest_existing(spool.journal.dir)
    spool.quarantine_dir = _nearest_existing(spool.quarantine_dir)
    try:
        spool.check_same_filesystem()
    except SpoolError as e:
        msg, _, fix = str(e).partition(". Put ")
        return _fail(name, msg, ("put " + fix.rstrip(".")) if fix else
                     "move dispatcher.state_dir and quarantine_dir under queue_directory")
    except OSError as e:
        return _fail(name, f"cannot stat a spool directory: {e}",
                     "run holdscan check as root or as the mail_owner")
    return _ok(name, f"hold, incoming, state {spool.state_dir} and quarantine "
                     f"{_spool(cfg, settings).quarantine_dir} share one file system")


def check_owner(cfg: config_mod.Config, settings: PostfixSettings) -> CheckResult:
    """Queue files belong to mail_owner; so must the dirs the dispatcher writes in."""
    name = "spool owner"
    try:
        owner = pwd.getpwnam(settings.mail_owner)
    except KeyError:
        return _fail(name, f"mail_owner {settings.mail_owner!r} is not a user on this host",
                     "check `postconf mail_owner` or postfix.mail_owner in the config")
    spool = _spool(cfg, settings)
    wrong = []
    for d in (spool.hold_dir, spool.incoming_dir, spool.state_dir, spool.quarantine_dir):
        try:
            uid = d.stat().st_uid
        except FileNotFoundError:
            continue    # created by the dispatcher, with the right owner, at start
        if uid != owner.pw_uid:
            try:
                who = pwd.getpwuid(uid).pw_name
            except KeyError:
                who = str(uid)
            wrong.append(f"{d} belongs to {who}")
    if wrong:
        return _fail(name, "; ".join(wrong) + f", not to mail_owner {settings.mail_owner}",
                     f"chown -R {settings.mail_owner} the holdscan directories; for Postfix's "
                     "own queues run `postfix set-permissions`")
    return _ok(name, f"queues belong to mail_owner {settings.mail_owner}")


def check_user(settings: PostfixSettings) -> CheckResult:
    name = "user"
    euid = os.geteuid()
    try:
        owner_uid = pwd.getpwnam(settings.mail_owner).pw_uid
    except KeyError:
        owner_uid = -1
    if euid == 0:
        return _ok(name, f"running as root (the dispatcher drops to {settings.mail_owner})")
    if euid == owner_uid:
        return _ok(name, f"running as mail_owner {settings.mail_owner}")
    try:
        me = pwd.getpwuid(euid).pw_name
    except KeyError:
        me = str(euid)
    return _fail(name, f"running as {me}, who cannot work in Postfix's queues",
                 f"run holdscan as root (it drops to {settings.mail_owner}) "
                 f"or as {settings.mail_owner}")


def check_runtime(settings: PostfixSettings) -> CheckResult:
    """Can mail_owner load everything the dispatcher imports after it drops root?

    The same verification the dispatcher runs at start (holdscan.privileges), in a
    child process that drops to mail_owner the way the dispatcher does.
    """
    from holdscan.privileges import verify_as
    name = "runtime"
    user = settings.mail_owner
    try:
        owner_uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return _skip(name, f"mail_owner {user!r} is not a user on this host")
    if os.geteuid() not in (0, owner_uid):
        return _skip(name, f"run holdscan check as root to see what mail_owner {user} can load")
    problem = verify_as(user)
    if problem is not None:
        return _fail(name, problem.what, problem.fix)
    return _ok(name, f"mail_owner {user} can load everything the dispatcher needs "
                     f"({sys.executable})")


# -- the broker ---------------------------------------------------------------------

def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rpartition("@")
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
    except ValueError:
        return "<unparsable URL>"


def _redis_ping(label: str, url: str, setting: str) -> CheckResult:
    import redis

    shown = redact(url)
    form = "redis://[:PASSWORD@]HOST:PORT/DB"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
    except ValueError as e:
        return _fail(label, f"malformed URL {shown}: {e}", f"fix {setting}; the form is {form}")
    try:
        client.ping()
    except redis.AuthenticationError:
        if urlsplit(url).password is None:
            return _fail(label, f"Redis at {shown} requires a password",
                         f"put it in the URL ({setting}): redis://:PASSWORD@host:port/db")
        return _fail(label, f"Redis at {shown} rejected the password",
                     f"use the password from redis.conf `requirepass` in {setting}")
    except redis.ResponseError as e:
        return _fail(label, f"Redis at {shown} refused PING: {e}",
                     "check the Redis ACL for this user")
    except redis.TimeoutError:
        return _fail(label, f"no answer from {shown} within {TIMEOUT:g}s",
                     "check the host, port and firewall, or start redis-server")
    except redis.ConnectionError as e:
        return _fail(label, f"cannot connect to {shown}: {e}",
                     f"start redis-server or fix {setting}")
    except (ValueError, OSError) as e:
        return _fail(label, f"cannot use {shown}: {e}", f"fix {setting}; the form is {form}")
    finally:
        client.close()
    return _ok(label, f"Redis at {shown} answers PING")


def _sentinel_ping(label: str, url: str, setting: str, master_name: str,
                   sentinel_password: str) -> CheckResult:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from shared.redisurl import SENTINEL_FORM, SentinelURL, client

    once = Retry(NoBackoff(), 0)    # a check answers now; the daemons retry by themselves

    try:
        parsed = SentinelURL.parse(url)
    except ValueError as e:
        return _fail(label, f"malformed URL {redact(url)}: {e}", f"fix {setting}")
    answers, failures = 0, []
    for host, port in parsed.sentinels:
        where = f"Sentinel {host}:{port}"
        s = redis.Redis(host=host, port=port, password=sentinel_password or None,
                        socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT, retry=once)
        try:
            if not s.sentinel_get_master_addr_by_name(master_name):
                return _fail(label, f"{where} watches no group named {master_name!r}",
                             "set broker.sentinel_master (or HOLDSCAN_SENTINEL_MASTER) to the "
                             "name in sentinel.conf's `sentinel monitor NAME ...`")
            answers += 1
        except redis.AuthenticationError:
            return _fail(label, f"{where} " + ("rejected the password" if sentinel_password
                                               else "requires a password"),
                         "set broker.sentinel_password (or HOLDSCAN_SENTINEL_PASSWORD) to "
                         "sentinel.conf's requirepass")
        except (redis.RedisError, OSError) as e:
            failures.append(f"{where}: {e}")
        finally:
            s.close()
    if not answers:
        return _fail(label, f"no Sentinel answers ({len(failures)} tried); first: {failures[0]}",
                     f"start redis-sentinel or fix {setting}; the form is {SENTINEL_FORM}")
    master = client(url, master_name, sentinel_password, socket_timeout=TIMEOUT,
                    socket_connect_timeout=TIMEOUT, retry=once)
    try:
        master.ping()
    except redis.AuthenticationError:
        return _fail(label, f"the Redis master of {master_name!r} "
                     + ("rejected the password" if parsed.password else "requires a password"),
                     f"put Redis's requirepass in the first address of {setting}: "
                     "sentinel://:PASSWORD@HOST:PORT;...")
    except (redis.RedisError, OSError) as e:
        return _fail(label, f"the Sentinels name a master for {master_name!r}, but it does not "
                     f"answer: {e}", "check the Redis servers and `redis-cli -p 26379 sentinel "
                     f"master {master_name}`")
    finally:
        master.close()
    return _ok(label, f"{answers} of {len(parsed.sentinels)} Sentinels answer; the master of "
               f"{master_name!r} answers PING")


def check_broker(url: str, label: str = "broker",
                 setting: str = "broker.url or HOLDSCAN_BROKER", master_name: str = "",
                 sentinel_password: str = "") -> CheckResult:
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return _redis_ping(label, url, setting)
    if scheme == "sentinel":
        return _sentinel_ping(label, url, setting, master_name, sentinel_password)
    return _fail(label, f"unsupported URL {redact(url)}",
                 f"fix {setting}: use redis://, rediss:// or sentinel://")


UNKNOWN_STORE_PREFIX = "holdscan:unknown-store:"    # workers/tasks.py unknown_store_key


def waiting_store_queues(cfg: config_mod.Config) -> list[str]:
    """With a queue per store: the store names of the broker's queues that hold tasks."""
    from shared.redisurl import client as redis_client

    b = cfg.broker
    broker = redis_client(b.url, b.sentinel_master, b.sentinel_password,
                          socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    prefix = f"{b.queue}."
    names = []
    for key in broker.scan_iter(f"{prefix}*", count=1000, _type="list"):
        # kombu names a queue's priority lists QUEUE\x06\x16N.
        name = key.decode(errors="replace")[len(prefix):].split("\x06\x16")[0]
        if broker.llen(key):
            names.append(name)
    return names


def check_store_names(cfg: config_mod.Config) -> list[CheckResult]:
    """A worker that got requests naming a content store it does not map leaves a note in
    its default store (workers/tasks.py); with a queue per store, a store's queue that no
    worker of this configuration takes from fills in the broker. This reports the names
    that this configuration does not map. No line when there is nothing to say."""
    import redis

    b = cfg.broker
    try:
        client = cfg.content_store(socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        names = sorted(k.decode(errors="replace")[len(UNKNOWN_STORE_PREFIX):]
                       for k in client.scan_iter(f"{UNKNOWN_STORE_PREFIX}*", count=1000))
        if b.queue_per_store:
            names += waiting_store_queues(cfg)
    except (redis.RedisError, OSError, ValueError) as e:
        # The content store's own line says what is wrong with it.
        if not b.content_stores:
            return []
        return [_skip("content store names", f"cannot read the default content store: {e}")]
    unknown = sorted({n for n in names if n not in b.content_stores})
    if unknown:
        shown = ", ".join(repr(n) for n in unknown)
        return [_fail("content store names",
                      f"scan requests name content store(s) {shown}, which "
                      "[broker.content_stores] does not map: that mail waits in its host's "
                      "hold queue",
                      f'add `{unknown[0]} = "redis://..."` (its URL) under '
                      "[broker.content_stores] on every worker, then restart the workers")]
    if not b.content_stores:
        return []
    return [_ok("content store names", f"{len(b.content_stores)} named store(s); no request "
                "named another")]


# -- clamd --------------------------------------------------------------------------

def clamd_addresses(cfg: config_mod.Config) -> list[str]:
    table = cfg.scanners.get("clamav", {})
    addresses = table.get("addresses", DEFAULT_CLAMD_ADDRESSES)
    if isinstance(addresses, str):
        addresses = [addresses]
    if not isinstance(addresses, list):
        return [repr(addresses)]     # reported as a malformed address
    return [str(a) for a in addresses]


def check_clamd(address: str) -> CheckResult:
    """PING -> PONG, the clamd protocol's own liveness test."""
    name = f"clamd {address}"
    setting = "scanners.clamav.addresses"
    # The workers' own parser: what check accepts, the clamav scanner accepts.
    try:
        parsed = Address.parse(str(address))
    except ValueError as e:
        return _fail(name, f"malformed clamd address {address!r}",
                     f"fix {setting}: {str(e).split(': ', 1)[1]}")
    family, target = parsed.family, parsed.target
    if family == socket.AF_UNIX:
        assert isinstance(target, str)
        if not os.path.exists(target):
            return _fail(name, f"clamd socket {target} missing",
                         f"start clamav-daemon or fix {setting}")
        where = f"socket {target}"
    else:
        assert isinstance(target, tuple)
        where = f"{target[0]}:{target[1]}"
    try:
        if family == socket.AF_UNIX:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(TIMEOUT)
            sock.connect(target)
        else:
            assert isinstance(target, tuple)
            sock = socket.create_connection(target, timeout=TIMEOUT)
        with sock:
            sock.sendall(b"zPING\0")
            answer = b""
            while not answer.endswith(b"\0") and len(answer) < 100:
                chunk = sock.recv(100)
                if not chunk:
                    break
                answer += chunk
    except PermissionError:
        return _fail(name, f"no permission to connect to clamd {where}",
                     "add this user to clamd's group, or set LocalSocketMode 666 in clamd.conf")
    except ConnectionRefusedError:
        fix = ("clamd is not running (the socket file is stale): start clamav-daemon"
               if family == socket.AF_UNIX else
               f"start clamd with TCPSocket/TCPAddr set, or fix {setting}")
        return _fail(name, f"clamd {where} refuses connections", fix)
    except TimeoutError:
        return _fail(name, f"no answer from clamd {where} within {TIMEOUT:g}s",
                     "clamd may still be loading its databases: wait and check again")
    except OSError as e:
        return _fail(name, f"cannot connect to clamd {where}: {e.strerror or e}",
                     f"start clamav-daemon or fix {setting}")
    if answer.rstrip(b"\0").strip() != b"PONG":
        return _fail(name, f"{where} answered {answer[:40]!r} to PING, not PONG",
                     f"is that clamd? fix {setting}")
    return _ok(name, "clamd answers PING")


# -- policy and notices ------------------------------------------------------------------

def check_policy(cfg: config_mod.Config) -> CheckResult:
    from dispatcher.policy import Policy
    where = cfg.source or "the configuration"
    try:
        policy = Policy.from_config(cfg)
    except config_mod.ConfigError as e:
        return _fail("policy", str(e), f"fix [policy] in {where}")
    dead = policy.dead_settings()
    if dead:
        more = f" (and {len(dead) - 1} more)" if len(dead) > 1 else ""
        return _fail("policy", dead[0] + more, f"fix the order of [[policy.rules]] in {where}; "
                     "`holdscan policy explain FROM TO` shows what applies")
    return _ok("policy", policy.describe())


def check_notify(cfg: config_mod.Config) -> CheckResult:
    from dispatcher.notify import ADMIN_TEMPLATE, RECIPIENT_TEMPLATE, MessageTemplate
    n = cfg.notify
    if not (n.admin or n.recipients):
        return _ok("notify", "off ([notify] admin is empty and recipients = false)")
    try:
        MessageTemplate.load(n.admin_template, ADMIN_TEMPLATE, "admin_template")
        MessageTemplate.load(n.recipient_template, RECIPIENT_TEMPLATE, "recipient_template")
    except config_mod.ConfigError as e:
        return _fail("notify", str(e), "fix the template or leave the setting empty")
    if not os.access(n.sendmail, os.X_OK):
        return _fail("notify", f"{n.sendmail} is not an executable",
                     "install Postfix's sendmail or set notify.sendmail")
    who = ", ".join(filter(None, [n.admin, "recipients" if n.recipients else ""]))
    limit = f"at most {n.rate_limit} per address an hour" if n.rate_limit else "no rate limit"
    return _ok("notify", f"notices to {who} when mail is {', '.join(n.on)}; {limit}")


def check_web(cfg: config_mod.Config, mail_owner: str = "") -> CheckResult:
    """[web]: its user and group exist and are not Postfix's; digests can be sent."""
    from dispatcher.webrequests import identity
    w = cfg.web
    if not w.enabled:
        return _ok("web", "off ([web] enabled = false)")
    try:
        identity(w)
    except config_mod.ConfigError as e:
        return _fail("web", str(e).split("; ")[0], str(e).split("; ", 1)[-1])
    if mail_owner and w.user == mail_owner:
        return _fail("web", f"web.user is Postfix's mail_owner {mail_owner}",
                     "give the web a user of its own (holdscan-web); it must not be able "
                     "to write the spool")
    if w.digest and not os.access(cfg.notify.sendmail, os.X_OK):
        return _fail("web", f"web.digest: {cfg.notify.sendmail} is not an executable",
                     "install Postfix's sendmail or set notify.sendmail")
    digest = f"digests daily, links to {w.base_url}" if w.digest else "no digests"
    return _ok("web", f"requests from {w.user} (group {w.group}); {w.auth} logins; {digest}")


# -- all together ---------------------------------------------------------------------

def _guarded(name: str, check: Callable[[], CheckResult]) -> CheckResult:
    """Run one check; an error it did not foresee is still one line, never a traceback."""
    try:
        return check()
    except PermissionError as e:
        return _fail(name, f"permission denied: {e.filename or e}",
                     "run holdscan check as root, like the dispatcher")
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return _fail(name, f"unexpected error: {e}", "fix what it names and run the check again")


def _guarded_all(name: str, check: Callable[[], list[CheckResult]]) -> list[CheckResult]:
    """_guarded() for a check that gives several lines."""
    results: list[CheckResult] = []

    def one() -> CheckResult:
        results.extend(check())
        return _ok(name, "")
    failed = _guarded(name, one)
    return results if failed.ok else [failed]


def run_checks(cfg: config_mod.Config) -> list[CheckResult]:
    results: list[CheckResult] = []
    postfix_result, settings = check_postfix(cfg)
    results.append(postfix_result)
    if settings is None:
        why = "needs Postfix's settings"
        results += [_skip(n, why) for n in ("hold rule", "hold sources", "one file system",
                                            "spool owner", "user", "runtime")]
    else:
        s = settings
        results.append(_guarded("hold rule", lambda: check_hold_rule(cfg)))
        results += _guarded_all("hold sources", lambda: check_hold_sources(cfg))
        results.append(_guarded("one file system", lambda: check_filesystem(cfg, s)))
        results.append(_guarded("spool owner", lambda: check_owner(cfg, s)))
        results.append(_guarded("user", lambda: check_user(s)))
        results.append(_guarded("runtime", lambda: check_runtime(s)))
    b = cfg.broker
    results.append(_guarded("broker", lambda: check_broker(
        b.url, master_name=b.sentinel_master, sentinel_password=b.sentinel_password)))
    if cfg.content_url != b.url:
        results.append(_guarded("content store", lambda: check_broker(
            cfg.content_url, "content store", "broker.content_url or HOLDSCAN_CONTENT_URL",
            b.sentinel_master, b.sentinel_password)))
    for name, url in sorted(b.content_stores.items()):
        if url != cfg.content_url:
            results.append(_guarded(f"content store {name}", partial(
                check_broker, url, f"content store {name}", f"broker.content_stores.{name}",
                b.sentinel_master, b.sentinel_password)))
    results += _guarded_all("content store names", lambda: check_store_names(cfg))
    clamav = cfg.scanners.get("clamav", {})
    if clamav.get("enabled", True) is False:
        results.append(_skip("clamd", "scanners.clamav.enabled = false"))
    else:
        for address in clamd_addresses(cfg):
            results.append(_guarded(f"clamd {address}", partial(check_clamd, address)))
    results.append(_guarded("policy", lambda: check_policy(cfg)))
    results.append(_guarded("notify", lambda: check_notify(cfg)))
    owner = settings.mail_owner if settings is not None else ""
    results.append(_guarded("web", lambda: check_web(cfg, owner)))
    return results


def main_check(cfg: config_mod.Config) -> int:
    """Print one line per check; 0 if every check passed, else 1."""
    ok = True
    for result in run_checks(cfg):
        print(result.line(), flush=True)
        ok = ok and result.ok
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="holdscan check",
                                     description="Check that this host is ready for holdscan.")
    parser.add_argument("--config", help="holdscan TOML file (default: $HOLDSCAN_CONFIG)")
    parser.add_argument("--postfix-config", help="Postfix config directory (postfix -c DIR)")
    args = parser.parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        print(f"FAIL config: {e}", flush=True)
        return 1
    if args.postfix_config:
        cfg.postfix.config_directory = args.postfix_config
    return main_check(cfg)


if __name__ == "__main__":
    sys.exit(main())
