"""CPU time from /proc: of the whole machine, and of process trees.

A process tree's CPU time is the user and system time of every live process
in it, plus what each of them has collected from children it reaped
(cutime/cstime). That sum only grows: a Postfix smtpd that handles a few
sessions and exits moves its time from "live" into its master's cutime, and
is counted once. Only a process that is reparented away from the tree (a
daemon that double-forks) would drop out; none of the ones measured here do.

    before = tree_seconds([master_pid])
    ...
    used = tree_seconds([master_pid]) - before

machine_seconds() is busy time over every core (everything but idle and
iowait), from the first line of /proc/stat: on a shared machine it includes
whatever else runs there.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def processes() -> dict[int, tuple[int, int]]:
    """Every process now: pid -> (parent pid, ticks of its own and its reaped children)."""
    out: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is None:
            continue
        # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
        out[int(name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return out


def descendants(roots: Iterable[int], procs: dict[int, tuple[int, int]]) -> set[int]:
    """The roots that are alive and every process below them."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in procs.items():
        children[ppid].append(pid)
    found: set[int] = set()
    todo = [r for r in roots if r in procs]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo += children.get(pid, [])
    return found


def tree_seconds(roots: Iterable[int], procs: dict[int, tuple[int, int]] | None = None
                 ) -> float:
    """CPU seconds used so far by the trees under `roots` (see the module docstring)."""
    procs = processes() if procs is None else procs
    return sum(procs[p][1] for p in descendants(roots, procs)) / TICK


def machine_seconds() -> float:
    """Busy CPU seconds of the whole machine, all cores, since boot."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (sum(values[:8]) - values[3] - values[4]) / TICK
