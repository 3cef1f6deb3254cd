"""The `holdscan` command: dispatch, worker, status, quarantine, policy, queue, web, check,
demo.

Errors a user can cause end in one line that says what to do (exit 2), never
a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from holdscan.privileges import check_identity, drop_privileges, verify_runtime
from shared import config as config_mod
from shared.config import Config, ConfigError


class UsageError(Exception):
    """A problem the user can fix; printed as one line."""


def _load(args: argparse.Namespace) -> Config:
    cfg = config_mod.load(getattr(args, "config", None))
    if getattr(args, "broker", None):
        cfg.broker.url = args.broker
        config_mod.validate(cfg)
    if getattr(args, "postfix_config", None):
        cfg.postfix.config_directory = args.postfix_config
    if getattr(args, "queue_directory", None):
        cfg.postfix.queue_directory = args.queue_directory
    if getattr(args, "quarantine_dir", None):
        cfg.dispatcher.quarantine_dir = args.quarantine_dir
    if getattr(args, "state_dir", None):
        cfg.dispatcher.state_dir = args.state_dir
    return cfg


def _spool(cfg: Config):
    from dispatcher.postfix import PostfixSettings
    from dispatcher.spool import Spool
    settings = PostfixSettings.read(cfg.postfix.config_directory,
                                    queue_directory=cfg.postfix.queue_directory,
                                    mail_owner=cfg.postfix.mail_owner)
    return Spool(settings, cfg.dispatcher.state_dir, cfg.dispatcher.quarantine_dir)


# -- dispatch -----------------------------------------------------------------------------
def cmd_dispatch(args: argparse.Namespace) -> int:
    from dispatcher.service import Dispatcher
    from dispatcher.transport import CeleryTransport, LocalTransport, default_dispatcher_id
    from shared import logging as hlog

    cfg = _load(args)
    if args.max_in_flight:
        cfg.dispatcher.max_in_flight = args.max_in_flight
    if args.local is not None:
        cfg.dispatcher.local_workers = args.local
    if args.metrics:
        cfg.dispatcher.metrics_address = args.metrics
    if args.batch_size:
        cfg.dispatcher.batch_size = args.batch_size
    hlog.setup(args.log_level)
    spool = _spool(cfg)
    check_identity(spool.settings.mail_owner)
    spool.prepare()
    spool.lock_dispatcher()     # one dispatcher per spool, for the life of this process
    web = None
    if cfg.web.enabled:
        from dispatcher import webrequests
        web = webrequests.prepare(spool, cfg.web)
    if not args.no_drop_privileges:
        drop_privileges(spool.settings.mail_owner, [web.gid] if web else [])
    # Everything imported from here on is read as mail_owner: fail now, in one line, not at
    # the first lazy import with mail piling up in hold.
    verify_runtime(spool.settings.mail_owner)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Every message in flight keeps its hold file open (the flock lives on that descriptor).
    want = min(hard, max(soft, cfg.dispatcher.max_in_flight + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    dispatcher_id = args.id or default_dispatcher_id()
    transport: LocalTransport | CeleryTransport
    if cfg.dispatcher.local_workers > 0:
        transport = LocalTransport(cfg, cfg.dispatcher.local_workers)
    else:
        transport = CeleryTransport(cfg, dispatcher_id)
    return Dispatcher(cfg, spool, transport, dispatcher_id=dispatcher_id,
                      once=args.once, web=web).run()


# -- worker ---------------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    if args.config:
        os.environ["HOLDSCAN_CONFIG"] = args.config
    if args.broker:
        os.environ["HOLDSCAN_BROKER"] = args.broker
    if args.clamd:
        os.environ["HOLDSCAN_CLAMD"] = ",".join(args.clamd)
    # Fail here, in one line, rather than inside Celery or at the first message: a setting
    # or a clamd address that cannot work would leave every message waiting in hold.
    from workers.scanners import build_scanners
    for scanner in build_scanners(config_mod.load()):
        close = getattr(scanner, "close", None)
        if close:
            close()
    from shared.celeryapp import worker_queues
    from workers.app import app, cfg
    queues = args.queues or ",".join(worker_queues(cfg))
    argv = ["worker", f"--loglevel={args.log_level}", f"--queues={queues}"] + (
        ["-E"] if cfg.broker.task_events else [])
    concurrency = args.concurrency or cfg.worker.concurrency
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    app.worker_main(argv)
    return 0


# -- cache ------------------------------------------------------------------------------------
def cmd_cache_flush(args: argparse.Namespace) -> int:
    import redis

    from workers import verdictcache
    cfg = _load(args)
    try:
        generation = verdictcache.flush(cfg.content_store(socket_timeout=10,
                                                          socket_connect_timeout=5))
    except redis.RedisError as e:
        raise UsageError(f"cannot reach the content store: {e}; check broker.content_url "
                         "(or broker.url, HOLDSCAN_BROKER) and that its Redis runs") from None
    print(f"verdict cache flushed (generation {generation}); workers stop using the old "
          "entries within [scanners.clamav] cache_refresh seconds")
    return 0


# -- status -----------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    from dispatcher.status import StatusFile
    cfg = _load(args)
    spool = _spool(cfg)
    hold = sum(1 for _ in spool.hold_files())
    st = StatusFile(spool.state_dir / "status.json").read()
    if args.json:
        print(json.dumps({"hold_depth_now": hold, "dispatcher": st}, indent=1))
        return 0
    print(f"hold depth:     {hold}")
    if st is None:
        print("dispatcher:     no status file; has `holdscan dispatch` run on this host?")
        return 1
    age = time.time() - st.get("time", 0)
    alive = age < 10
    print(f"dispatcher:     {'running' if alive else 'NOT RUNNING'} (pid {st.get('pid')}, "
          f"status {age:.0f}s old)")
    print(f"in flight:      {st.get('in_flight', 0)}")
    print(f"waiting retry:  {st.get('waiting_retry', 0)}")
    for qid, why in sorted(st.get("waiting", {}).items()):
        print(f"  {qid}  {why}")
    parked = st.get("parked", {})
    print(f"parked by someone else: {len(parked)} (left in hold; `holdscan scan ID` scans and "
          "releases one)" if parked else "parked by someone else: 0")
    for qid, logs in sorted(parked.items()):
        print(f"  {qid}  has Postfix's {', '.join(logs)} log(s): queued before, then held")
    for comp, state in sorted(st.get("components", {}).items()):
        print(f"{comp + ':':16}{state}")
    print("outcomes:       " + (", ".join(f"{k} {v}" for k, v in
                                          sorted(st.get("outcomes", {}).items())) or "none yet"))
    notices = st.get("notices_last_hour")
    if notices:
        print(f"notices (1 h):  sent {notices.get('sent', 0)}, suppressed by the rate limit "
              f"{notices.get('suppressed', 0)}")
    workers = st.get("workers_seen", {})
    print(f"workers seen:   {len(workers)}")
    for w, t in sorted(workers.items()):
        print(f"  {w}  last verdict {time.time() - t:.0f}s ago")
    errors = st.get("last_errors", [])
    print(f"last errors:    {len(errors)}")
    for e in errors[-10:]:
        print(f"  {e}")
    return 0 if alive else 1


# -- quarantine ---------------------------------------------------------------------------------
def _store(args: argparse.Namespace):
    from dispatcher.quarantine import QuarantineStore
    return QuarantineStore(_spool(_load(args)))


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    from dispatcher.quarantine import parse_since
    store = _store(args)
    since = parse_since(args.since) if args.since else None
    rows = [e.summary() for e in store.entries(since=since, reason=args.reason or "")]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"quarantine {store.dir}: no entries" + (" match" if since or args.reason else ""))
        return 0
    print(f"{'ID':28} {'TIME (UTC)':19} {'VERDICT':11} {'SENDER':30} REASON")
    for r in rows:
        t = datetime.fromtimestamp(r["time"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        released = f" [released as {r['released_as']}]" if r["released_as"] else ""
        print(f"{r['id']:28} {t:19} {r['verdict']:11} {r['sender'] or '<>':30} "
              f"{r['reason']}{released}")
    return 0


def cmd_quarantine_show(args: argparse.Namespace) -> int:
    from dispatcher.quarantine import format_time
    info = _store(args).show(args.id)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    meta = info["meta"]
    env = info["envelope"]
    out = [f"id:           {info['id']}",
           f"queue ID:     {info['queue_id']} (as held)",
           f"quarantined:  {format_time(info['time'])} UTC",
           f"verdict:      {info['verdict']}",
           f"reason:       {info['reason']}",
           f"sender:       {env['sender'] or '<>'}",
           f"recipients:   {', '.join(env['recipients'])}"]
    if meta.get("all_recipients"):
        out.append(f"stopped for:  {', '.join(info['recipients'])} (the others got their "
                   "copies)")
    if meta.get("policy"):
        out.append(f"policy:       {', '.join(meta['policy'])}")
    verdict = meta.get("verdict") or {}
    for f in verdict.get("findings", []):
        # "action": what entries stored before contract version 3 call a finding's verdict.
        found = f.get("verdict", f.get("action"))
        if found != "clean":
            part = f" (MIME part {f['part']})" if f.get("part") else ""
            out.append(f"finding:      {f['scanner']} {found}: {f['detail']}{part}")
    if meta.get("released_as"):
        out.append(f"released:     {format_time(meta['released_at'])} UTC as queue ID "
                   f"{meta['released_as']} to {', '.join(meta.get('released_to', []))} "
                   f"by {meta.get('released_by', '?')}")
    else:
        out.append("released:     no")
    out.append("headers:")
    out += [f"  {line}" for line in info["headers"]]
    print("\n".join(out))
    return 0


def cmd_quarantine_release(args: argparse.Namespace) -> int:
    r = _store(args).release(args.id, to=args.to or "")
    if r.already:
        print(f"{r.entry_id} was released already, as queue ID {r.new_queue_id} to "
              f"{', '.join(r.recipients)}; nothing done")
    else:
        print(f"{r.entry_id} released as queue ID {r.new_queue_id} to {', '.join(r.recipients)}")
    return 0


def cmd_quarantine_delete(args: argparse.Namespace) -> int:
    _store(args).delete(args.id)
    print(f"{args.id} deleted")
    return 0


def cmd_quarantine_expire(args: argparse.Namespace) -> int:
    cfg = _load(args)
    days = args.days if args.days is not None else cfg.dispatcher.quarantine_days
    if not days or days < 1:
        raise UsageError("give --days N (1 or more), or set dispatcher.quarantine_days")
    from dispatcher.quarantine import QuarantineStore
    gone = QuarantineStore(_spool(cfg)).expire(days)
    print(f"{len(gone)} entr{'y' if len(gone) == 1 else 'ies'} older than {days} days deleted")
    return 0


# -- policy ------------------------------------------------------------------------------------
def cmd_policy_explain(args: argparse.Namespace) -> int:
    from dispatcher.policy import Policy
    cfg = _load(args)
    policy = Policy.from_config(cfg)
    decisions = policy.explain(args.sender, args.recipient)
    if args.json:
        print(json.dumps({"sender": args.sender, "recipient": args.recipient,
                          "actions": {d.verdict: {"action": d.action, "from": d.source}
                                      for d in decisions}}, indent=1))
        return 0
    print(f"sender {args.sender or '<>'}, recipient {args.recipient}"
          f" ({cfg.source or 'no config file: the defaults'})")
    matching = policy.matching_rules(args.sender, args.recipient)
    print("matching rules: " + (", ".join(r.label for r in matching) or "none"))
    for d in decisions:
        print(f"  {d.verdict:12} {d.action:15} {d.source}")
    print("  clean        deliver         (always)")
    return 0


# -- queue cat ----------------------------------------------------------------------
def cmd_queue_cat(args: argparse.Namespace) -> int:
    from dispatcher import queuefile, queueid
    target = Path(args.target)
    if not target.exists():
        if not queueid.is_valid(args.target):
            raise UsageError(f"{args.target}: no such file, and not a queue ID")
        cfg = _load(args)
        spool = _spool(cfg)
        for q in ("hold", "incoming", "active", "deferred", "corrupt"):
            p = spool.path(q, args.target)
            if p.exists():
                target = p
                break
        else:
            raise UsageError(f"queue ID {args.target} is in none of Postfix's queues")
    data = target.read_bytes()
    try:
        qf = queuefile.parse(data)
    except queuefile.QueueFileError as e:
        print(f"holdscan: {target}: not a valid queue file: {e}", file=sys.stderr)
        return 2
    message = qf.message_bytes(b"\r\n")
    if args.json:
        print(json.dumps({
            "queue_id": target.name,
            "sender": qf.sender,
            "recipients": [r.address for r in qf.recipients],
            "recipient_details": [r.__dict__ for r in qf.recipients],
            "attributes": qf.attributes,
            "arrival_time": qf.arrival_time,
            "create_time": qf.create_time,
            "size": len(message),
            "message_sha256": hashlib.sha256(message).hexdigest(),
        }, indent=1, default=str))
        return 0
    out = sys.stdout
    out.write(f"*** ENVELOPE {target.name} ***\n")
    out.write(f"arrival_time: {_ts(qf.arrival_time)}\n")
    if qf.create_time:
        out.write(f"create_time: {_ts(qf.create_time)}\n")
    out.write(f"sender: {qf.sender or '<>'}\n")
    for r in qf.recipients:
        extra = []
        if r.orig_rcpt:
            extra.append(f"orig_rcpt={r.orig_rcpt}")
        if r.dsn_orig_rcpt:
            extra.append(f"dsn_orig_rcpt={r.dsn_orig_rcpt}")
        if r.notify is not None:
            extra.append(f"notify={r.notify}")
        out.write(f"{'done' if r.done else 'recipient'}: {r.address}"
                  f"{' (' + ', '.join(extra) + ')' if extra else ''}\n")
    for k, v in qf.attributes.items():
        out.write(f"attribute: {k}={v}\n")
    out.write("*** MESSAGE ***\n")
    out.flush()
    sys.stdout.buffer.write(qf.message_bytes(b"\n"))
    return 0


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%a %b %d %H:%M:%S %Y UTC")


# -- web ------------------------------------------------------------------------------------
def cmd_web(args: argparse.Namespace) -> int:
    from holdscan.web.server import become_web_user, serve
    cfg = _load(args)
    if args.listen:
        cfg.web.listen = args.listen
        config_mod.validate(cfg)
    spool = _spool(cfg)
    data_dir = become_web_user(cfg, spool.settings.mail_owner)
    if args.passwd:
        import getpass

        from holdscan.web.auth import Admins, AuthError
        if sys.stdin.isatty():
            password = getpass.getpass(f"password for {args.passwd}: ")
            if getpass.getpass("again: ") != password:
                raise UsageError("the two passwords differ; nothing changed")
        else:
            password = sys.stdin.readline().rstrip("\n")
        try:
            Admins(data_dir / "admins").set(args.passwd, password)
        except AuthError as e:
            raise UsageError(str(e)) from None
        print(f"{args.passwd} may log in to holdscan web")
        return 0
    if args.remove_admin:
        from holdscan.web.auth import Admins
        if not Admins(data_dir / "admins").remove(args.remove_admin):
            raise UsageError(f"no administrator {args.remove_admin}")
        print(f"{args.remove_admin} removed")
        return 0
    return serve(cfg, spool.state_dir, spool.quarantine_dir, data_dir)


# -- check / demo ---------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from holdscan.check import main_check
    return main_check(_load(args))


# -- parked mail --------------------------------------------------------------------------
def cmd_park(args: argparse.Namespace) -> int:
    from dispatcher.park import park
    spool = _spool(_load(args))
    entry, now = park(spool, args.queue_id, args.reason or "")
    if now:
        print(f"{args.queue_id} parked as quarantine entry {entry}; "
              f"`holdscan quarantine release {entry}` delivers it")
    else:
        print(f"{args.queue_id} was parked already, as {entry}")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from dispatcher.park import request_scan
    spool = _spool(_load(args))
    request_scan(spool, args.queue_id)
    print(f"{args.queue_id}: the dispatcher will scan it and release it as new mail at its next "
          "look at hold (within dispatcher.rescan_interval)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from holdscan.demo import main_demo
    return main_demo(keep=args.keep)


# -- parser ----------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    p.add_argument("--postfix-config", metavar="DIR",
                   help="Postfix's configuration directory, as `postfix -c DIR` (default: "
                   "postfix.config_directory, else Postfix's own, /etc/postfix)")
    p.add_argument("--queue-directory", metavar="DIR",
                   help="Postfix's queue_directory (default: postfix.queue_directory, else "
                   "`postconf -h queue_directory`)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="holdscan's state directory (default: dispatcher.state_dir, else "
                   "QUEUE_DIRECTORY/holdscan)")
    p.add_argument("--quarantine-dir", metavar="DIR",
                   help="the quarantine store (default: dispatcher.quarantine_dir, else "
                   "STATE_DIR/quarantine)")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print JSON, for scripts (default: text for people)")


_D = Config()
CONFIG_HELP = "the TOML configuration file (default: $HOLDSCAN_CONFIG, else none: every default)"
BROKER_HELP = ("the broker: redis://[:PASSWORD@]HOST:PORT/DB, rediss://, or sentinel://HOST:PORT"
               f";sentinel://... (default: $HOLDSCAN_BROKER, else broker.url, {_D.broker.url})")
LOG_HELP = "how much to log: DEBUG, INFO, WARNING or ERROR (default: %(default)s)"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="holdscan", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    d = _D.dispatcher

    p = sub.add_parser("dispatch", help="claim held mail, have it scanned, apply verdicts")
    _common(p)
    p.add_argument("--broker", metavar="URL", help=BROKER_HELP)
    p.add_argument("--max-in-flight", type=int, metavar="N",
                   help="messages claimed and not yet settled, at most (default: "
                   f"dispatcher.max_in_flight, {d.max_in_flight})")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help=f"messages per Celery task (default: dispatcher.batch_size, "
                   f"{d.batch_size})")
    p.add_argument("--once", action="store_true",
                   help="drain what is in hold now, then exit (default: run until stopped); on a "
                   "terminal, with a progress bar: handled/total, msg/s, ETA, in flight")
    p.add_argument("--local", type=int, metavar="N",
                   help="scan in N local processes, without a broker (default: "
                   f"dispatcher.local_workers, {d.local_workers}: the broker and its workers)")
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus metrics here (default: dispatcher.metrics_address, "
                   "empty: none)")
    p.add_argument("--id", default="",
                   help="this dispatcher's name, which names its verdict list (default: the "
                   "host name)")
    p.add_argument("--no-drop-privileges", action="store_true",
                   help="stay root, for tests only: files must still belong to mail_owner "
                   "(default: become Postfix's mail_owner)")
    p.add_argument("--log-level", default="INFO", metavar="LEVEL", help=LOG_HELP)
    p.set_defaults(func=cmd_dispatch)

    p = sub.add_parser("worker", help="run a Celery scanning worker")
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    p.add_argument("--broker", metavar="URL", help=BROKER_HELP)
    from workers.clamdclient import DEFAULT_ADDRESSES
    clamd_default = ", ".join(DEFAULT_ADDRESSES)
    p.add_argument("--clamd", action="append", metavar="ADDR",
                   help="a clamd address: unix:/path, unix:///path, tcp:HOST:PORT or "
                   "tcp://HOST:PORT; repeat for several (default: $HOLDSCAN_CLAMD, else "
                   f"scanners.clamav.addresses, {clamd_default})")
    p.add_argument("--concurrency", type=int, metavar="N",
                   help="scanning processes (default: worker.concurrency, "
                   f"{_D.worker.concurrency}: one per CPU core)")
    p.add_argument("--queues", metavar="NAME[,NAME]",
                   help=f"the Celery queues to consume (default: broker.queue, {_D.broker.queue}, "
                   "and with broker.queue_per_store one per broker.content_stores)")
    p.add_argument("--hostname", metavar="NAME@HOST",
                   help="the Celery node name, unique per worker (default: celery@ and the "
                   "host name)")
    p.add_argument("--log-level", default="INFO", metavar="LEVEL", help=LOG_HELP)
    p.set_defaults(func=cmd_worker)

    q = sub.add_parser("cache", help="the workers' verdict cache").add_subparsers(
        dest="cache_command", required=True)
    p = q.add_parser("flush", help="forget every cached clamd answer (after local signatures "
                     "or clamd.conf changed)")
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    p.add_argument("--broker", metavar="URL", help=BROKER_HELP)
    p.set_defaults(func=cmd_cache_flush)

    p = sub.add_parser("status", help="hold depth, in flight, workers seen, last errors")
    _common(p)
    _json(p)
    p.set_defaults(func=cmd_status)

    q = sub.add_parser("quarantine", help="the quarantine store").add_subparsers(
        dest="qcommand", required=True)
    p = q.add_parser("list", help="one line per quarantined message")
    _common(p)
    _json(p)
    p.add_argument("--since", metavar="DATE|DURATION",
                   help="stored since a date (2024-05-01[T12:00], UTC) or for a while (12h, "
                   "7d) (default: any time)")
    p.add_argument("--reason", metavar="TEXT",
                   help="the reason contains TEXT, or the verdict is TEXT, case ignored "
                   "(default: any)")
    p.set_defaults(func=cmd_quarantine_list)
    p = q.add_parser("show", help="envelope, verdict, findings and headers of one entry")
    _common(p)
    _json(p)
    p.add_argument("id", help="the entry's ID, as `quarantine list` shows it")
    p.set_defaults(func=cmd_quarantine_show)
    p = q.add_parser("release", help="deliver the original after all (once, unscanned)")
    _common(p)
    p.add_argument("--to", metavar="ADDR", help="deliver only to ADDR (default: the recipients "
                   "it was stopped for)")
    p.add_argument("id", help="the entry's ID, as `quarantine list` shows it")
    p.set_defaults(func=cmd_quarantine_release)
    p = q.add_parser("delete", help="remove one entry")
    _common(p)
    p.add_argument("id", help="the entry's ID, as `quarantine list` shows it")
    p.set_defaults(func=cmd_quarantine_delete)
    p = q.add_parser("expire", help="remove entries older than N days")
    _common(p)
    p.add_argument("--days", type=int, metavar="N",
                   help="remove entries stored more than N days ago (default: "
                   f"dispatcher.quarantine_days, {d.quarantine_days}: refuse to guess)")
    p.set_defaults(func=cmd_quarantine_expire)

    p = sub.add_parser("park", help="move a queued message (hold, incoming, deferred) into the "
                       "quarantine store, to be released by hand later")
    _common(p)
    p.add_argument("--reason", metavar="TEXT",
                   help="why; shown by quarantine list/show (default: none)")
    p.add_argument("queue_id", help="Postfix's queue ID of the message")
    p.set_defaults(func=cmd_park)
    p = sub.add_parser("scan", help="scan and release a message that someone else parked in "
                       "hold (it has Postfix's defer/bounce/trace logs)")
    _common(p)
    p.add_argument("queue_id", help="Postfix's queue ID of the message in hold")
    p.set_defaults(func=cmd_scan)

    q = sub.add_parser("policy", help="the [policy] table").add_subparsers(
        dest="qcommand", required=True)
    p = q.add_parser("explain", help="what each verdict gets for one sender and recipient")
    _common(p)
    _json(p)
    p.add_argument("sender", metavar="FROM", help="envelope sender; '' or <> for none")
    p.add_argument("recipient", metavar="TO", help="envelope recipient")
    p.set_defaults(func=cmd_policy_explain)

    q = sub.add_parser("queue", help="Postfix queue files").add_subparsers(
        dest="qcommand", required=True)
    p = q.add_parser("cat", help="print a queue file, like postcat")
    _common(p)
    _json(p)
    p.add_argument("target", metavar="PATH|ID", help="a queue file, or a queue ID to look up "
                   "in hold, incoming, active, deferred and corrupt")
    p.set_defaults(func=cmd_queue_cat)

    p = sub.add_parser("web", help="the quarantine in a browser (docs/web.md)")
    _common(p)
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="where to serve (default: web.listen, 127.0.0.1:8025)")
    p.add_argument("--passwd", metavar="NAME", help="set NAME's password (asked, or one line "
                   "on standard input) instead of serving (default: serve)")
    p.add_argument("--remove-admin", metavar="NAME",
                   help="remove an administrator instead of serving (default: serve)")
    p.set_defaults(func=cmd_web)

    p = sub.add_parser("check", help="verify this host's set-up and say how to fix it")
    _common(p)
    p.add_argument("--broker", metavar="URL", help=BROKER_HELP)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="run a complete private set-up and show mail flowing")
    p.add_argument("--keep", action="store_true",
                   help="stay up until Ctrl-C, SIGTERM or SIGHUP (default: stop and clean up "
                   "once the mail is shown)")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    from dispatcher.park import ParkError
    from dispatcher.postfix import PostfixError
    from dispatcher.quarantine import QuarantineError
    from dispatcher.spool import SpoolError
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ConfigError, PostfixError, SpoolError, QuarantineError,
            ParkError) as e:
        print(f"holdscan: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:
        print(f"holdscan: {e.strerror}: {e.filename} (run as root, or as Postfix's mail_owner)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    logging.basicConfig()
    sys.exit(main())
