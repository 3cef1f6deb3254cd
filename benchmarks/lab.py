"""What the benchmarks share: Postfix's log as a count of deliveries and their delays,
smtp-sink and smtp-source (paced or not), waiting for deliveries, counting each message
at the sink, and the report's median [lowest-highest] and machine lines.

smtp-source and smtp-sink are Postfix's own load generator and sink (fast C programs,
so that neither limits what is measured). With a dump file, smtp-sink also keeps every
message it received, so that a benchmark can count each one at the far end (SinkDump).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path

from holdscan.lab.postfix import PostfixInstance

SENT = re.compile(rb"status=sent")
DELAY = re.compile(rb" delay=([0-9.]+),")
# The Received: line Postfix's smtpd wrote when the message arrived; its queue ID names the
# message once for its whole life (a rewritten copy keeps the header).
POSTFIX_ID = re.compile(rb"^\tby \S+ \(Postfix\) with E?SMTP\S* id ([0-9A-Za-z]+)", re.M)


def percentile(values: list[float], q: float) -> float:
    d = sorted(values)
    return d[min(len(d) - 1, int(q * len(d)))] if d else float("nan")


class Tail:
    """A growing file, read from where we left off, in whole lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""

    def new_lines(self) -> bytes:
        """The complete lines written since the last call (b"" while the file is missing)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return b""
        self.offset += len(data)
        data = self.rest + data
        cut = data.rfind(b"\n") + 1
        data, self.rest = data[:cut], data[cut:]
        return data


class MailLog:
    """Postfix's log, read from where we left off: deliveries and their delays."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tail = Tail(path)
        self.sent = 0
        self.delays: list[float] = []

    def poll(self) -> int:
        data = self.tail.new_lines()
        for line in data.splitlines():
            if SENT.search(line):
                self.sent += 1
                m = DELAY.search(line)
                if m:
                    self.delays.append(float(m.group(1)))
        return self.sent


def smtp_sink(port: int, dump: Path | None = None) -> subprocess.Popen[bytes]:
    """smtp-sink on a loopback port; with `dump`, every message appended to that file (its
    directory must be writable by postfix, the user smtp-sink runs as)."""
    argv = ["smtp-sink", "-u", "postfix"]
    if dump is not None:
        argv += ["-D", str(dump)]
    return subprocess.Popen([*argv, f"127.0.0.1:{port}", "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def smtp_source(port: int, messages: int, sessions: int = 20, size: int = 5000
                ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["smtp-source", "-s", str(sessions), "-m", str(messages),
                             "-l", str(size), "-f", "bench@example.test",
                             "-t", "sink@example.test", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL)


def send_all(port: int, args: argparse.Namespace) -> float:
    """Send the timed run's messages: as fast as smtp-source can, or with --rate at that
    many per second (a batch every 0.1 s). Returns the load's CPU seconds."""
    if not args.rate:
        batches = [args.messages]
    else:
        per_tick = max(1, round(args.rate / 10))
        batches = [per_tick] * (args.messages // per_tick)
        if args.messages % per_tick:
            batches.append(args.messages % per_tick)
    start, sent, procs = time.monotonic(), 0, []
    for n in batches:
        procs.append(smtp_source(port, n, min(n, args.sessions), args.size))
        sent += n
        if args.rate:
            time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
    used = 0.0
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"smtp-source exited with {proc.returncode}")
        used += usage.ru_utime + usage.ru_stime
    return used


def wait_delivered(log: MailLog, count: int, timeout: float, stall: float,
                   diagnose: object = None) -> float:
    """Wait until `count` deliveries are logged; the longest gap between two."""
    start = last_progress = time.monotonic()
    seen, gap, told = log.poll(), 0.0, False
    while seen < count:
        time.sleep(0.2)
        now = time.monotonic()
        n = log.poll()
        if n > seen:
            gap = max(gap, now - last_progress)
            seen, last_progress, told = n, now, False
        elif now - last_progress > stall and not told and callable(diagnose):
            print(f"    no delivery for {now - last_progress:.0f}s at {seen}/{count}:",
                  flush=True)
            diagnose()
            told = True
        if now - start > timeout:
            raise TimeoutError(f"only {seen} of {count} delivered after {timeout:.0f}s")
    return max(gap, time.monotonic() - last_progress)


def master_pid(pf: PostfixInstance) -> int:
    return int((pf.queue_dir / "pid" / "master.pid").read_text().split()[0])


class SinkDump:
    """smtp-sink's dump file, read from where we left off: how many times each message
    (by the queue ID Postfix gave it on arrival) reached the sink."""

    def __init__(self, path: Path) -> None:
        self.tail = Tail(path)
        self.copies: Counter[bytes] = Counter()

    def poll(self) -> int:
        """Deliveries so far."""
        self.copies.update(POSTFIX_ID.findall(self.tail.new_lines()))
        return sum(self.copies.values())

    def not_once(self) -> dict[bytes, int]:
        """Messages that reached the sink more than once."""
        return {k: n for k, n in self.copies.items() if n != 1}


# -- figures -----------------------------------------------------------------------------------
def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    """The median [lowest-highest]."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def machine_line(load_before: float | None = None) -> str:
    """Cores, CPU model, kernel, and the load average before the runs (now if not given)."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}, "
            f"load average before the runs "
            f"{os.getloadavg()[0] if load_before is None else load_before:.2f}")


def versions() -> str:
    def first_line(*argv: str) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, check=False)
            return (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    postfix = first_line("postconf", "-d", "-h", "mail_version")
    import celery
    return (f"Postfix {postfix}, {first_line('/usr/sbin/clamd', '--version')}, "
            f"{first_line('redis-server', '--version').split(' sha=')[0]}, "
            f"Celery {celery.__version__}, Python {platform.python_version()}")


