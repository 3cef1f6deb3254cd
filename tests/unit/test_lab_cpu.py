"""The benchmark's CPU accounting: a process tree keeps the time of children that exited."""

from __future__ import annotations

import subprocess
import sys
import time

from holdscan.lab import cpu

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"


def test_a_tree_counts_a_child_that_has_exited() -> None:
    # sh runs a busy child, waits for it (reaps it), then becomes `sleep`: the child's time
    # is then only in the root's cutime.
    root = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "$0"; exec sleep 5', BUSY])
    try:
        before = cpu.tree_seconds([root.pid])
        deadline = time.monotonic() + 10
        while cpu.descendants([root.pid], cpu.processes()) - {root.pid}:
            assert time.monotonic() < deadline
            time.sleep(0.05)           # the busy child still runs
        assert cpu.tree_seconds([root.pid]) - before >= 0.25
    finally:
        root.kill()
        root.wait()


def test_machine_time_grows_with_work() -> None:
    before = cpu.machine_seconds()
    t = time.process_time()
    while time.process_time() - t < 0.2:
        pass
    assert cpu.machine_seconds() - before >= 0.15
