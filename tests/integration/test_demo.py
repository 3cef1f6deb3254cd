"""`holdscan demo` end to end, twice in a row, as a newcomer runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
