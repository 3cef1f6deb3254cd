"""Rule 9: the executable bit only after the contents are safely stored.

A rewrite is paused right after it wrote the new queue file's bytes, before the
fsync: the file must still be 0600 there (not ready: qmgr would skip it), and turn
0700 only after, parseable and complete.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dispatcher import queuefile
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
print(spool.rewrite(claim, [claim.read_bytes()])[0])
"""


def test_new_file_is_0600_until_written_and_synced_then_0700(postfix):
    send(postfix.port, "s@example.test", ["r@example.test"],
         b"Subject: rule 9\r\nMessage-ID: <rule9@holdscan.test>\r\n\r\n"
         + b"a line of the body\r\n" * 2000)
    [path] = postfix.wait_held(1)
    spool = Spool(PostfixSettings.read(str(postfix.config_dir)))
    spool.prepare()
    pauses = Path(tempfile.mkdtemp(prefix="holdscan-pause-"))
    pause = pauses / "paused"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOLDSCAN_PAUSE_AT": "rewrite.after_write",
           "HOLDSCAN_PAUSE_FILE": str(pause)}
    proc = subprocess.Popen([sys.executable, "-c", REWRITE, str(postfix.config_dir),
                             str(path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not pause.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        [new] = list(spool.tmp_dir.iterdir())
        st = new.stat()
        # All bytes are written, nothing is synced yet: not ready.
        assert st.st_mode & 0o777 == 0o600
        assert st.st_size == len(path.read_bytes())
        pause.unlink()
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(pauses)
    new_id = out.strip()
    assert new_id == new.name
    # Ready now, in incoming (or already taken on by qmgr), and complete.
    for q in ("incoming", "active"):
        p = spool.path(q, new_id)
        try:
            data, mode = p.read_bytes(), p.stat().st_mode
        except FileNotFoundError:
            continue
        assert mode & 0o700 == 0o700
        assert queuefile.parse(data).sender == "s@example.test"
        break
