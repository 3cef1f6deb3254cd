"""Watch the hold queue with inotify, and tell the dispatcher what to look at.

Postfix's cleanup renames a new file into hold (IN_MOVED_TO) and then makes
it ready with chmod 0700 (IN_ATTRIB); `postsuper -h` also moves files in.
IN_CLOSE_WRITE covers writers that create in place. Each event only says
"look at this path": whether a file is ready and free is decided by the
claim, never by the event. If the kernel's event queue overflows we are told
to rescan everything; a periodic rescan in the dispatcher is the safety net.

pyinotify keeps the watches (one per hash directory); the events are read here,
everything the kernel has queued in one read (a few milliseconds after the
first, so that under load one read carries several messages), and each path
is named once per read however many events it had (a message's rename and
chmod). pyinotify's own event objects are not made: with them the watcher
thread used a sixth of the dispatcher's CPU (benchmarks/throughput.py
--profile, threads.txt).
"""

from __future__ import annotations

import logging
import os
import select
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pyinotify

log = logging.getLogger("holdscan.watcher")

MASK = (pyinotify.IN_MOVED_TO | pyinotify.IN_ATTRIB | pyinotify.IN_CLOSE_WRITE
        | pyinotify.IN_CREATE | pyinotify.IN_Q_OVERFLOW)
_HEADER = struct.Struct("iIII")         # struct inotify_event: wd, mask, cookie, len; name
_READ_SIZE = 256 * 1024                 # thousands of events in one read
# After the first event, wait this long for more before reading: under load a read then
# carries several messages' events, at a cost in latency far below the batch wait.
COALESCE = 0.005


class Watcher:
    """Calls on_paths([Path, ...]) with the candidates of each read; a None in the list
    means "rescan everything"."""

    def __init__(self, hold_dir: Path,
                 on_paths: Callable[[Iterable[Path | None]], None]) -> None:
        self.hold_dir = hold_dir
        self.on_paths = on_paths
        self.wm = pyinotify.WatchManager()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="watcher", daemon=True)

    def start(self) -> None:
        # Every hash subdirectory that exists now; those Postfix creates later are added
        # as their events arrive (events()). Not quiet: a hold directory that cannot be
        # watched stops the start, with the reason.
        self.wm.add_watch(str(self.hold_dir), MASK, rec=True, quiet=False)
        self._thread.start()

    def _watch(self, directory: Path) -> None:
        for path, wd in self.wm.add_watch(str(directory), MASK, rec=True,
                                          quiet=True).items():
            if wd < 0:
                log.warning("cannot watch %s; the periodic rescan will find its files", path)

    def events(self, data: bytes) -> list[Path | None]:
        """The candidates named by a buffer of raw inotify events, each once, in order."""
        found: dict[Path | None, None] = {}
        pos, end = 0, len(data)
        while pos + _HEADER.size <= end:
            wd, mask, _cookie, length = _HEADER.unpack_from(data, pos)
            name = data[pos + _HEADER.size:pos + _HEADER.size + length].rstrip(b"\0")
            pos += _HEADER.size + length
            if mask & pyinotify.IN_Q_OVERFLOW:
                log.warning("inotify queue overflowed; rescanning hold")
                found[None] = None
                continue
            if mask & pyinotify.IN_IGNORED:
                self.wm.del_watch(wd)       # its directory is gone
                continue
            parent = self.wm.get_path(wd)
            if parent is None or not name:
                continue
            path = Path(parent, os.fsdecode(name))
            if mask & pyinotify.IN_ISDIR:
                if mask & (pyinotify.IN_CREATE | pyinotify.IN_MOVED_TO):
                    # A new hash directory may already hold files: watch it, then rescan.
                    self._watch(path)
                    found[None] = None
                continue
            if mask & pyinotify.IN_CREATE:
                continue                    # created files are never ready yet; wait for the chmod
            found[path] = None
        return list(found)

    def _loop(self) -> None:
        fd = self.wm.get_fd()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(500):
                continue
            self._stop.wait(COALESCE)
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                continue
            paths = self.events(data)
            if paths:
                self.on_paths(paths)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.wm.close()
