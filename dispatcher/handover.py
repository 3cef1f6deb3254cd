"""Hand released mail to Postfix: make the renames durable, then wake qmgr.

A release is a rename from hold into incoming; qmgr must not be told of it
before the rename is on stable storage (after a power cut a delivered message
would otherwise come back in hold and go out twice). The order is:

    rename (the dispatcher's loop) -> fsync both directories -> wake qmgr

An fsync of a directory waits for the file system's journal, milliseconds on
a busy disk, and the dispatcher's loop would claim, send and apply nothing
meanwhile. So the last two steps run on a thread of their own: the loop names
the directories and goes on; the thread fsyncs every directory named so far,
in one go (several batches of verdicts may share one fsync), and then wakes
qmgr once for all of them. Stopping waits for what was named to be done.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from dispatcher.durable import fsync_dir
from shared.logging import event

log = logging.getLogger("holdscan.dispatcher")


class Handover:
    def __init__(self, wake: Callable[[], object]) -> None:
        self._wake = wake
        self._dirs: set[Path] = set()
        self._due = False                   # something was released since the last wake
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="handover", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def released(self, dirs: Iterable[Path]) -> None:
        """Mail went into incoming: fsync `dirs` (the renames' directories), then wake
        qmgr. Empty `dirs`: the files are durable already (written and synced by the
        spool), only the wake-up is due."""
        with self._cond:
            self._dirs.update(dirs)
            self._due = True
            self._cond.notify()

    def stop(self) -> None:
        """Finish what was handed over (fsync, wake), then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()
        elif self._due:
            self._hand_over()       # never started (a run that stopped early)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due and not self._stopping:
                    self._cond.wait()
                if not self._due:
                    return
            self._hand_over()

    def _hand_over(self) -> None:
        with self._cond:
            dirs, self._dirs, self._due = self._dirs, set(), False
        try:
            for d in sorted(dirs):
                fsync_dir(d)
        except OSError as e:
            # Not known to be durable: qmgr is not told. The mail is in incoming, and qmgr
            # finds it at its next periodic scan of the queue.
            event(log, logging.ERROR, "cannot make released mail durable; qmgr not woken "
                  "(check the disk and the kernel log)", error=str(e))
            return
        self._wake()
