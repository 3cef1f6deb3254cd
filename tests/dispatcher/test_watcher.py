"""The hold watcher against the kernel's inotify: what it names, and how often."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from dispatcher.watcher import Watcher


class Seen:
    def __init__(self) -> None:
        self.calls: list[list[Path | None]] = []
        self.lock = threading.Lock()

    def __call__(self, paths: Iterable[Path | None]) -> None:
        with self.lock:
            self.calls.append(list(paths))

    def flat(self) -> list[Path | None]:
        with self.lock:
            return [p for call in self.calls for p in call]

    def wait_for(self, what: Path | None, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while what not in self.flat():
            assert time.monotonic() < deadline, f"{what} never named; saw {self.flat()}"
            time.sleep(0.01)


def test_a_file_renamed_into_hold_and_made_ready_is_named_once_per_read(tmp_path: Path
                                                                         ) -> None:
    hold, incoming = tmp_path / "hold", tmp_path / "incoming"
    hold.mkdir()
    incoming.mkdir()
    seen = Seen()
    watcher = Watcher(hold, seen)
    watcher.start()
    try:
        # As cleanup does it: written elsewhere, renamed into hold, then chmod 0700; and
        # many of them at once, so that the kernel queues them up between two reads.
        names = [f"4XyQ{i:05X}" for i in range(200)]
        for name in names:
            (incoming / name).write_bytes(b"x")
            os.rename(incoming / name, hold / name)
            os.chmod(hold / name, 0o700)
        for name in names:
            seen.wait_for(hold / name)
        time.sleep(0.2)
        for call in seen.calls:
            assert len(call) == len(set(call)), "a path named twice in one read"
        assert set(seen.flat()) == {hold / n for n in names}
        assert len(seen.calls) < len(names), "events were not read in bulk"
    finally:
        watcher.stop()


def test_a_new_hash_directory_means_rescan_and_is_watched(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.mkdir()
    seen = Seen()
    watcher = Watcher(hold, seen)
    watcher.start()
    try:
        (hold / "A").mkdir()
        seen.wait_for(None)
        (hold / "A" / "A1B2C3D4E5").write_bytes(b"x")
        os.chmod(hold / "A" / "A1B2C3D4E5", 0o700)
        seen.wait_for(hold / "A" / "A1B2C3D4E5")
    finally:
        watcher.stop()


def test_a_file_only_created_is_not_named(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.mkdir()
    seen = Seen()
    watcher = Watcher(hold, seen)
    watcher.start()
    try:
        fd = os.open(hold / "NOTREADY01", os.O_CREAT | os.O_WRONLY, 0o600)
        (hold / "marker").touch()       # IN_CREATE then IN_CLOSE_WRITE: named
        seen.wait_for(hold / "marker")
        assert hold / "NOTREADY01" not in seen.flat()
        os.close(fd)                    # a writer that creates in place: IN_CLOSE_WRITE
        seen.wait_for(hold / "NOTREADY01")
    finally:
        watcher.stop()
