"""Draining a backlog: N messages held while no dispatcher runs, then let go.

Each timed run starts fresh servers: a private Postfix that holds everything it
receives (header_checks HOLD) and relays to smtp-sink, which appends every
message to a dump file so that each one is counted at the far end. The two
ways to let the backlog go take turns (holdscan, postfix, holdscan, ...):

  holdscan   Redis, clamd as Debian configures it (temporary files in /tmp, on
             disk), 2 Celery workers (one process each) and `holdscan dispatch`
             with its default settings. The daemon, not `--once`: a backlog is
             what a dispatcher finds when it starts again after being stopped
             (an upgrade, an outage), and that is the daemon's start, with its
             inotify watch and periodic rescan running as they would.
  postfix    Postfix alone releasing the same backlog itself:
             `postsuper -H ALL; postqueue -f`.

Before the backlog is made, each set-up delivers --warmup messages the same way
(the workers, clamd and Postfix's delivery agents are running when the clock
starts); the dispatcher that drained the warm-up is stopped, and a new one is
started for the timed run, so its peak memory is that of the drain alone. Then
smtp-source puts N messages of 5 KB into hold, and the clock runs from the
dispatcher's start (or postsuper's) until the sink has all of them.

Every message must reach the sink exactly once (counted by the queue ID in
Postfix's own Received: line), and hold must be empty after, or the run fails.
Printed: msg/s median [lowest-highest], holdscan's rate over Postfix's in the
same round, the rate over the first and the last tenth of the messages (a
per-message cost that grew with the hold would show as a slow start), the
dispatcher's peak memory (VmHWM from /proc/PID/status) and the largest of the
workers' processes, and CPU per message.

Usage: flock /tmp/holdscan-bench.lock .venv/bin/python benchmarks/backlog.py
           [--messages 50000] [--rounds 2] [--setups holdscan,postfix]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.lab import (  # noqa: E402
    MailLog,
    SinkDump,
    machine_line,
    master_pid,
    smtp_sink,
    smtp_source,
    spread,
    versions,
)
from holdscan.lab import cpu  # noqa: E402
from holdscan.lab.clamd import ClamdServer  # noqa: E402
from holdscan.lab.cluster import Cluster, write_config  # noqa: E402
from holdscan.lab.postfix import PostfixInstance, free_port, run  # noqa: E402
from holdscan.lab.redis import RedisServer  # noqa: E402

SETUPS = ("holdscan", "postfix")
LABELS = {"holdscan": "holdscan dispatch, 2 workers, clamd as Debian configures it",
          "postfix": "Postfix alone: postsuper -H ALL; postqueue -f"}


@dataclass
class Result:
    setup: str
    round: int
    messages: int
    seconds: float
    first_tenth: float              # msg/s over the first tenth of the messages
    last_tenth: float
    cpu: dict[str, float] = field(default_factory=dict)     # CPU seconds per process tree
    peak_kb: dict[str, int] = field(default_factory=dict)   # VmHWM: dispatcher, worker

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def vm_hwm_kb(pid: int) -> int:
    """A process's peak resident memory so far, in kB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def hold_count(pf: PostfixInstance) -> int:
    # Flat hold (Postfix's default): one directory listing, cheap enough to poll.
    return len(os.listdir(pf.queue_dir / "hold"))


class Drain:
    """Waits for the sink to count deliveries, keeping the time each tenth was reached."""

    def __init__(self, dump: SinkDump, log: MailLog, pf: PostfixInstance,
                 args: argparse.Namespace) -> None:
        self.dump, self.log, self.pf, self.args = dump, log, pf, args

    def wait(self, count: int, start: float, base: int = 0) -> list[tuple[float, int]]:
        """Until the sink has `count`; (seconds since start, delivered - base) samples."""
        samples = [(0.0, 0)]
        seen, last_progress = self.dump.poll(), time.monotonic()
        while seen < count:
            time.sleep(0.2)
            now = time.monotonic()
            n = self.dump.poll()
            if n > seen:
                seen, last_progress = n, now
                samples.append((now - start, n - base))
            elif now - last_progress > self.args.stall:
                raise RuntimeError(f"no delivery for {self.args.stall:.0f}s at {seen}/{count}: "
                                   f"hold {hold_count(self.pf)}, incoming "
                                   f"{len(self.pf.queue_files('incoming'))}, deferred "
                                   f"{len(self.pf.queue_files('deferred'))}")
        return samples


def tenth_rates(samples: list[tuple[float, int]], n: int) -> tuple[float, float]:
    """msg/s over the first and the last tenth of n messages."""
    def when(k: int) -> float:
        return next(t for t, done in samples if done >= k)
    tenth = max(1, n // 10)
    first = tenth / max(when(tenth), 1e-3)
    last = tenth / max(when(n) - when(n - tenth), 1e-3)
    return first, last


def fill_hold(pf: PostfixInstance, count: int, args: argparse.Namespace) -> None:
    before = hold_count(pf)
    src = smtp_source(pf.port, count, args.sessions, args.size)
    if src.wait() != 0:
        raise RuntimeError(f"smtp-source exited with {src.returncode}")
    deadline = time.monotonic() + 30
    while hold_count(pf) < before + count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{hold_count(pf) - before} of {count} messages held")
        time.sleep(0.1)


def postfix_release(pf: PostfixInstance) -> None:
    pf.postsuper("-H", "ALL")
    run("postqueue", "-c", str(pf.config_dir), "-f")


def run_once(setup: str, rnd: int, args: argparse.Namespace) -> Result:
    base = Path(tempfile.mkdtemp(prefix="holdscan-backlog-"))
    os.chmod(base, 0o755)
    sink_dir = base / "sink"
    sink_dir.mkdir()
    shutil.chown(sink_dir, "postfix", "postfix")
    sink_port = free_port()
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, base, True)
        sink = smtp_sink(sink_port, sink_dir / "dump")
        stack.callback(lambda: (sink.terminate(), sink.wait()))
        pf = stack.enter_context(PostfixInstance(sink_port, hold=True))
        dump, log = SinkDump(sink_dir / "dump"), MailLog(pf.maillog)
        drain = Drain(dump, log, pf, args)
        roots: dict[str, list[int]] = {"postfix": [master_pid(pf)]}
        cluster = None
        if setup == "holdscan":
            clamd = stack.enter_context(ClamdServer(tcp=False, debian=True))
            rds = stack.enter_context(RedisServer())
            cfg = write_config(base / "holdscan.toml", {
                "postfix": {"config_directory": str(pf.config_dir)},
                "scanners.clamav": {"addresses": [clamd.addresses[0]]},
                "broker": {"url": rds.url}})
            cluster = Cluster(cfg, base)
            stack.callback(cluster.close)
            for i in range(2):
                cluster.start_worker(concurrency=1, name=f"backlog{i}-", log_level="INFO")
            roots.update(workers=[w.pid for w in cluster.workers], clamd=[clamd.proc.pid],
                         redis=[rds.proc.pid])

        # Warm-up, released the same way as the backlog will be.
        fill_hold(pf, args.warmup, args)
        if cluster is not None:
            cluster.start_dispatcher()
            drain.wait(args.warmup, time.monotonic())
            if cluster.stop_dispatcher() != 0:
                raise RuntimeError(f"the warm-up's dispatcher failed:\n{cluster.logs()[-3000:]}")
        else:
            postfix_release(pf)
            drain.wait(args.warmup, time.monotonic())

        fill_hold(pf, args.messages, args)
        procs = cpu.processes()
        before = {g: cpu.tree_seconds(r, procs) for g, r in roots.items()}
        start = time.monotonic()
        if cluster is not None:
            dispatcher = cluster.start_dispatcher()
            roots["dispatcher"] = [dispatcher.pid]
            before["dispatcher"] = 0.0
        else:
            postfix_release(pf)
        samples = drain.wait(args.warmup + args.messages, start, base=args.warmup)
        seconds = time.monotonic() - start
        procs = cpu.processes()
        used = {g: cpu.tree_seconds(r, procs) - before[g] for g, r in roots.items()}
        peak: dict[str, int] = {}
        if cluster is not None:
            peak["dispatcher"] = vm_hwm_kb(roots["dispatcher"][0])
            peak["worker"] = max(vm_hwm_kb(p) for p in cpu.descendants(roots["workers"], procs))
        time.sleep(1)       # a second copy would have arrived by now
        total = args.warmup + args.messages
        delivered = dump.poll()
        if delivered != total or len(dump.copies) != total or dump.not_once():
            raise RuntimeError(f"{setup}: {delivered} deliveries of {len(dump.copies)} messages "
                               f"for {total} sent; more than once: "
                               f"{list(dump.not_once().items())[:5]}")
        if hold_count(pf):
            raise RuntimeError(f"{setup}: {hold_count(pf)} messages still in hold")
        if log.poll() != total:
            raise RuntimeError(f"{setup}: Postfix logged {log.sent} deliveries for {total}")
        first, last = tenth_rates(samples, args.messages)
        return Result(setup, rnd, args.messages, seconds, first, last, used, peak)


def report(results: list[Result], args: argparse.Namespace) -> None:
    by = {s: [r for r in results if r.setup == s] for s in args.setups}
    print(f"\nbacklog of {args.messages} held messages of {args.size} bytes, after "
          f"{args.warmup} to warm up; {args.rounds} rounds, set-ups taking turns; "
          "median [lowest-highest]")
    print(f"machine: {machine_line(args.load_before)}, after them "
          f"{os.getloadavg()[0]:.2f}")
    print(f"software: {versions()}")
    print("Shared machine: other work may run beside these runs, so msg/s is noisy.\n")
    print(f"{'set-up':60} {'msg/s':>16} {'first 10%':>16} {'last 10%':>16}")
    for s in args.setups:
        rs = by[s]
        print(f"{LABELS[s]:60} {spread([r.rate for r in rs]):>16} "
              f"{spread([r.first_tenth for r in rs]):>16} "
              f"{spread([r.last_tenth for r in rs]):>16}")
    hs, pf = by.get("holdscan", []), by.get("postfix", [])
    if hs and pf:
        ratios = [h.rate / p.rate for h, p in zip(hs, pf, strict=False)]
        print(f"\nholdscan / Postfix alone (same round): {spread(ratios, '{:.2f}')}")
    if hs:
        print(f"peak RSS (VmHWM): dispatcher "
              f"{spread([r.peak_kb['dispatcher'] / 1024 for r in hs])} MB, largest worker "
              f"process {spread([r.peak_kb['worker'] / 1024 for r in hs])} MB")
    print("CPU ms per message: " + "; ".join(
        f"{s}: " + ", ".join(
            f"{g} {spread([1000 * r.cpu[g] / r.messages for r in by[s]], '{:.2f}')}"
            for g in by[s][0].cpu) for s in args.setups if by[s]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=50_000, help="the backlog")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--setups", default="holdscan,postfix",
                    help="comma-separated, in the order they take turns: holdscan, postfix")
    ap.add_argument("--stall", type=float, default=120.0,
                    help="seconds without a delivery before the run fails")
    args = ap.parse_args()
    args.setups = args.setups.split(",")
    if unknown := set(args.setups) - set(SETUPS):
        ap.error(f"no set-up {', '.join(sorted(unknown))}; choose from {', '.join(SETUPS)}")
    args.load_before = os.getloadavg()[0]
    print(f"load average before the runs: {args.load_before:.2f}", flush=True)
    results: list[Result] = []
    for rnd in range(1, args.rounds + 1):
        for s in args.setups:
            r = run_once(s, rnd, args)
            results.append(r)
            peak = ", ".join(f"{k} {v / 1024:.0f} MB" for k, v in r.peak_kb.items())
            print(f"round {rnd} {s:9} {r.rate:7.1f} msg/s ({r.seconds:.1f}s; first 10% "
                  f"{r.first_tenth:.0f}, last 10% {r.last_tenth:.0f} msg/s)"
                  + (f"  peak RSS: {peak}" if peak else "")
                  + f"  load {os.getloadavg()[0]:.2f}", flush=True)
    report(results, args)


if __name__ == "__main__":
    main()
