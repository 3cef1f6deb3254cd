"""How soon the dispatcher claims a held file once Postfix makes it ready.

A private Postfix holds each message it receives; the dispatcher runs with no
worker, so a claimed file stays locked. For each of N messages sent one by one,
a poller (1 ms) notes when the file in hold becomes ready (mode 0700) and when
it becomes locked (our flock attempt fails): the difference is the claim
latency that inotify gives. Prints the median, the 90th percentile and the
worst case. Target: under 100 ms on an idle system.

Usage: .venv/bin/python benchmarks/claim_latency.py [--messages 30]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import smtplib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from holdscan.lab.cluster import Cluster, lab_config  # noqa: E402
from holdscan.lab.postfix import PostfixInstance, free_port  # noqa: E402
from holdscan.lab.redis import RedisServer  # noqa: E402


def locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=30)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="holdscan-latency-"))
    os.chmod(base, 0o755)
    latencies = []
    with PostfixInstance(free_port()) as pf, RedisServer() as rds:
        cfg = lab_config(base / "h.toml", pf.config_dir, rds.url, "unix:/nonexistent",
                         rescan_interval=3600.0, verdict_deadline=3600.0)
        c = Cluster(cfg, base)
        try:
            c.start_dispatcher("--log-level", "WARNING")
            time.sleep(3)
            hold = pf.queue_dir / "hold"
            for n in range(args.messages):
                before = set(hold.iterdir())
                with smtplib.SMTP("127.0.0.1", pf.port) as s:
                    s.sendmail("a@example.test", ["b@example.test"],
                               f"Subject: {n}\r\n\r\nbody\r\n".encode())
                ready_at = None
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    new = [p for p in hold.iterdir() if p not in before]
                    if new:
                        st = new[0].stat()
                        if ready_at is None and st.st_mode & 0o700 == 0o700:
                            ready_at = time.monotonic()
                        if ready_at is not None and locked(new[0]):
                            latencies.append(time.monotonic() - ready_at)
                            break
                    time.sleep(0.001)
                else:
                    print(f"message {n}: not claimed within 10 s")
        finally:
            c.close()
    ms = sorted(x * 1000 for x in latencies)
    print(f"{len(ms)} of {args.messages} messages claimed; from ready to claimed: "
          f"median {statistics.median(ms):.2f} ms, 90th percentile "
          f"{ms[int(len(ms) * 0.9) - 1]:.2f} ms, worst {ms[-1]:.1f} ms "
          "(1 ms polling; target < 100 ms)")


if __name__ == "__main__":
    main()
