"""A released message is never in incoming under our lock, so qmgr never puts it aside.

qmgr scans incoming whenever it is woken, and it is woken all the time under load
(by the dispatcher's previous batch). A file it finds locked it moves back to
incoming with its time stamp 60 s in the future, and skips it until then; at the
end of a burst nothing wakes it again, and the message waits for master's
300-second wake-up: the benchmark's "one run in six took 297 s".

Here the dispatcher (real Redis, a Celery worker, clamd) is paused right after its
release rename while qmgr is told to scan incoming; the message must reach the sink
at once, not a minute or five later.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from dispatcher.postfix import PostfixSettings
from dispatcher.spool import Spool
from tests.support.mail import send, simple_message

pytestmark = [pytest.mark.postfix]


def test_qmgr_scanning_during_a_release_delivers_the_message(postfix, sink, cluster):
    c = cluster()
    c.start_worker()
    pauses = Path(tempfile.mkdtemp(prefix="holdscan-pause-"))
    pause = pauses / "paused"
    os.chmod(pauses, 0o777)     # the dispatcher runs as Postfix's mail_owner
    try:
        c.start_dispatcher(env={"HOLDSCAN_PAUSE_AT": "release.after_rename",
                                "HOLDSCAN_PAUSE_FILE": str(pause)})
        send(postfix.port, "s@example.test", ["r@example.test"], simple_message(1))
        c.wait_for(pause.exists, 60, "the dispatcher paused in its release")
        [released] = postfix.queue_files("incoming")
        # qmgr looks at incoming while the dispatcher is between its rename and the rest.
        assert Spool(PostfixSettings.read(str(postfix.config_dir))).wake_qmgr()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not sink.count():
            stamp = next((p.stat().st_mtime for p in postfix.queue_files("incoming")), 0)
            assert stamp <= time.time() + 1, \
                f"qmgr found {released.name} locked and put it aside for a minute"
            time.sleep(0.05)
        pause.unlink()
        sink.wait_count(1, timeout=15)
    finally:
        pause.unlink(missing_ok=True)
        shutil.rmtree(pauses)
    assert released.name in postfix.delivered_ids()
