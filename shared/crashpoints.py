"""Named crash points, so tests can kill a process — or pause it — between any two steps.

`crashpoint("rewrite.after_commit")` does nothing unless the environment
variable HOLDSCAN_CRASH_AT names that point, in which case the process kills
itself with SIGKILL right there: no cleanup, no flush, exactly like a crash.
HOLDSCAN_CRASH_AFTER=N lets the point pass N times before it fires.

HOLDSCAN_PAUSE_AT names a point at which the process stops instead, so that a
test can act on the spool meanwhile as another actor would (postsuper, a
second dispatcher): it creates the file HOLDSCAN_PAUSE_FILE and waits until
the test removes it (or kills the process).
"""

from __future__ import annotations

import os
import signal
import time

_target = os.environ.get("HOLDSCAN_CRASH_AT", "")
_skip = int(os.environ.get("HOLDSCAN_CRASH_AFTER", "0") or 0)
_pause_at = os.environ.get("HOLDSCAN_PAUSE_AT", "")
_pause_file = os.environ.get("HOLDSCAN_PAUSE_FILE", "")


def crashpoint(name: str) -> None:
    global _skip, _pause_at
    if _pause_at and name == _pause_at and _pause_file:
        _pause_at = ""      # once
        with open(_pause_file, "w") as f:
            f.write(f"{os.getpid()} {name}\n")
        while os.path.exists(_pause_file):
            time.sleep(0.02)
    if _target and name == _target:
        if _skip > 0:
            _skip -= 1
            return
        os.kill(os.getpid(), signal.SIGKILL)
