"""The verdict cache: one attachment sent to many recipients, with the cache and without.

One worker process (workers.engine.scan_message with every default scanner) and one
private clamd (as configured by default: its own clean-file cache on) scan N messages
that differ in recipient, Subject and Message-ID and carry the same attachment (random
bytes, 1 MB by default):

  off   [scanners.clamav] cache_ttl = 0: each whole message goes to clamd, as before;
  on    the verdict cache in a private Redis, emptied (`holdscan cache flush`) before
        each pass: the attachment goes to clamd once per pass, the skeletons every time.

The passes take turns for --rounds rounds. Prints, per pass, messages/s and clamd's CPU
milliseconds per message (median [lowest-highest] over the rounds) and on/off ratios
of the medians, with the load average: on a shared machine, read the ratios.

Usage: flock /tmp/holdscan-bench.lock .venv/bin/python benchmarks/cache.py
           [--messages 500] [--size 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from holdscan.lab.clamd import ClamdServer  # noqa: E402
from holdscan.lab.cpu import tree_seconds  # noqa: E402
from holdscan.lab.redis import RedisServer  # noqa: E402
from shared.config import Config, HeadersConfig  # noqa: E402
from shared.contract import ScanRequest  # noqa: E402
from workers import verdictcache  # noqa: E402
from workers.engine import scan_message  # noqa: E402
from workers.scanners import build_scanners  # noqa: E402
from workers.scanners.base import Scanner  # noqa: E402

BOUNDARY = "=_bench_b0undary"


def body(attachment: bytes) -> bytes:
    """Everything after the headers that differ: the text and the attachment."""
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return (f'Content-Type: multipart/mixed; boundary="{BOUNDARY}"\r\n\r\n'
            f"--{BOUNDARY}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            "Hello,\r\nthe quarterly report is attached.\r\n"
            f"--{BOUNDARY}\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n"
            "Content-Disposition: attachment; filename=\"report.pdf\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + encoded + \
        f"--{BOUNDARY}--\r\n".encode()


def message(n: int, rest: bytes) -> bytes:
    return ("Received: from mx.example.test by hold.example.test;\r\n"
            "\tMon, 1 Jan 2024 10:00:00 +0000\r\n"
            f"From: Alice <alice@example.test>\r\nTo: <rcpt{n}@example.test>\r\n"
            f"Subject: Quarterly report, copy {n}\r\n"
            f"Message-ID: <cache-bench-{n}@example.test>\r\nMIME-Version: 1.0\r\n"
            ).encode() + rest


def one_pass(scanners: list[Scanner], rest: bytes, count: int,
             clamd_pid: int) -> tuple[float, float]:
    """(messages/s, clamd CPU ms per message) for `count` messages."""
    request = ScanRequest("BENCH", 1, "a@example.test", ["b@example.test"], "k", 0, "r", 0.0)
    headers = HeadersConfig()
    cpu = tree_seconds([clamd_pid])
    started = time.perf_counter()
    for n in range(count):
        verdict = scan_message(message(n, rest), request, scanners, headers, "bench")
        if verdict.verdict != "clean":
            raise RuntimeError(f"benchmark message not clean: {verdict.findings}")
    elapsed = time.perf_counter() - started
    return count / elapsed, 1000 * (tree_seconds([clamd_pid]) - cpu) / count


def show(values: list[float], digits: int = 1) -> str:
    return (f"{statistics.median(values):8.{digits}f} "
            f"[{min(values):.{digits}f}-{max(values):.{digits}f}]")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=500, help="messages per pass")
    p.add_argument("--size", type=int, default=1_000_000, help="attachment bytes")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    rest = body(random.Random(2026).randbytes(args.size))

    with ClamdServer(stream_max_length="64M", tcp=False) as clamd, RedisServer() as redis:
        assert clamd.proc is not None
        passes: dict[str, list[Scanner]] = {}
        for name, ttl in (("off", 0), ("on", 3600)):
            cfg = Config()
            cfg.broker.url = redis.url
            cfg.scanners = {"clamav": {"addresses": clamd.addresses, "cache_ttl": ttl}}
            passes[name] = build_scanners(cfg)
        store = redis.client()
        for scanners in passes.values():       # warm up: connections, first scans
            one_pass(scanners, rest, 3, clamd.proc.pid)
        rates: dict[str, list[float]] = {name: [] for name in passes}
        cpu: dict[str, list[float]] = {name: [] for name in passes}
        for r in range(args.rounds):
            for name, scanners in passes.items():
                verdictcache.flush(store)       # each "on" pass starts with nothing cached
                rate, ms = one_pass(scanners, rest, args.messages, clamd.proc.pid)
                rates[name].append(rate)
                cpu[name].append(ms)
                print(f"round {r + 1} {name:>3}: {rate:7.1f} msg/s, clamd {ms:6.2f} ms/msg",
                      flush=True)
        print(f"\n{args.messages} messages, each with the same {args.size:,}-byte attachment "
              f"({len(message(0, rest)):,} bytes a message), {args.rounds} rounds")
        print(f"{'cache':>5} {'msg/s median [range]':>28} {'clamd CPU ms/msg [range]':>30}")
        for name in passes:
            print(f"{name:>5} {show(rates[name]):>28} {show(cpu[name], 2):>30}")
        speed = statistics.median(rates["on"]) / statistics.median(rates["off"])
        share = statistics.median(cpu["on"]) / max(statistics.median(cpu["off"]), 1e-9)
        print(f"on/off: {speed:.1f}x the messages/s, {share:.3f}x clamd's CPU per message")
        print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
              + " (a shared 2-core machine: read the ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
