"""Throughput of Postfix alone against Postfix + holdscan, measured in one run.

The same smtp-source load (default 2,000 messages of 5 KB over 20 sessions) goes
through a private Postfix that relays to smtp-sink:

  1. Postfix alone (no HOLD);
  2. Postfix + holdscan: HOLD, dispatcher, clamd, 1 worker process;
  3. the same with 2 worker processes;
  4. the same with the dispatcher's local scanner pool (--local 2, no broker).

Time runs from the first message sent to the last delivery logged by Postfix.
Everything runs on this machine; on a noisy 2-core machine repeat the run and
read the ratios rather than the absolute figures.

Usage: .venv/bin/python benchmarks/throughput.py [--messages 2000] [--size 5000]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from holdscan.lab.clamd import ClamdServer  # noqa: E402
from holdscan.lab.cluster import Cluster, lab_config  # noqa: E402
from holdscan.lab.postfix import PostfixInstance, free_port  # noqa: E402
from holdscan.lab.redis import RedisServer  # noqa: E402

SENT = re.compile(r"status=sent")


def run_load(pf: PostfixInstance, messages: int, size: int, sessions: int,
             timeout: float = 600) -> float:
    start = time.monotonic()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
                    "-f", "bench@example.test", "-t", "sink@example.test",
                    f"127.0.0.1:{pf.port}"], check=True)
    while True:
        n = len(SENT.findall(pf.log()))
        if n >= messages:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"only {n} of {messages} delivered after {timeout}s")
        time.sleep(0.1)


def smtp_sink(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{port}", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def with_holdscan(args: argparse.Namespace, workers: int, local: int = 0) -> float:
    sink_port = free_port()
    sink = smtp_sink(sink_port)
    base = Path(tempfile.mkdtemp(prefix="holdscan-bench-"))
    os.chmod(base, 0o755)
    try:
        with PostfixInstance(sink_port) as pf, RedisServer() as rds, \
                ClamdServer(tcp=False) as clamd:
            cfg = lab_config(base / "holdscan.toml", pf.config_dir, rds.url,
                             clamd.addresses[0], batch_size=args.batch_size)
            cluster = Cluster(cfg, base)
            try:
                if local:
                    cluster.start_dispatcher("--local", str(local), "--log-level", "WARNING")
                else:
                    for i in range(workers):
                        cluster.start_worker(concurrency=1, name=f"bench{i}-")
                    cluster.start_dispatcher("--log-level", "WARNING")
                time.sleep(3)      # let workers connect and clamd load
                return run_load(pf, args.messages, args.size, args.sessions)
            finally:
                cluster.close()
    finally:
        sink.terminate()
        sink.wait()
        subprocess.run(["rm", "-rf", str(base)], check=False)


def postfix_alone(args: argparse.Namespace) -> float:
    sink_port = free_port()
    sink = smtp_sink(sink_port)
    try:
        with PostfixInstance(sink_port, hold=False) as pf:
            return run_load(pf, args.messages, args.size, args.sessions)
    finally:
        sink.terminate()
        sink.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--skip-local", action="store_true")
    args = ap.parse_args()
    results = []
    t = postfix_alone(args)
    results.append(("Postfix alone", t))
    print(f"Postfix alone: {args.messages / t:7.1f} msg/s", flush=True)
    runs = [("Postfix + holdscan, 1 worker", 1, 0), ("Postfix + holdscan, 2 workers", 2, 0)]
    if not args.skip_local:
        runs.append(("Postfix + holdscan --local 2", 0, 2))
    for label, workers, local in runs:
        t2 = with_holdscan(args, workers, local)
        results.append((label, t2))
        print(f"{label}: {args.messages / t2:7.1f} msg/s", flush=True)
    base = args.messages / results[0][1]
    print(f"\n{args.messages} messages of {args.size} bytes, {args.sessions} SMTP sessions, "
          f"batch size {args.batch_size}, {os.cpu_count()} cores")
    print(f"{'set-up':34} {'msg/s':>8} {'ratio':>7}")
    for label, t in results:
        rate = args.messages / t
        print(f"{label:34} {rate:8.1f} {rate / base:7.0%}")


if __name__ == "__main__":
    main()
