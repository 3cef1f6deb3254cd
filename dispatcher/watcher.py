"""Watch the hold queue with inotify, and tell the dispatcher what to look at.

Postfix's cleanup renames a new file into hold (IN_MOVED_TO) and then makes
it ready with chmod 0700 (IN_ATTRIB); `postsuper -h` also moves files in.
IN_CLOSE_WRITE covers writers that create in place. Each event only says
"look at this path": whether a file is ready and free is decided by the
claim, never by the event. If the kernel's event queue overflows we are told
to rescan everything; a periodic rescan in the dispatcher is the safety net.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pyinotify

log = logging.getLogger("holdscan.watcher")

MASK = (pyinotify.IN_MOVED_TO | pyinotify.IN_ATTRIB | pyinotify.IN_CLOSE_WRITE
        | pyinotify.IN_CREATE | pyinotify.IN_Q_OVERFLOW)


class Watcher:
    """Calls on_path(Path) for each candidate, on_path(None) for "rescan everything"."""

    def __init__(self, hold_dir: Path, on_path: Callable[[Path | None], None]) -> None:
        self.hold_dir = hold_dir
        self.on_path = on_path
        self.wm = pyinotify.WatchManager()
        self.notifier = pyinotify.Notifier(self.wm, self._handle, timeout=500)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="watcher", daemon=True)

    def start(self) -> None:
        # auto_add follows hash subdirectories that Postfix creates later.
        self.wm.add_watch(str(self.hold_dir), MASK, rec=True, auto_add=True, quiet=False)
        self._thread.start()

    def _handle(self, event: pyinotify.Event) -> None:
        if event.mask & pyinotify.IN_Q_OVERFLOW:
            log.warning("inotify queue overflowed; rescanning hold")
            self.on_path(None)
            return
        if event.dir:
            if event.mask & (pyinotify.IN_CREATE | pyinotify.IN_MOVED_TO):
                self.on_path(None)    # a new hash directory may already hold files
            return
        if event.mask & pyinotify.IN_CREATE:
            return                    # created files are never ready yet; wait for the chmod
        self.on_path(Path(event.pathname))

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.notifier.check_events():
                self.notifier.read_events()
                self.notifier.process_events()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.notifier.stop()
