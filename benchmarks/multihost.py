"""Many mail hosts, one worker cluster: per-host throughput and latency, equal load
against one host flooding.

Each run starts three private Postfix instances (hosts a, b and c, each relaying to its
own smtp-sink) with a dispatcher each (IDs mxa, mxb, mxc), two Celery workers (one
process each), one clamd and one Redis broker; with --stores each host also gets its own
content-store Redis, named in its requests and mapped by the workers. Two loads take
turns, round after round:

  equal   every host sends --rate messages per second;
  flood   host a sends --factor times that, b and c --rate each.

Each host's load is smtp-source, paced (a batch every 0.1 s, as benchmarks/throughput.py
--rate does), for --seconds; after a warm-up on every host. Latency is Postfix's own
`delay=` of each delivery (arrival at smtpd to the sink's reply), read from each host's
log; a host's msg/s is its messages over the time from the first sent to its last
delivery. A quiet host is starved when its p99 under flood is far above its p99 under
equal load.

--variants compares dispatcher settings in the same rounds, e.g.
`--variants default,max_in_flight=200,queue_per_host` (queue_per_host: each dispatcher
sends to a queue of its own, `[broker] queue_per_store`, and the workers take from the
queues in turn).

Keep the flood within what the hosts' Postfix accepts: a paced smtp-source is started
every 0.1 s whether the last one has finished or not, and once too many wait for smtpd
(on 2 shared cores, --rate 25 with --factor 10 once left smtp-source processes waiting
for ever) the run does not finish; --timeout then stops it.

Usage: flock /tmp/holdscan-bench.lock .venv/bin/python benchmarks/multihost.py
           [--rounds 3] [--rate 15] [--factor 10] [--seconds 30] [--stores]
           [--variants default,queue_per_host] [--loads equal,flood]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from holdscan.lab.clamd import ClamdServer  # noqa: E402
from holdscan.lab.cluster import Cluster, write_config  # noqa: E402
from holdscan.lab.postfix import PostfixInstance, free_port  # noqa: E402
from holdscan.lab.redis import RedisServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import (  # noqa: E402
    MailLog,
    machine_line,
    percentile,
    send_all,
    smtp_sink,
    smtp_source,
    spread,
    versions,
    wait_delivered,
)

HOSTS = ("a", "b", "c")


@dataclass
class HostResult:
    host: str
    messages: int
    seconds: float          # first message sent (on any host) -> this host's last delivery
    delays: list[float]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@dataclass
class Run:
    variant: str
    load: str
    round: int
    hosts: dict[str, HostResult]
    redis_bytes: float = 0.0        # broker and content stores, in + out, per message
    redis_peak: float = 0.0         # the highest used_memory above the start, bytes


def redis_traffic(servers: list[RedisServer]) -> int:
    total = 0
    for r in {id(x): x for x in servers}.values():
        stats = r.client().info("stats")
        total += int(stats["total_net_input_bytes"]) + int(stats["total_net_output_bytes"])
    return total


def redis_memory(servers: list[RedisServer]) -> int:
    return sum(int(r.client().info("memory")["used_memory"])
               for r in {id(x): x for x in servers}.values())


def variant_settings(variant: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """([dispatcher], [broker]) settings of a variant: "default", "queue_per_host",
    or NAME=VALUE of [dispatcher] (e.g. max_in_flight=200), joined by '+'."""
    dispatcher: dict[str, Any] = {}
    broker: dict[str, Any] = {}
    for part in variant.split("+"):
        if part == "default":
            continue
        if part == "queue_per_host":
            broker["queue_per_store"] = True
            continue
        name, _, value = part.partition("=")
        dispatcher[name] = float(value) if "." in value else int(value)
    return dispatcher, broker


def run_once(variant: str, load: str, rnd: int, args: argparse.Namespace) -> Run:
    base = Path(tempfile.mkdtemp(prefix="holdscan-multihost-"))
    os.chmod(base, 0o755)
    dispatcher_extra, broker_extra = variant_settings(variant)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, base, True)
        clamd = stack.enter_context(ClamdServer(tcp=False))
        broker = stack.enter_context(RedisServer())
        stores = {h: stack.enter_context(RedisServer()) if args.stores else broker
                  for h in HOSTS}
        postfixes: dict[str, PostfixInstance] = {}
        for h in HOSTS:
            port = free_port()
            sink = smtp_sink(port)
            stack.callback(lambda s=sink: (s.terminate(), s.wait()))
            postfixes[h] = stack.enter_context(PostfixInstance(port, hold=True))
        common = {"scanners.clamav": {"addresses": [clamd.addresses[0]]}}
        clusters: dict[str, Cluster] = {}
        for h in HOSTS:
            pf = postfixes[h]
            b: dict[str, Any] = {"url": broker.url, **broker_extra}
            if args.stores or broker_extra.get("queue_per_store"):
                b["content_store"] = f"mx{h}"
                b["content_url"] = stores[h].url
            tables: dict[str, dict[str, Any]] = {
                "postfix": {"config_directory": str(pf.config_dir)}, "broker": b, **common}
            if dispatcher_extra:
                tables["dispatcher"] = dispatcher_extra
            (base / h).mkdir()
            os.chmod(base / h, 0o755)
            c = Cluster(write_config(base / h / "holdscan.toml", tables), base / h)
            stack.callback(c.close)
            c.start_dispatcher("--id", f"mx{h}")
            clusters[h] = c
        worker_broker: dict[str, Any] = {"url": broker.url, **broker_extra}
        worker_tables: dict[str, dict[str, Any]] = {
            "postfix": {"config_directory": str(postfixes["a"].config_dir)},
            "broker": worker_broker, **common}
        if args.stores or broker_extra.get("queue_per_store"):
            worker_tables["broker.content_stores"] = {f"mx{h}": stores[h].url for h in HOSTS}
        (base / "workers").mkdir()
        workers = Cluster(write_config(base / "workers" / "holdscan.toml", worker_tables),
                          base / "workers")
        stack.callback(workers.close)
        for i in range(args.workers):
            workers.start_worker(concurrency=1, name=f"bench{i}-", log_level="INFO")
        logs = {h: MailLog(postfixes[h].maillog) for h in HOSTS}

        warm = [smtp_source(postfixes[h].port, args.warmup, 5, args.size) for h in HOSTS]
        for p in warm:
            p.wait()
        for h in HOSTS:
            wait_delivered(logs[h], args.warmup, args.timeout, args.stall)
            logs[h].delays.clear()

        rates = {h: args.rate * (args.factor if load == "flood" and h == "a" else 1)
                 for h in HOSTS}
        counts = {h: int(rates[h] * args.seconds) for h in HOSTS}
        errors: list[BaseException] = []

        def send(h: str) -> None:
            try:
                send_all(postfixes[h].port, argparse.Namespace(
                    rate=rates[h], messages=counts[h], sessions=args.sessions, size=args.size))
            except BaseException as e:  # noqa: BLE001  (reported by the main thread)
                errors.append(e)

        redises = [broker, *stores.values()]
        traffic, memory = redis_traffic(redises), redis_memory(redises)
        peak = 0
        start = time.monotonic()
        senders = [threading.Thread(target=send, args=(h,), daemon=True) for h in HOSTS]
        for t in senders:
            t.start()
        done: dict[str, float] = {}
        while len(done) < len(HOSTS):
            time.sleep(0.2)
            now = time.monotonic()
            peak = max(peak, redis_memory(redises) - memory)
            for h in HOSTS:
                if h not in done and logs[h].poll() >= args.warmup + counts[h]:
                    done[h] = now - start
            if now - start > args.timeout:
                raise TimeoutError(f"not all delivered after {args.timeout:.0f}s: "
                                   + ", ".join(f"{h} {logs[h].sent - args.warmup}/{counts[h]}"
                                               for h in HOSTS))
        for t in senders:
            t.join()
        if errors:
            raise errors[0]
        traffic = redis_traffic(redises) - traffic
        time.sleep(1)
        for h in HOSTS:
            if logs[h].poll() != args.warmup + counts[h]:
                raise RuntimeError(f"host {h}: {logs[h].sent - args.warmup} deliveries for "
                                   f"{counts[h]} messages: some were delivered twice")
        return Run(variant, load, rnd, {h: HostResult(h, counts[h], done[h], logs[h].delays[:])
                                        for h in HOSTS}, traffic / sum(counts.values()), peak)


def report(runs: list[Run], args: argparse.Namespace, variants: list[str],
           loads: list[str]) -> None:
    print(f"\nthree mail hosts (a, b, c), {args.workers} workers (one process each), one "
          f"clamd, one broker{', a content store per host' if args.stores else ''}; "
          f"{args.size}-byte messages for {args.seconds:g} s per run after {args.warmup} per "
          f"host to warm up; {args.rounds} rounds, runs interleaved; median [lowest-highest]")
    print(f"load: equal = every host {args.rate:g} msg/s; flood = host a "
          f"{args.rate * args.factor:g} msg/s, b and c {args.rate:g} msg/s")
    print(f"machine: {machine_line()}")
    print(f"software: {versions()}")
    print("Shared machine: other work ran beside these runs, so the figures are noisy.\n")
    print(f"{'variant':28} {'load':6} {'host':4} {'msg/s':>16} {'p50 s':>18} {'p99 s':>18}")
    for v in variants:
        for load in loads:
            rs = [r for r in runs if r.variant == v and r.load == load]
            for h in HOSTS:
                hr = [r.hosts[h] for r in rs]
                print(f"{v:28} {load:6} {h:4} {spread([x.rate for x in hr]):>16} "
                      f"{spread([percentile(x.delays, 0.5) for x in hr], '{:.2f}'):>18} "
                      f"{spread([percentile(x.delays, 0.99) for x in hr], '{:.2f}'):>18}")
    print("\nRedis (broker and content stores together): bytes in + out per message, and the "
          "highest memory above the start")
    for v in variants:
        for load in loads:
            rs = [r for r in runs if r.variant == v and r.load == load]
            print(f"{v:28} {load:6} {spread([r.redis_bytes / 1024 for r in rs], '{:.1f}')} KB"
                  f"/msg, {spread([r.redis_peak / 1e6 for r in rs], '{:.1f}')} MB")
    if "equal" in loads and "flood" in loads:
        print("\nquiet hosts (b, c): p99 under flood over p99 under equal load, same round")
        for v in variants:
            ratios = []
            for rnd in range(1, args.rounds + 1):
                by = {r.load: r for r in runs if r.variant == v and r.round == rnd}
                if "equal" in by and "flood" in by:
                    for h in ("b", "c"):
                        eq = percentile(by["equal"].hosts[h].delays, 0.99)
                        ratios.append(percentile(by["flood"].hosts[h].delays, 0.99) / eq)
            print(f"{v:28} {spread(ratios, '{:.1f}')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=15.0, help="a quiet host's msg/s")
    ap.add_argument("--factor", type=float, default=10.0, help="host a's rate under flood")
    ap.add_argument("--seconds", type=float, default=30.0, help="of load per run")
    ap.add_argument("--warmup", type=int, default=100, help="messages per host")
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stores", action="store_true", help="a content store per mail host")
    ap.add_argument("--loads", default="equal,flood")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--stall", type=float, default=60.0)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", metavar="PATH", help="also write every run's figures here")
    args = ap.parse_args()
    variants, loads = args.variants.split(","), args.loads.split(",")
    runs: list[Run] = []
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for rnd in range(1, args.rounds + 1):
        for v in variants:
            for load in loads:
                r = run_once(v, load, rnd, args)
                runs.append(r)
                print(f"round {rnd} {v:28} {load:6} " + "  ".join(
                    f"{h}: {x.rate:6.1f} msg/s p50 {percentile(x.delays, 0.5):5.2f}s "
                    f"p99 {percentile(x.delays, 0.99):5.2f}s" for h, x in r.hosts.items())
                    + f"  Redis {r.redis_bytes / 1024:.1f} KB/msg in+out, peak +"
                    f"{r.redis_peak / 1e6:.1f} MB  (load {os.getloadavg()[0]:.1f})", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(
                        [{"variant": x.variant, "load": x.load, "round": x.round,
                          "redis_bytes_per_msg": x.redis_bytes, "redis_peak": x.redis_peak,
                          "hosts": {h: {"rate": y.rate, "p50": percentile(y.delays, 0.5),
                                        "p99": percentile(y.delays, 0.99)}
                                    for h, y in x.hosts.items()}} for x in runs], indent=1))
    report(runs, args, variants, loads)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
