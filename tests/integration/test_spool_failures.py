"""Spool operations that fail half-way never lose the original, and never leave a
journal entry that a later start would roll forward onto a message that has since gone
another way (real Postfix; the operation is paused after its commit and the test breaks
something, as a second program or a failing disk would)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dispatcher.postfix import PostfixSettings
from dispatcher.spool import Spool
from tests.support.mail import send

pytestmark = [pytest.mark.postfix]

ROOT = Path(__file__).resolve().parents[2]

REWRITE = """
import sys
from pathlib import Path
from dispatcher.postfix import PostfixSettings
from dispatcher.spool import Spool
spool = Spool(PostfixSettings.read(sys.argv[1]))
claim = spool.claim(Path(sys.argv[2]))
try:
    spool.rewrite(claim, [claim.read_bytes()])
    print("done")
except OSError as e:
    print(f"failed: {type(e).__name__}: {e}")
"""


def _held(pf) -> Path:
    send(pf.port, "s@example.test", ["r@example.test"],
         b"Subject: fail\r\nMessage-ID: <fail-1@holdscan.test>\r\n\r\nbody\r\n")
    return pf.wait_held(1)[0]


def _paused_rewrite(pf, path: Path, point: str, meanwhile) -> str:  # noqa: ANN001
    pauses = Path(tempfile.mkdtemp(prefix="holdscan-pause-"))
    pause = pauses / "paused"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOLDSCAN_PAUSE_AT": point,
           "HOLDSCAN_PAUSE_FILE": str(pause)}
    proc = subprocess.Popen([sys.executable, "-c", REWRITE, str(pf.config_dir), str(path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not pause.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        meanwhile()
        pause.unlink()
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        return out.strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(pauses)


def test_a_prepared_file_gone_before_the_take_aborts_and_keeps_the_original(postfix, sink):
    spool = Spool(PostfixSettings.read(str(postfix.config_dir)))
    spool.prepare()
    path = _held(postfix)
    original = path.read_bytes()

    def remove_the_new_file() -> None:
        for p in spool.tmp_dir.iterdir():
            p.unlink()

    out = _paused_rewrite(postfix, path, "rewrite.after_commit", remove_the_new_file)
    assert out.startswith("failed: SpoolError") and "files prepared for the rewrite are gone" \
        in out, out
    assert path.read_bytes() == original
    assert not list(spool.journal.dir.iterdir()) and not list(spool.custody_dir.iterdir())
    # Still a message Postfix can deliver, once.
    postfix.postsuper("-H", path.name)
    subprocess.run(["postqueue", "-c", str(postfix.config_dir), "-f"], check=False)
    sink.wait_count(1, timeout=30)
    postfix.wait_empty()
    time.sleep(1)
    assert sink.count() == 1


def test_a_failed_take_leaves_no_entry_to_replay_after_postsuper_releases_it(postfix, sink):
    spool = Spool(PostfixSettings.read(str(postfix.config_dir)))
    spool.prepare()
    path = _held(postfix)

    def block_the_custody_name() -> None:
        (spool.custody_dir / path.name).mkdir()     # rename(file, dir) fails: EISDIR

    out = _paused_rewrite(postfix, path, "rewrite.after_commit", block_the_custody_name)
    assert out.startswith("failed: IsADirectoryError"), out
    assert path.exists()
    (spool.custody_dir / path.name).rmdir()
    # The failed operation was undone on the spot: nothing left for a later start.
    assert not list(spool.journal.dir.iterdir()) and not list(spool.tmp_dir.iterdir())
    # The administrator releases it by hand; then the dispatcher restarts.
    postfix.postsuper("-H", path.name)
    subprocess.run(["postqueue", "-c", str(postfix.config_dir), "-f"], check=False)
    report = spool.recover()
    assert report.finished == [] and report.undone == []
    spool.wake_qmgr()
    sink.wait_count(1, timeout=30)
    postfix.wait_empty()
    time.sleep(1)
    assert sink.count() == 1
