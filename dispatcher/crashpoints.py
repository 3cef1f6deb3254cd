"""Named crash points, so tests can kill the dispatcher between any two steps.

`crashpoint("rewrite.after_commit")` does nothing unless the environment
variable HOLDSCAN_CRASH_AT names that point, in which case the process kills
itself with SIGKILL right there: no cleanup, no flush, exactly like a crash.
HOLDSCAN_CRASH_AFTER=N lets the point pass N times before it fires.
"""

from __future__ import annotations

import os
import signal

_target = os.environ.get("HOLDSCAN_CRASH_AT", "")
_skip = int(os.environ.get("HOLDSCAN_CRASH_AFTER", "0") or 0)


def crashpoint(name: str) -> None:
    global _skip
    if _target and name == _target:
        if _skip > 0:
            _skip -= 1
            return
        os.kill(os.getpid(), signal.SIGKILL)
