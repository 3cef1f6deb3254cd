"""The CPU budget's timer: it stops the work in a budget, and nothing outside one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared.contract import Verdict
from workers.engine import batch_line

ROOT = Path(__file__).resolve().parents[2]

# In a process of its own: with the signal's default action a stray tick ends the process.
_AFTER_A_BUDGET = """
import os, signal, time
from workers.budget import OverBudget, cpu_budget

for _ in range(3):
    with cpu_budget(5.0):
        pass
os.kill(os.getpid(), signal.SIGPROF)        # a tick after the budget ended
time.sleep(0.05)
try:
    with cpu_budget(0.05):
        while True:
            pass
except OverBudget:
    print("over budget")
"""


def test_a_tick_after_a_budget_is_ignored_and_the_next_budget_still_stops_work() -> None:
    p = subprocess.run([sys.executable, "-c", _AFTER_A_BUDGET], cwd=ROOT, capture_output=True,
                       text=True, timeout=30)
    assert (p.returncode, p.stdout.strip()) == (0, "over budget"), p.stderr


def test_a_batch_is_logged_in_one_line_with_every_queue_id_and_verdict() -> None:
    verdicts = [Verdict(queue_id=q, attempt=1, verdict=v, findings=[])
                for q, v in (("4XyQ1", "clean"), ("4XyQ2", "infected"), ("4XyQ3", "clean"))]
    assert batch_line(verdicts) == "scanned 3: 4XyQ1=clean 4XyQ2=infected 4XyQ3=clean"
