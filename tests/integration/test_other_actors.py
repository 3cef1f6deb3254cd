"""Other actors on the spool while holdscan holds a message: postsuper -d, -H and -r.

Each test pauses a spool operation (rewrite, quarantine, split) at one of its steps,
lets postsuper act on the message as an administrator would, then lets the operation
go on — or kills it there and runs recovery, as after a crash. Afterwards every
recipient has the message at most once, counted everywhere it can be: delivered at
the sink, in the quarantine, or still in one of Postfix's queues; never after a
`postsuper -d` that said it deleted the message; and never both delivered and
quarantined. `postsuper -s` finds nothing to fix.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatcher.postfix import PostfixSettings
from dispatcher.spool import Spool
from holdscan.lab.postfix import PostfixInstance, run
from holdscan.lab.sink import Sink
from tests.support.mail import send
from tests.support.spool import copies_per_recipient

pytestmark = [pytest.mark.postfix]

ROOT = Path(__file__).resolve().parents[2]
RCPTS = ["a@deliver.test", "b@keep.test"]

# Runs one spool operation on one held file; a pause point in it lets the test act.
OPERATION = """
import sys
from pathlib import Path
from dispatcher import queuefile
from dispatcher.postfix import PostfixSettings
from dispatcher.spool import MessageGone, Spool
spool = Spool(PostfixSettings.read(sys.argv[1]))
claim = spool.claim(Path(sys.argv[2]))
assert claim is not None
qf = queuefile.parse(claim.read_bytes())
tagged = qf.with_headers(add=[("X-Holdscan-Status", "rewritten")], replace=[])
try:
    if sys.argv[3] == "rewrite":
        spool.rewrite(claim, [queuefile.serialize(tagged)])
    elif sys.argv[3] == "quarantine":
        spool.quarantine(claim, {"reason": "test", "recipients": RCPTS})
    else:
        a = tagged.with_recipients(lambda r: r.address == RCPT_A)
        spool.rewrite(claim, [queuefile.serialize(a)],
                      quarantine={"reason": "test", "recipients": [RCPT_B]})
    print("done")
except MessageGone as e:
    print("gone:", e)
""".replace("RCPTS", repr(RCPTS)).replace("RCPT_A", repr(RCPTS[0])).replace("RCPT_B",
                                                                          repr(RCPTS[1]))

POINTS = {
    "rewrite": ["rewrite.after_write", "rewrite.before_commit", "rewrite.after_commit",
                "rewrite.after_take", "rewrite.after_release"],
    "quarantine": ["quarantine.before_commit", "quarantine.after_commit",
                   "quarantine.after_take", "quarantine.after_store"],
    "split": ["split.before_commit", "split.after_commit", "split.after_take",
              "split.after_store", "split.after_release"],
}
ACTORS = {"-d": "Deleted", "-H": "Released from hold", "-r": "Requeued"}
CASES = [(op, point, actor) for op, points in POINTS.items() for point in points
         for actor in ACTORS]


@pytest.fixture(scope="module")
def shared_postfix_kind():  # noqa: ANN201
    """shared_postfix, one for all cases (each leaves the queues empty). hold="smtpd": a message
    requeued with `postsuper -r` comes back through pickup as new mail and is not held
    again, so its one copy is delivered."""
    return functools.partial(PostfixInstance, hold="smtpd")


def settle(pf: PostfixInstance, sink: Sink, spool: Spool, message_id: str,
           rcpts: list[str], expected: int) -> None:
    """Let Postfix deliver whatever is still queued (deferred by -H, maildrop by -r), until
    each recipient has `expected` copies, delivered or quarantined (or 30 s have passed:
    the assertions that follow then say what is missing)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run("postqueue", "-c", str(pf.config_dir), "-f", check=False)
        queued = sum(len(pf.queue_files(q)) for q in ("maildrop", "incoming", "active",
                                                      "deferred"))
        if not queued:
            live, quarantined, _ = copies_per_recipient(pf, sink, spool, message_id)
            if all(live[r] + quarantined[r] >= expected for r in rcpts):
                return
        time.sleep(0.3)


@pytest.mark.parametrize("mode", ["go on", "killed"])
@pytest.mark.parametrize(("op", "point", "actor"), CASES)
def test_postsuper_while_claimed_never_duplicates_or_resurrects(shared_postfix, tmp_path, op,
                                                                point, actor, mode):
    pf, sink = shared_postfix
    sink.clear()
    n = len(CASES)
    message_id = f"<actor-{op}-{point}-{actor}-{mode.replace(' ', '')}-{n}@holdscan.test>"
    rcpts = RCPTS if op == "split" else RCPTS[:1]
    send(pf.port, "s@example.test", rcpts,
         f"Subject: actors\r\nMessage-ID: {message_id}\r\n\r\nbody\r\n".encode())
    [path] = pf.wait_held(1)
    original = path.read_bytes()
    spool = Spool(PostfixSettings.read(str(pf.config_dir)))
    spool.prepare()
    pause = tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOLDSCAN_PAUSE_AT": point,
           "HOLDSCAN_PAUSE_FILE": str(pause)}
    proc = subprocess.Popen([sys.executable, "-c", OPERATION, str(pf.config_dir), str(path),
                             op], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while not pause.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "never reached the pause point"
            time.sleep(0.02)
        # The administrator acts while holdscan holds the message.
        said = pf.postsuper(actor, path.name, check=False).stderr
        acted = f"{ACTORS[actor]}: 1 message" in said
        if path.exists():
            assert path.read_bytes() == original                        # rule 8
        if mode == "killed":
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            pause.unlink()
            spool.recover()
        else:
            pause.unlink()
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            assert out.strip() == "done" or out.startswith("gone:"), out
            assert out.startswith("gone:") == acted, (out, said)
    finally:
        if proc.poll() is None:
            proc.kill()
    spool.wake_qmgr()
    expected = 0 if (acted and actor == "-d") else 1
    settle(pf, sink, spool, message_id, rcpts, expected)
    time.sleep(0.5)
    live, quarantined, rewritten = copies_per_recipient(pf, sink, spool, message_id)
    for r in rcpts:
        assert live[r] + quarantined[r] == expected, (r, live, quarantined, said)
    if acted:
        # The message was Postfix's again: no rewrite of it, no quarantine entry.
        assert not quarantined and not rewritten, (quarantined, rewritten, said)
    assert not list(spool.tmp_dir.iterdir()) and not list(spool.journal.dir.iterdir())
    assert not list(spool.custody_dir.iterdir())
    assert not [e for e in spool.quarantine_dir.iterdir() if e.name.startswith(".tmp-")]
    assert "renam" not in pf.postsuper("-s").stderr
    # Leave nothing for the next case: drain hold and the quarantine.
    pf.postsuper("-d", "ALL", check=False)
    for e in spool.quarantine_dir.iterdir():
        if not e.name.startswith("."):
            subprocess.run(["rm", "-rf", str(e)], check=True)
