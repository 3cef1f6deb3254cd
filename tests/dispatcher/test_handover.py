"""The handover thread: released mail is fsync'd and qmgr woken, off the dispatcher's loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatcher.handover import Handover


class Wakes:
    def __init__(self, delay: float = 0.0) -> None:
        self.count = 0
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self) -> bool:
        time.sleep(self.delay)
        with self.lock:
            self.count += 1
        return True


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_released_mail_wakes_qmgr(tmp_path: Path) -> None:
    wakes = Wakes()
    handover = Handover(wakes)
    handover.start()
    try:
        handover.released([tmp_path])
        wait_until(lambda: wakes.count == 1)
    finally:
        handover.stop()
    assert wakes.count == 1


def test_releases_made_while_it_syncs_share_one_wake(tmp_path: Path) -> None:
    wakes = Wakes(delay=0.2)        # a slow hand-over: the next releases queue up behind it
    handover = Handover(wakes)
    handover.start()
    try:
        handover.released([tmp_path])
        time.sleep(0.05)
        for _ in range(20):
            handover.released([tmp_path])
    finally:
        handover.stop()
    # 21 releases; the first has its own wake, the 20 made meanwhile share the next.
    assert 1 <= wakes.count <= 2


def test_stop_finishes_what_was_handed_over(tmp_path: Path) -> None:
    wakes = Wakes(delay=0.1)
    handover = Handover(wakes)
    handover.start()
    handover.released([tmp_path])
    handover.stop()
    assert wakes.count == 1


def test_stop_without_start_still_hands_over(tmp_path: Path) -> None:
    wakes = Wakes()
    handover = Handover(wakes)
    handover.released([tmp_path])
    handover.stop()
    assert wakes.count == 1


def test_a_directory_that_cannot_be_synced_wakes_nobody(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    wakes = Wakes()
    handover = Handover(wakes)
    with caplog.at_level(logging.ERROR, logger="holdscan.dispatcher"):
        handover.released([tmp_path / "gone"])
        handover.stop()
    assert wakes.count == 0
    assert "cannot make released mail durable" in caplog.text
