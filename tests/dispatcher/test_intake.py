"""The hold's rescan (dispatcher/intake.py): oldest first, and under a backlog it looks only
at the files it does not know yet, so that its cost does not grow with the hold."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from dispatcher import intake as intake_module
from dispatcher.intake import Intake
from dispatcher.spool import Spool
from dispatcher.status import Stats


def hold_spool(hold: Path) -> SimpleNamespace:
    spool = SimpleNamespace(hold_dir=hold, settings=SimpleNamespace(
        hash_queue_depth=1, hash_queue_names="deferred, defer"))
    spool.hold_paths = lambda: Spool.hold_paths(spool)      # the real listing
    return spool


def held(hold: Path, names: list[str], mtime: int) -> None:
    for n, name in enumerate(names):
        (hold / name).touch()
        os.utime(hold / name, (mtime + n, mtime + n))


def test_rescan_adds_new_files_oldest_first_after_those_waiting(tmp_path, monkeypatch):
    hold = tmp_path / "hold"
    hold.mkdir()
    held(hold, ["3C4D5E6F7A1", "1A2B3C4D5E6"], mtime=1000)       # listed newest first
    it = Intake(hold_spool(hold), Stats())
    it.rescan()
    assert list(it.candidates) == [str(hold / "3C4D5E6F7A1"), str(hold / "1A2B3C4D5E6")]

    held(hold, ["5E6F7A1B2C3", "4D5E6F7A1B2"], mtime=500)        # new, and older still
    stats = []
    real_stat = os.stat
    monkeypatch.setattr(intake_module.os, "stat",
                        lambda p, *a, **k: stats.append(p) or real_stat(p, *a, **k))
    it.rescan()
    # The waiting keep their places; the new follow them, oldest first; only they were
    # looked at.
    assert list(it.candidates) == [str(hold / n) for n in (
        "3C4D5E6F7A1", "1A2B3C4D5E6", "5E6F7A1B2C3", "4D5E6F7A1B2")]
    assert sorted(stats) == sorted([str(hold / "5E6F7A1B2C3"), str(hold / "4D5E6F7A1B2")])
    assert it.hold_depth == 4


def test_rescan_takes_back_a_file_claimed_before(tmp_path):
    hold = tmp_path / "hold"
    hold.mkdir()
    held(hold, ["1A2B3C4D5E6"], mtime=1000)
    it = Intake(hold_spool(hold), Stats())
    it.rescan()
    it.candidates.popitem(last=False)          # claimed; its message stayed in hold
    it.rescan()
    assert list(it.candidates) == [str(hold / "1A2B3C4D5E6")]
