"""Power loss, not only SIGKILL (issue 9): every on-disk state a power cut may leave
while the dispatcher releases, rewrites, quarantines and splits held mail, recovered.

Real Postfix holds four messages; it is stopped and its queue copied. The
dispatcher's spool operations run on the copy under strace
(tests/support/powerloss_scenario.py); tests/support/powerloss.py turns the trace
into operations and builds each crash state the model allows (its docstring has
the rules). Each state is recovered and checked: every message exactly once,
where it was or where its operation puts it.

The same run with os.fsync made a no-op (for files, or for directories) must
fail the check: that shows the check can see a missing fsync.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dispatcher.postfix import PostfixSettings
from dispatcher.spool import Spool
from holdscan.lab.postfix import PostfixInstance, free_port, run
from holdscan.lab.sink import Sink
from tests.support import powerloss
from tests.support.mail import send, simple_message
from tests.support.powerloss_scenario import (
    OPS,
    Plan,
    check_state,
    message_id,
    settings_from_json,
    settings_to_json,
)
from tests.support.tools import require_program

pytestmark = [pytest.mark.postfix, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _strace() -> None:
    require_program("strace")

ROOT = Path(__file__).resolve().parents[2]


def _stop(pf: PostfixInstance) -> None:
    pf.postfix("stop")
    deadline = time.monotonic() + 10
    while run("postfix", "-c", str(pf.config_dir), "status", check=False).returncode == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("Postfix did not stop")
        time.sleep(0.1)


def _copy_queue(src: Path, dst: Path) -> None:
    """Directories and regular files only: Postfix's sockets and FIFOs stay behind."""
    for dirpath, _, filenames in os.walk(src):
        target = dst / Path(dirpath).relative_to(src)
        target.mkdir()
        shutil.copystat(dirpath, target)
        for name in filenames:
            if stat.S_ISREG(os.lstat(os.path.join(dirpath, name)).st_mode):
                shutil.copy2(os.path.join(dirpath, name), target / name)


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Plan]:
    """(a copy of a stopped Postfix's queue with four held messages, the plan for them)."""
    base = tmp_path_factory.mktemp("powerloss")
    snapshot = base / "queue"
    with Sink(free_port()) as sink, PostfixInstance(sink.port) as pf:
        for n in range(1, len(OPS) + 1):
            send(pf.port, "sender@example.test", ["rcpt@example.test"], simple_message(n))
        pf.wait_held(len(OPS))
        settings = PostfixSettings.read(str(pf.config_dir))
        _stop(pf)
        _copy_queue(pf.queue_dir, snapshot)
    messages = []
    for p in sorted(snapshot.joinpath("hold").rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            messages.append({"queue_id": p.name, "message_id": message_id(data),
                             "original": data.hex()})
    messages.sort(key=lambda m: m["message_id"])
    assert len(messages) == len(OPS)
    for m, op in zip(messages, OPS, strict=True):
        m["op"] = op
    return snapshot, {"settings": settings_to_json(settings), "messages": messages}


def explore(snapshot: Path, plan: Plan, work: Path, no_fsync: str = "",
            first_start: bool = False, **kw: Any) -> powerloss.Report:
    """Trace the scenario on a copy of the snapshot and check every crash state.
    first_start: holdscan's directories are made inside the traced run (by prepare());
    otherwise they exist before it, as on every start after the first."""
    spool = (work / "spool").resolve()
    shutil.copytree(snapshot, spool, symlinks=True)
    settings = {**plan["settings"], "queue_directory": str(spool)}
    plan = {**plan, "settings": settings}
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps(plan))
    if not first_start:
        Spool(settings_from_json(settings)).prepare()
    initial = powerloss.FsState.from_dir(spool)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HOLDSCAN_CRASH_AT", None)
    if no_fsync:
        env["HOLDSCAN_TEST_NO_FSYNC"] = no_fsync
    traced = powerloss.trace([sys.executable, "-m", "tests.support.powerloss_scenario",
                              str(plan_file)], spool, work / "strace.txt", initial=initial,
                             env=env, cwd=ROOT, graveyard=work / "graveyard")
    assert traced.returncode == 0, traced.stderr[-3000:]

    # The tracer saw everything: replaying every op on the snapshot gives the tree the
    # run left, byte for byte and mode for mode.
    ops = traced.ops
    (work / "ops.txt").write_text(powerloss.describe_ops(ops) + "\n")
    replayed = powerloss.build(initial, ops, len(ops), ())
    assert replayed.digest() == powerloss.FsState.from_dir(spool).digest(), \
        powerloss.describe_ops(ops)
    kinds = Counter(op.kind for op in ops)
    assert kinds["rename"] >= len(OPS) and kinds["write"] and kinds["fsync"], kinds

    # Crash states are built from the run's own inodes, at the run's own path.
    pool = powerloss.InodePool.collect(traced.tracker, spool, work / "inodes")
    return powerloss.explore(initial, ops, lambda root: check_state(root, plan), spool,
                             pool=pool, graveyard=work / "graveyard", **kw)


def show(capsys: pytest.CaptureFixture[str], title: str, report: powerloss.Report,
         limit: int = 5) -> None:
    with capsys.disabled():
        print(f"\n{title}: {report.summary()}")
        for v in report.violations[:limit]:
            print(v)
        if len(report.violations) > limit:
            print(f"... and {len(report.violations) - limit} more")


def test_every_power_loss_state_recovers_each_message_exactly_once(held, tmp_path, capsys):
    snapshot, plan = held
    report = explore(snapshot, plan, tmp_path)
    show(capsys, "power loss", report)
    assert not report.truncated and not report.inodes_lost
    assert report.checked > 50
    assert not report.violations, "\n".join(str(v) for v in report.violations)
    assert report.seconds < 120


@pytest.mark.parametrize("what", ["file", "dir"])
def test_a_missing_fsync_is_caught(held, tmp_path, capsys, what):
    """The same run with os.fsync a no-op for regular files (or for directories):
    the checker must find a crash state that loses or duplicates a message."""
    snapshot, plan = held
    report = explore(snapshot, plan, tmp_path, no_fsync=what)
    show(capsys, f"power loss, fsync of {'regular files' if what == 'file' else 'directories'} "
                 "removed", report, limit=3)
    assert report.violations
    # Each says where the crash came, which operations it lost, and what became of
    # which message.
    for v in report.violations:
        assert v.description.startswith("crash after op ") and "; lost: op " in v.description
    text = "\n".join(str(v) for v in report.violations)
    assert "lost: no copy anywhere" in text
    assert any(m["message_id"] in text for m in plan["messages"])


def test_power_loss_on_the_first_start(held, tmp_path, capsys):
    """The same, with holdscan's directories made by prepare() inside the traced run, as
    on a dispatcher's first start: a directory made but not yet durable in its parent
    may vanish with everything in it."""
    snapshot, plan = held
    report = explore(snapshot, plan, tmp_path, first_start=True)
    show(capsys, "power loss on the first start", report)
    assert not report.truncated and not report.inodes_lost
    assert not report.violations, "\n".join(str(v) for v in report.violations)
