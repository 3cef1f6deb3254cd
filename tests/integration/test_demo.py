"""`holdscan demo` end to end, twice in a row, as a newcomer runs it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "A clean note": ("delivered", "(none)"),
    "EICAR attached": ("quarantined", "infected"),
    "EICAR in a zip": ("quarantined", "infected"),
    "An .exe attachment": ("quarantined", "blocked"),
    "8-bit text": ("delivered", "(none)"),
    "A very long line": ("delivered", "(none)"),
}


def run_demo() -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holdscan.cli", "demo"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def parse_table(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("QUEUE ID"))
    cols = ["QUEUE ID", "SUBJECT", "VERDICT", "ACTION", "WHERE IT ENDED"]
    starts = [lines[head].index(c) for c in cols]
    rows = {}
    for line in lines[head + 1:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None], strict=True)]
        rows[cells[1]] = cells
    return rows


def test_demo_runs_twice_and_every_message_ends_where_the_table_says():
    workdirs = []
    for _ in range(2):
        p = run_demo()
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        workdirs.append(p.stdout.split("working in ", 1)[1].split()[0])
        rows = parse_table(p.stdout)
        assert set(rows) == set(EXPECTED)
        for subject, (action, verdict) in EXPECTED.items():
            queue_id, _, got_verdict, got_action, ended = rows[subject]
            assert got_action == action, rows[subject]
            assert got_verdict.startswith(verdict), rows[subject]
            assert queue_id and queue_id != "?"
            if action == "quarantined":
                assert ended.startswith(f"quarantine {queue_id}-")
            else:
                assert ended == "sink (to user@example.test)"
        assert "Flower (the task queue and the workers): http://127.0.0.1:" in p.stdout
    # It cleaned up after itself: no directories, no private Postfix left registered.
    assert not any(Path(d).exists() for d in workdirs)
    alternates = subprocess.run(["postconf", "-h", "alternate_config_directories"],
                                capture_output=True, text=True, check=True).stdout
    assert not any(d in alternates for d in workdirs)


# -- ended by a signal ------------------------------------------------------------------

def _proc_starttime(pid: int) -> str | None:
    """The process's start time (to tell it from a later one with its pid), None if it is
    gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _demo_processes(demo_pid: int, base: str) -> dict[int, str]:
    """The demo's descendants, and the processes that name its directory in their
    environment or command line (Postfix's master leaves the demo's process tree)."""
    parents: dict[int, int] = {}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            text = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if base.encode() in text:
            found.add(pid)
    frontier = {demo_pid}
    while frontier:
        children = {p for p, pp in parents.items() if pp in frontier} - found
        found |= children
        frontier = children
    found.discard(demo_pid)
    return {pid: t for pid in found if (t := _proc_starttime(pid)) is not None}


def _own_dirs(pids: list[int]) -> set[Path]:
    """The lab servers' temporary directories: each runs in its own (its cwd)."""
    dirs = set()
    for pid in pids:
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        for parent in (cwd, *cwd.parents):
            if parent.name.startswith("holdscan-") and str(parent.parent) in ("/tmp",
                                                                              "/dev/shm"):
                dirs.add(parent)
    return dirs


@pytest.mark.parametrize("sig, when", [
    (signal.SIGTERM, "up"), (signal.SIGHUP, "up"), (signal.SIGTERM, "starting")],
    ids=["SIGTERM", "SIGHUP", "SIGTERM-while-starting"])
def test_demo_keep_ended_by_a_signal_leaves_nothing_behind(tmp_path, sig, when):
    out = tmp_path / "demo.out"
    with open(out, "wb") as f:
        demo = subprocess.Popen([sys.executable, "-m", "holdscan.cli", "demo", "--keep"],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    # "up": everything runs and waits for the signal; "starting": clamd is up and the
    # dispatcher, workers and Flower are being started.
    ready = "Everything stays up" if when == "up" else "  clamd     "
    procs: dict[int, str] = {}
    dirs: set[Path] = set()
    base = ""
    try:
        deadline = time.monotonic() + 180
        while ready not in out.read_text(errors="replace"):
            assert demo.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(0.05)
        base = out.read_text().split("working in ", 1)[1].split()[0]
        procs = _demo_processes(demo.pid, base)
        dirs = _own_dirs(list(procs)) | {Path(base)}
        # What the demo starts: Postfix's master, the sink, Redis, clamd, and when it is
        # up the dispatcher, two workers and Flower, each in a directory of its own where
        # it has one.
        assert len(procs) >= (8 if when == "up" else 4), procs
        assert any(str(d).startswith("/dev/shm/holdscan-clamd-") for d in dirs), dirs
        assert any(str(d).startswith("/tmp/holdscan-redis-") for d in dirs), dirs

        demo.send_signal(sig)
        code = demo.wait(90)
        # Postfix's daemons exit after their master; and whatever was started after the
        # list above was taken names the demo's directory.
        deadline = time.monotonic() + 10
        while (_alive(procs) or _demo_processes(demo.pid, base)) and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        procs.update(_demo_processes(demo.pid, base))
        left = [Path(f"/proc/{p}/cmdline").read_bytes() for p in _alive(procs)]
        left_dirs = [d for d in dirs if d.exists()]
        alternates = subprocess.run(["postconf", "-h", "alternate_config_directories"],
                                    capture_output=True, text=True, check=True).stdout
    finally:
        _clean_up_after_a_failed_demo(demo, procs, dirs, base)
    text = out.read_text()
    if when == "up":
        assert code == 0, text[-3000:]
        assert "stopping and cleaning up" in text
    else:
        assert code == 128 + sig, text[-3000:]
        assert f"stopped by {signal.Signals(sig).name}" in text
    assert not left, left
    assert not left_dirs
    assert base not in alternates


def _alive(procs: dict[int, str]) -> list[int]:
    return [p for p, t in procs.items() if _proc_starttime(p) == t]


def _clean_up_after_a_failed_demo(demo: subprocess.Popen[bytes], procs: dict[int, str],
                                  dirs: set[Path], base: str) -> None:
    """What a demo that failed to clean up left: stopped here, so that a failing test
    leaves no servers running either."""
    from holdscan.lab.postfix import _edit_alternates

    if demo.poll() is None:
        os.killpg(demo.pid, signal.SIGKILL)
        demo.wait()
    for pid in _alive(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    if base:
        alternates = subprocess.run(["postconf", "-h", "alternate_config_directories"],
                                    capture_output=True, text=True, check=True).stdout
        for config in alternates.replace(",", " ").split():
            if config.startswith(base + "/"):
                _edit_alternates(remove=config)
