"""The `holdscan` command: dispatch, worker, status, quarantine, policy, queue, check, demo.

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
    from dispatcher.service import Dispatcher, default_dispatcher_id
    from dispatcher.transport import CeleryTransport, LocalTransport
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
    if not args.no_drop_privileges:
        drop_privileges(spool.settings.mail_owner)
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
                      once=args.once).run()


# -- worker ---------------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    if args.config:
        os.environ["HOLDSCAN_CONFIG"] = args.config
    if args.broker:
        os.environ["HOLDSCAN_BROKER"] = args.broker
    if args.clamd:
        os.environ["HOLDSCAN_CLAMD"] = ",".join(args.clamd)
    config_mod.load()     # fail here, in one line, rather than inside Celery
    from workers.app import app, cfg
    argv = ["worker", f"--loglevel={args.log_level}",
            f"--queues={args.queues or cfg.broker.queue}"] + (["-E"] if cfg.broker.task_events
                                                             else [])
    concurrency = args.concurrency or cfg.worker.concurrency
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    app.worker_main(argv)
    return 0


# -- status -----------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    from dispatcher.status import Status
    cfg = _load(args)
    spool = _spool(cfg)
    hold = sum(1 for _ in spool.hold_files())
    st = Status(spool.state_dir / "status.json").read()
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
        if f.get("action") != "clean":
            part = f" (MIME part {f['part']})" if f.get("part") else ""
            out.append(f"finding:      {f['scanner']} {f['action']}: {f['detail']}{part}")
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
    p.add_argument("--config", help="TOML configuration file (also HOLDSCAN_CONFIG)")
    p.add_argument("--postfix-config", help="Postfix configuration directory (postfix -c)")
    p.add_argument("--queue-directory", help="Postfix's queue_directory (default: postconf)")
    p.add_argument("--state-dir", help="holdscan's state directory (default: QUEUE/holdscan)")
    p.add_argument("--quarantine-dir", help="quarantine store (default: STATE/quarantine)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="holdscan", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("dispatch", help="claim held mail, have it scanned, apply verdicts")
    _common(p)
    p.add_argument("--broker", help="broker URL (also HOLDSCAN_BROKER)")
    p.add_argument("--max-in-flight", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--once", action="store_true", help="drain what is in hold now, then exit")
    p.add_argument("--local", type=int, metavar="N",
                   help="scan in N local processes, without a broker")
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics here")
    p.add_argument("--id", default="", help="this dispatcher's name (default: host name)")
    p.add_argument("--no-drop-privileges", action="store_true",
                   help="stay root (tests only: files must still belong to mail_owner)")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_dispatch)

    p = sub.add_parser("worker", help="run a Celery scanning worker")
    p.add_argument("--config")
    p.add_argument("--broker")
    p.add_argument("--clamd", action="append", metavar="ADDR",
                   help="clamd address, unix:/path or tcp:host:port (repeatable)")
    p.add_argument("--concurrency", type=int)
    p.add_argument("--queues")
    p.add_argument("--hostname")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="hold depth, in flight, workers seen, last errors")
    _common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    q = sub.add_parser("quarantine", help="the quarantine store").add_subparsers(
        dest="qcommand", required=True)
    p = q.add_parser("list", help="one line per quarantined message")
    _common(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--since", metavar="DATE|DURATION",
                   help="stored since a date (2024-05-01[T12:00], UTC) or for a while (12h, 7d)")
    p.add_argument("--reason", metavar="TEXT",
                   help="the reason contains TEXT, or the verdict is TEXT (case ignored)")
    p.set_defaults(func=cmd_quarantine_list)
    p = q.add_parser("show", help="envelope, verdict, findings and headers of one entry")
    _common(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("id")
    p.set_defaults(func=cmd_quarantine_show)
    p = q.add_parser("release", help="deliver the original after all (once, unscanned)")
    _common(p)
    p.add_argument("--to", metavar="ADDR", help="deliver only to ADDR instead of the recipients "
                   "it was stopped for")
    p.add_argument("id")
    p.set_defaults(func=cmd_quarantine_release)
    p = q.add_parser("delete", help="remove one entry")
    _common(p)
    p.add_argument("id")
    p.set_defaults(func=cmd_quarantine_delete)
    p = q.add_parser("expire", help="remove entries older than N days")
    _common(p)
    p.add_argument("--days", type=int, help="default: dispatcher.quarantine_days")
    p.set_defaults(func=cmd_quarantine_expire)

    p = sub.add_parser("park", help="move a queued message (hold, incoming, deferred) into the "
                       "quarantine store, to be released by hand later")
    _common(p)
    p.add_argument("--reason", metavar="TEXT", help="why; shown by quarantine list/show")
    p.add_argument("queue_id")
    p.set_defaults(func=cmd_park)
    p = sub.add_parser("scan", help="scan and release a message that someone else parked in "
                       "hold (it has Postfix's defer/bounce/trace logs)")
    _common(p)
    p.add_argument("queue_id")
    p.set_defaults(func=cmd_scan)

    q = sub.add_parser("policy", help="the [policy] table").add_subparsers(
        dest="qcommand", required=True)
    p = q.add_parser("explain", help="what each verdict gets for one sender and recipient")
    _common(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("sender", metavar="FROM", help="envelope sender; '' or <> for none")
    p.add_argument("recipient", metavar="TO")
    p.set_defaults(func=cmd_policy_explain)

    q = sub.add_parser("queue", help="Postfix queue files").add_subparsers(
        dest="qcommand", required=True)
    p = q.add_parser("cat", help="print a queue file, like postcat")
    _common(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("target", metavar="PATH|ID")
    p.set_defaults(func=cmd_queue_cat)

    p = sub.add_parser("check", help="verify this host's set-up and say how to fix it")
    _common(p)
    p.add_argument("--broker")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="run a complete private set-up and show mail flowing")
    p.add_argument("--keep", action="store_true", help="stay up until Ctrl-C")
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
