"""Throughput, CPU per message and delivery latency: Postfix alone against Postfix + holdscan.

Every set-up is a private Postfix relaying to smtp-sink on this machine, loaded
by smtp-source (5 KB messages over 20 SMTP sessions by default):

  alone      Postfix alone, no HOLD;
  holdscan   Postfix with HOLD, the dispatcher, 2 Celery workers (one process
             each), Redis, and clamd configured as Debian ships it (its
             temporary files in /tmp, on disk): the headline figure;
  tmpfs      the same, clamd's temporary files on tmpfs (tuned);
  local      the dispatcher's local scanner pool (--local 2, no broker, no
             workers), clamd as Debian ships it (tuned).

--split puts the mail host and the scanning side on one core each: Postfix,
smtp-source and smtp-sink, Redis and the dispatcher on CPU 0, the workers and
clamd on CPU 1 (each process inherits the CPUs of the benchmark at the moment
it is started; every process of every tree is checked after the warm-up and
after the timed run). The report then gives the mail host's CPU per message
(Postfix + dispatcher + Redis) apart from the scanning side's; holdscan's
share of the mail host is the dispatcher and Redis.

holdscan runs with its default settings (verdict_deadline 300 s, log level
INFO), not the lab's short deadlines, so a lost verdict shows as the stall it
would be in production.

What keeps a figure honest:
  - every timed run starts with fresh servers and a warm-up (500 messages by
    default, delivered before the clock starts), so Postfix's smtpd, cleanup
    and smtp processes and holdscan's workers and clamd sessions are running;
  - a timed run is at least 10,000 messages (--explore allows fewer);
  - the set-ups take turns (alone, holdscan, tmpfs, alone, holdscan, ...),
    three rounds by default, and each figure is printed as the median with
    the lowest and highest value;
  - time runs from the first message sent to the last delivery logged;
  - CPU time is read from /proc for each process tree (Postfix = its master
    and everything under it; dispatcher; workers; clamd; Redis; the load =
    smtp-source and smtp-sink) and for the whole machine, which includes
    whatever else runs on it;
  - latency is Postfix's own `delay=` of each delivery: from the message's
    arrival at smtpd to the sink's reply, the same instrument for every set-up.

A delivery that stops making progress for --stall seconds prints what is
waiting (hold, in flight, the Celery queue, the reply list) and, with py-spy
installed, the dispatcher's and workers' stacks.

Usage: .venv/bin/python benchmarks/throughput.py [--rounds 3] [--messages 10000]
           [--setups alone,holdscan,tmpfs] [--json results.json] [--rate MSG_PER_S]
           [--worker-counts 1,2,3 --plot workers.png] [--profile DIR] [--split]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from holdscan.lab import cpu  # noqa: E402
from holdscan.lab.clamd import ClamdServer  # noqa: E402
from holdscan.lab.cluster import Cluster, write_config  # noqa: E402
from holdscan.lab.postfix import PostfixInstance, free_port  # noqa: E402
from holdscan.lab.redis import RedisServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import (  # noqa: E402
    MailLog,
    machine_line,
    master_pid,
    send_all,
    smtp_sink,
    smtp_source,
    spread,
    versions,
    wait_delivered,
)

MIN_MESSAGES = 10_000
GROUPS = ("postfix", "dispatcher", "workers", "clamd", "redis", "load")
HOLDSCAN_GROUPS = ("dispatcher", "workers", "clamd", "redis")
# --split: the mail host's CPUs, and the scanning side's (workers and clamd).
MAIL_HOST_CPUS, SCANNING_CPUS = {0}, {1}
SCANNING_GROUPS = ("workers", "clamd")


@dataclass(frozen=True)
class Setup:
    name: str
    label: str
    holdscan: bool = True
    workers: int = 2
    local: int = 0
    clamd: str = "debian"           # "debian": Debian's clamd.conf; "tmpfs": temp on tmpfs
    tuned: bool = False


SETUPS = {s.name: s for s in (
    Setup("alone", "Postfix alone", holdscan=False),
    Setup("holdscan", "Postfix + holdscan, 2 workers, clamd as Debian ships it"),
    Setup("tmpfs", "Postfix + holdscan, 2 workers, clamd temp files on tmpfs", clamd="tmpfs",
          tuned=True),
    Setup("local", "Postfix + holdscan --local 2, clamd as Debian ships it", workers=0,
          local=2, tuned=True),
)}


@dataclass
class Result:
    setup: str
    round: int
    messages: int
    seconds: float                  # first message sent -> last delivery logged
    accept_seconds: float           # first message sent -> smtp-source done
    cpu: dict[str, float]           # process tree -> CPU seconds during the timed run
    machine: float                  # busy CPU seconds of the whole machine
    delays: list[float] = field(default_factory=list, repr=False)
    longest_gap: float = 0.0        # longest time without a delivery

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def ms_per_message(self, groups: tuple[str, ...]) -> float:
        return 1000 * sum(self.cpu.get(g, 0.0) for g in groups) / self.messages

    def percentile(self, q: float) -> float:
        d = sorted(self.delays)
        return d[min(len(d) - 1, int(q * len(d)))] if d else float("nan")


@contextmanager
def started_on(cpus: set[int] | None) -> Iterator[None]:
    """Processes started inside run on `cpus` (a child inherits its parent's CPUs);
    None: no change."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def check_split(roots: dict[str, list[int]]) -> int:
    """--split: every live process of every tree is on its side's CPUs; how many there are."""
    procs, wrong, n = cpu.processes(), [], 0
    for group, pids in roots.items():
        want = SCANNING_CPUS if group in SCANNING_GROUPS else MAIL_HOST_CPUS
        for pid in cpu.descendants(pids, procs):
            try:
                got = os.sched_getaffinity(pid)
            except OSError:
                continue        # gone since
            n += 1
            if got != want:
                wrong.append(f"{group} pid {pid} on CPUs {sorted(got)}")
    if wrong:
        raise RuntimeError(f"--split: processes on the wrong CPU: {', '.join(wrong)}")
    return n


def run_once(setup: Setup, rnd: int, args: argparse.Namespace) -> Result:
    sink_port = free_port()
    base = Path(tempfile.mkdtemp(prefix="holdscan-bench-"))
    os.chmod(base, 0o755)
    with ExitStack() as stack:
        if args.split:
            # The mail host's CPUs for everything started from here on but the scanning side.
            stack.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
            os.sched_setaffinity(0, MAIL_HOST_CPUS)
        scanning_cpus = SCANNING_CPUS if args.split else None
        sink = smtp_sink(sink_port)
        stack.callback(lambda: (sink.terminate(), sink.wait()))
        stack.callback(shutil.rmtree, base, True)
        pf = stack.enter_context(PostfixInstance(sink_port, hold=setup.holdscan))
        roots: dict[str, list[int]] = {"postfix": [master_pid(pf)], "load": [sink.pid]}
        diagnose = None
        if setup.holdscan:
            with started_on(scanning_cpus):
                clamd = stack.enter_context(ClamdServer(tcp=False,
                                                        debian=setup.clamd == "debian"))
            tables: dict[str, dict[str, object]] = {
                "postfix": {"config_directory": str(pf.config_dir)},
                "scanners.clamav": {"addresses": [clamd.addresses[0]]}}
            dispatcher = {k: v for k, v in (("batch_size", args.batch_size),
                                             ("batch_wait", args.batch_wait)) if v}
            if dispatcher:
                tables["dispatcher"] = dispatcher
            roots["clamd"] = [clamd.proc.pid]
            cluster = None
            if setup.local:
                cfg = write_config(base / "holdscan.toml", tables)
            else:
                rds = stack.enter_context(RedisServer())
                roots["redis"] = [rds.proc.pid]
                cfg = write_config(base / "holdscan.toml", {**tables, "broker": {"url": rds.url}})
            cluster = Cluster(cfg, base)
            stack.callback(cluster.close)
            with started_on(scanning_cpus):
                for i in range(setup.workers):
                    cluster.start_worker(concurrency=1, name=f"bench{i}-", log_level="INFO")
            extra = ["--local", str(setup.local)] if setup.local else []
            cluster.start_dispatcher(*extra)
            roots["dispatcher"] = [cluster.dispatcher.pid]
            roots["workers"] = [w.pid for w in cluster.workers]
            diagnose = Diagnosis(pf, cluster, rds.url if not setup.local else "", base)
        log = MailLog(pf.maillog)

        # Warm-up: every process the timed run needs is running before the clock starts.
        warm = smtp_source(pf.port, args.warmup, args.sessions, args.size)
        warm.wait()
        wait_delivered(log, args.warmup, args.timeout, args.stall, diagnose)
        log.delays.clear()
        pinned = check_split(roots) if args.split else 0

        if args.profile and setup.holdscan:
            stack.enter_context(Profiler(Path(args.profile) / f"{setup.name}-{rnd}", {
                "dispatcher": roots["dispatcher"][0],
                **{f"worker{i}": pid for i, pid in enumerate(roots["workers"])}}))
        procs = cpu.processes()
        before = {g: cpu.tree_seconds(r, procs) for g, r in roots.items()}
        machine_before = cpu.machine_seconds()
        start = time.monotonic()
        load_cpu = send_all(pf.port, args)
        accepted = time.monotonic() - start
        gap = wait_delivered(log, args.warmup + args.messages, args.timeout, args.stall,
                             diagnose)
        seconds = time.monotonic() - start
        procs = cpu.processes()
        used = {g: cpu.tree_seconds(r, procs) - before[g] for g, r in roots.items()}
        used["load"] += load_cpu
        machine = cpu.machine_seconds() - machine_before
        if args.split:
            pinned = max(pinned, check_split(roots))
            print(f"    --split: all {pinned} processes on their side's CPU", flush=True)
        time.sleep(1)
        if log.poll() != args.warmup + args.messages:
            raise RuntimeError(f"{log.sent - args.warmup} deliveries for {args.messages} "
                               "messages: some were delivered twice")
        return Result(setup.name, rnd, args.messages, seconds, accepted, used, machine,
                      log.delays[:], gap)


class Profiler:
    """py-spy sampling the dispatcher and the workers (with their pool processes) for the
    timed run: collapsed stacks of the threads holding the GIL (Python's own CPU; waits
    left out) in DIR/NAME.txt, and each thread's CPU time from /proc in DIR/threads.txt."""

    def __init__(self, directory: Path, pids: dict[str, int]) -> None:
        self.directory, self.pids = directory, pids
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Profiler:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            self.procs.append(subprocess.Popen(
                [spy, "record", "--gil", "--threads", "--nonblocking", "--subprocesses",
                 "--format", "raw", "--rate", "200", "-o", str(self.directory / f"{name}.txt"),
                 "--pid", str(pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)
        self.threads = self._thread_ticks()
        return self

    def _thread_ticks(self) -> dict[tuple[int, int], tuple[str, int]]:
        """(pid, tid) -> (thread name, CPU ticks) of every process profiled."""
        out = {}
        for pid in cpu.descendants(self.pids.values(), cpu.processes()):
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    text = (task / "stat").read_text()
                except OSError:
                    continue
                name = text[text.find("(") + 1:text.rfind(")")]
                fields = text[text.rfind(")") + 2:].split()
                out[(pid, int(task.name))] = (name, int(fields[11]) + int(fields[12]))
        return out

    def __exit__(self, *exc: object) -> None:
        after = self._thread_ticks()
        with open(self.directory / "threads.txt", "w") as f:
            for key, (name, ticks) in sorted(after.items()):
                used = ticks - self.threads.get(key, (name, 0))[1]
                f.write(f"{key[0]:>8} {key[1]:>8} {name:16} {used / cpu.TICK:8.2f}s\n")
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            for pid in self.pids.values():
                f.flush()
                subprocess.run([spy, "dump", "--pid", str(pid)], stdout=f,
                               stderr=subprocess.STDOUT, check=False)
        for p in self.procs:
            p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


class Diagnosis:
    """What a stalled holdscan run is waiting for, printed once per stall."""

    def __init__(self, pf: PostfixInstance, cluster: Cluster, redis_url: str,
                 base: Path) -> None:
        self.pf, self.cluster, self.redis_url, self.base = pf, cluster, redis_url, base
        self.n = 0

    def __call__(self) -> None:
        self.n += 1
        print(f"      hold: {len(self.pf.queue_files('hold'))}, incoming: "
              f"{len(self.pf.queue_files('incoming'))}, active: "
              f"{len(self.pf.queue_files('active'))}", flush=True)
        status = self.pf.queue_dir / "holdscan" / "status.json"
        if status.exists():
            st = json.loads(status.read_text())
            print(f"      dispatcher: in_flight {st.get('in_flight')}, waiting "
                  f"{len(st.get('waiting', {}))}", flush=True)
        if self.redis_url:
            import redis
            r = redis.Redis.from_url(self.redis_url)
            replies = [k.decode() for k in r.keys("holdscan:verdicts:*")]
            print(f"      redis: queue {r.llen('holdscan')}, unacked {r.hlen('unacked')}, "
                  f"replies {[(k, r.llen(k)) for k in replies]}, content keys "
                  f"{len(r.keys('holdscan:msg:*'))}", flush=True)
        if shutil.which("py-spy"):
            pids = [self.cluster.dispatcher.pid] if self.cluster.dispatcher else []
            pids += list(cpu.descendants([w.pid for w in self.cluster.workers],
                                         cpu.processes()))
            out = self.base.parent / f"holdscan-bench-stall-{os.getpid()}-{self.n}.txt"
            with open(out, "w") as f:
                for pid in pids:
                    subprocess.run(["py-spy", "dump", "--pid", str(pid)], stdout=f,
                                   stderr=subprocess.STDOUT, check=False)
                f.write(self.cluster.logs()[-20000:])
            print(f"      stacks and logs: {out}", flush=True)


# -- the report ------------------------------------------------------------------------------
def report(results: list[Result], args: argparse.Namespace, setups: list[Setup]) -> None:
    by = {s.name: [r for r in results if r.setup == s.name] for s in setups}
    alone = by.get("alone", [])
    alone_rate = statistics.median(r.rate for r in alone) if alone else 0.0
    if args.rate:
        print(f"\nload paced at {args.rate:g} messages per second")
    print(f"\n{args.messages} messages of {args.size} bytes per timed run, after "
          f"{args.warmup} to warm up; {args.sessions} SMTP sessions; {args.rounds} rounds, "
          "set-ups interleaved; median [lowest-highest]")
    print(f"machine: {machine_line(args.load_before)}")
    print(f"software: {versions()}")
    print("holdscan: default settings (batch 20, verdict_deadline 300 s, log level INFO); "
          "clamd: a one-signature test database (no official signatures here)")
    print("Shared machine: other work ran beside these runs, so msg/s and the whole-machine "
          "CPU are noisy; the CPU of each process tree is less affected.\n")
    print(f"{'set-up':66} {'msg/s':>16} {'vs alone':>16} {'p50 s':>18} {'p99 s':>18}")
    for s in setups:
        rs = by[s.name]
        if not rs:
            continue
        ratios = [r.rate / a.rate for r, a in zip(rs, alone, strict=False)] if alone else []
        label = s.label + (" (tuned)" if s.tuned else "")
        print(f"{label:66} {spread([r.rate for r in rs]):>16} "
              f"{spread(ratios, '{:.2f}') if s.holdscan else '':>16} "
              f"{spread([r.percentile(0.5) for r in rs], '{:.2f}'):>18} "
              f"{spread([r.percentile(0.99) for r in rs], '{:.2f}'):>18}")
    if alone_rate:
        print("(vs alone: each round's rate over the same round's Postfix alone)")
    print("\nCPU ms per message (process trees read from /proc; 'holdscan' = dispatcher + "
          "workers + clamd + Redis)")
    cols = [*GROUPS, "holdscan", "machine"]
    print(f"{'set-up':14}" + "".join(f"{c:>17}" for c in cols))
    for s in setups:
        rs = by[s.name]
        if not rs:
            continue
        cells = [spread([r.ms_per_message((g,)) for r in rs], "{:.2f}")
                 if any(g in r.cpu for r in rs) else "-" for g in GROUPS]
        cells.append(spread([r.ms_per_message(HOLDSCAN_GROUPS) for r in rs], "{:.2f}")
                     if s.holdscan else "-")
        cells.append(spread([1000 * r.machine / r.messages for r in rs], "{:.2f}"))
        print(f"{s.name:14}" + "".join(f"{c:>17}" for c in cells))
    if args.split:
        split_report(by, setups)
    gaps = [(r.setup, r.round, r.longest_gap) for r in results if r.longest_gap > args.stall]
    for name, rnd, gap in gaps:
        print(f"STALL: {name} round {rnd}: {gap:.0f}s without a delivery")


def split_report(by: dict[str, list[Result]], setups: list[Setup]) -> None:
    """--split: the mail host (CPU 0) apart from the scanning side (CPU 1)."""
    print("\nMail host apart (--split: Postfix, the load, Redis and the dispatcher on CPU "
          f"{min(MAIL_HOST_CPUS)}; workers and clamd on CPU {min(SCANNING_CPUS)}), "
          "CPU ms per message")
    columns = {"mail host": ("postfix", "dispatcher", "redis"), "Postfix": ("postfix",),
               "holdscan share": ("dispatcher", "redis"), "scanning side": SCANNING_GROUPS}
    print(f"{'set-up':14}" + "".join(f"{c:>18}" for c in columns))
    for s in setups:
        rs = by[s.name]
        if rs:
            print(f"{s.name:14}" + "".join(
                f"{spread([r.ms_per_message(g) for r in rs], '{:.2f}'):>18}"
                if s.holdscan or "postfix" in g else f"{'-':>18}" for g in columns.values()))
    print("(mail host = Postfix + dispatcher + Redis; holdscan's share of it = dispatcher + "
          "Redis; scanning side = workers + clamd; the load, smtp-source and smtp-sink, runs "
          "on the mail host's CPU but is counted apart)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=MIN_MESSAGES,
                    help=f"per timed run (at least {MIN_MESSAGES}; fewer with --explore)")
    ap.add_argument("--explore", action="store_true",
                    help="allow fewer messages and rounds: a quick look, not a figure to quote")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--setups", default="alone,holdscan,tmpfs",
                    help=f"comma-separated, in the order they take turns: {', '.join(SETUPS)}")
    ap.add_argument("--stall", type=float, default=20.0,
                    help="seconds without a delivery before the run says what it waits for")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", metavar="PATH", help="also write every run's figures here")
    ap.add_argument("--rate", type=float, default=0,
                    help="send at this many messages per second (for latency below the peak, "
                    "e.g. half of holdscan's msg/s) instead of as fast as possible")
    ap.add_argument("--batch-size", type=int, default=0,
                    help="[dispatcher] batch_size (default: holdscan's own default)")
    ap.add_argument("--batch-wait", type=float, default=0,
                    help="[dispatcher] batch_wait in seconds (default: holdscan's own default)")
    ap.add_argument("--worker-counts", metavar="N,N,...",
                    help="instead of --setups: Postfix alone and holdscan (clamd as Debian "
                    "ships it) with each number of worker processes, taking turns")
    ap.add_argument("--plot", metavar="PNG",
                    help="with --worker-counts: draw msg/s against worker processes "
                    "(matplotlib, the `bench` extra)")
    ap.add_argument("--profile", metavar="DIR",
                    help="record the dispatcher's and workers' stacks with py-spy during each "
                    "timed run (costs CPU: not for figures)")
    ap.add_argument("--split", action="store_true",
                    help="Postfix, the load, Redis and the dispatcher on CPU 0, workers and "
                    "clamd on CPU 1; report the mail host's CPU per message apart")
    args = ap.parse_args()
    args.load_before = os.getloadavg()[0]      # the report comes after the runs
    if args.split and not {*MAIL_HOST_CPUS, *SCANNING_CPUS} <= os.sched_getaffinity(0):
        ap.error("--split needs CPUs 0 and 1 (os.sched_getaffinity)")
    if not args.explore and (args.messages < MIN_MESSAGES or args.rounds < 3):
        ap.error(f"a figure needs at least {MIN_MESSAGES} messages and 3 rounds; "
                 "--explore for a quick look")
    if args.worker_counts:
        counts = [int(n) for n in args.worker_counts.split(",")]
        setups = [SETUPS["alone"]] + [dataclasses.replace(
            SETUPS["holdscan"], name=f"{n}-workers", workers=n,
            label=f"Postfix + holdscan, {n} worker{'s' if n > 1 else ''}, clamd as Debian "
                  "ships it") for n in counts]
    else:
        try:
            setups = [SETUPS[n] for n in args.setups.split(",")]
        except KeyError as e:
            ap.error(f"no set-up {e}; choose from {', '.join(SETUPS)}")
    results: list[Result] = []
    for rnd in range(1, args.rounds + 1):
        for s in setups:
            r = run_once(s, rnd, args)
            results.append(r)
            print(f"round {rnd} {s.name:10} {r.rate:7.1f} msg/s  ({r.seconds:.1f}s, SMTP done "
                  f"at {r.accept_seconds:.1f}s)  p50 {r.percentile(0.5):.2f}s p99 "
                  f"{r.percentile(0.99):.2f}s  CPU ms/msg: " + " ".join(
                      f"{g} {r.ms_per_message((g,)):.2f}" for g in GROUPS if g in r.cpu)
                  + f"  machine {1000 * r.machine / r.messages:.2f}", flush=True)
            if args.json:
                write_json(args.json, results)
    report(results, args, setups)
    if args.plot and args.worker_counts:
        plot(args.plot, results, setups, args)


def plot(path: str, results: list[Result], setups: list[Setup],
         args: argparse.Namespace) -> None:
    """msg/s against worker processes: each run as a dot, the median as a line, and Postfix
    alone's median as a level to compare with."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib: .venv/bin/pip install -e '.[bench]'")
        return
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    counts, medians = [], []
    for s in setups:
        rates = [r.rate for r in results if r.setup == s.name]
        if not rates:
            continue
        if not s.holdscan:
            ax.axhline(statistics.median(rates), color="grey", linestyle="--",
                       label=f"Postfix alone (median {statistics.median(rates):.0f})")
            continue
        ax.scatter([s.workers] * len(rates), rates, color="tab:blue", s=12, alpha=0.6)
        counts.append(s.workers)
        medians.append(statistics.median(rates))
    ax.plot(counts, medians, marker="o", color="tab:blue", label="Postfix + holdscan (median)")
    ax.set_xlabel("worker processes (one clamd, everything on this host)")
    ax.set_ylabel("messages per second")
    ax.set_xticks(counts)
    ax.set_ylim(bottom=0)
    ax.set_title(f"{args.messages} messages of {args.size} bytes, {os.cpu_count()} cores, "
                 f"{args.rounds} round{'s' if args.rounds > 1 else ''}, set-ups taking turns",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}")


def write_json(path: str, results: list[Result]) -> None:
    out = [{**asdict(r), "rate": r.rate, "p50": r.percentile(0.5), "p99": r.percentile(0.99),
            "delays": None} for r in results]
    Path(path).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
