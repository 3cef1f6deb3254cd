"""Spool operations against a real Postfix: each of the rules in design.md."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dispatcher import queueid
from dispatcher.postfix import PostfixSettings
from dispatcher.spool import Spool, SpoolError
from tests.support.mail import send, simple_message

ROOT = Path(__file__).resolve().parents[2]


def make_spool(pf, **kw) -> Spool:
    spool = Spool(PostfixSettings.read(str(pf.config_dir)), **kw)
    spool.prepare()
    return spool


def held_one(pf, n: int = 1, body: str = "hello\r\n") -> Path:
    send(pf.port, "sender@example.test", ["rcpt@example.test"], simple_message(n, body))
    return pf.wait_held(1)[0]


def test_release_keeps_inode_and_name_and_delivers_once(postfix, sink):
    spool = make_spool(postfix)
    path = held_one(postfix)
    before = path.stat()
    claim = spool.claim(path)
    assert claim is not None
    target = spool.release(claim)
    spool.wake_qmgr()
    # qmgr may already have moved it on to active; either way it is the same inode and name.
    for q in ("incoming", "active"):
        p = spool.path(q, path.name)
        try:
            assert p.stat().st_ino == before.st_ino
            break
        except FileNotFoundError:
            continue
    assert target.name == path.name and queueid.inode_of(target.name) == before.st_ino
    [delivery] = sink.wait_count(1)
    assert delivery.message_id == "<msg-1@holdscan.test>"
    assert delivery.body == b"hello\r\n"


def test_locked_file_is_left_alone(postfix):
    spool = make_spool(postfix)
    path = held_one(postfix)
    before = (path.stat(), path.read_bytes())
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, sys, time
            f = open({str(path)!r}, "rb")
            fcntl.flock(f, fcntl.LOCK_EX)
            print("locked", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert spool.claim(path) is None
        after = path.stat()
        assert (after.st_ino, after.st_mtime_ns, after.st_mode) == \
            (before[0].st_ino, before[0].st_mtime_ns, before[0].st_mode)
        assert path.read_bytes() == before[1]
    finally:
        holder.stdin.close()
        holder.wait(5)
    claim = spool.claim(path)
    assert claim is not None     # free again once the lock is gone
    claim.close()


def test_file_that_is_not_ready_is_never_claimed(postfix):
    spool = make_spool(postfix)
    path = held_one(postfix)
    os.chmod(path, 0o600)        # as cleanup leaves it until the message is complete
    assert spool.claim(path) is None
    os.chmod(path, 0o700)
    claim = spool.claim(path)
    assert claim is not None
    claim.close()


def test_second_claim_of_a_claimed_file_fails(postfix):
    spool = make_spool(postfix)
    path = held_one(postfix)
    first = spool.claim(path)
    assert first is not None
    assert spool.claim(path) is None
    first.close()


def test_rewrite_names_new_file_from_its_inode_and_delivers_once(postfix, sink):
    spool = make_spool(postfix)
    path = held_one(postfix)
    claim = spool.claim(path)
    original = claim.read_bytes()
    [new_id] = spool.rewrite(claim, [original])
    assert not path.exists()
    spool.wake_qmgr()
    [delivery] = sink.wait_count(1)
    assert delivery.message_id == "<msg-1@holdscan.test>"
    assert new_id != path.name
    # Postfix logged the delivery under the new ID, whose name matched its inode throughout.
    postfix.wait_empty()
    assert new_id in postfix.delivered_ids()
    assert "renam" not in postfix.postsuper("-s").stderr


def test_new_file_name_decodes_to_its_inode(postfix):
    spool = make_spool(postfix)
    new_id = spool.write_new_file(b"data")
    st = (spool.tmp_dir / new_id).stat()
    assert queueid.inode_of(new_id) == st.st_ino
    assert st.st_mode & 0o777 == 0o700 and st.st_uid == spool.owner[0]
    (spool.tmp_dir / new_id).unlink()


def test_long_queue_id_instance_rewrite(sink):
    from holdscan.lab.postfix import PostfixInstance
    with PostfixInstance(sink.port, long_queue_ids=True) as pf:
        spool = make_spool(pf)
        path = held_one(pf)
        assert queueid.is_long(path.name)
        claim = spool.claim(path)
        [new_id] = spool.rewrite(claim, [claim.read_bytes()])
        assert queueid.is_long(new_id)
        spool.wake_qmgr()
        sink.wait_count(1)
        pf.wait_empty()
        assert "renam" not in pf.postsuper("-s").stderr


def test_hashed_incoming_release_and_rewrite(sink):
    from holdscan.lab.postfix import PostfixInstance
    with PostfixInstance(sink.port, hash_queue_names="incoming, hold, deferred, defer",
                         hash_queue_depth=2) as pf:
        spool = make_spool(pf)
        send(pf.port, "s@example.test", ["r@example.test"], simple_message(1))
        send(pf.port, "s@example.test", ["r@example.test"], simple_message(2))
        paths = pf.wait_held(2)
        hold_root = pf.queue_dir / "hold"
        assert all(len(p.relative_to(hold_root).parts) == 3 for p in paths)
        assert sorted(spool.hold_files()) == sorted(paths)
        first, second = (spool.claim(p) for p in paths)
        spool.release(first)
        spool.rewrite(second, [second.read_bytes()])
        spool.wake_qmgr()
        got = sink.wait_count(2)
        assert sorted(d.message_id for d in got) == ["<msg-1@holdscan.test>",
                                                     "<msg-2@holdscan.test>"]
        pf.wait_empty()
        assert "renam" not in pf.postsuper("-s").stderr


def test_refuses_state_on_another_file_system(postfix, tmp_path):
    other = Path("/dev/shm") / f"holdscan-test-{os.getpid()}"
    if os.stat("/dev/shm").st_dev == os.stat(postfix.queue_dir).st_dev:
        pytest.skip("/dev/shm is on the same file system here")
    try:
        spool = Spool(PostfixSettings.read(str(postfix.config_dir)), state_dir=other)
        with pytest.raises(SpoolError, match="one file system"):
            spool.prepare()
    finally:
        subprocess.run(["rm", "-rf", str(other)], check=True)


def test_quarantine_stores_copy_then_removes_original(postfix):
    spool = make_spool(postfix)
    path = held_one(postfix)
    claim = spool.claim(path)
    original = claim.read_bytes()
    qid = spool.quarantine(claim, {"reason": "test"})
    assert not path.exists()
    assert (spool.quarantine_dir / qid / "queuefile").read_bytes() == original


# -- crash safety: kill the process at every step, then recover --------------------------------
CRASH_SCRIPT = """
import sys
from pathlib import Path
from dispatcher.postfix import PostfixSettings
from dispatcher.spool import Spool
spool = Spool(PostfixSettings.read(sys.argv[1]))
claim = spool.claim(Path(sys.argv[2]))
if sys.argv[3] == "rewrite":
    spool.rewrite(claim, [claim.read_bytes()])
else:
    spool.quarantine(claim, {"reason": "test"})
print("finished")
"""

REWRITE_POINTS = ["rewrite.after_create", "rewrite.after_write", "rewrite.before_commit",
                  "rewrite.after_commit", "rewrite.after_take", "rewrite.after_release"]
QUARANTINE_POINTS = ["quarantine.before_commit", "quarantine.after_commit",
                     "quarantine.after_take", "quarantine.after_store"]


@pytest.mark.parametrize("point", REWRITE_POINTS + QUARANTINE_POINTS)
def test_crash_at_every_step_leaves_exactly_one_copy(postfix, sink, point):
    spool = make_spool(postfix)
    path = held_one(postfix)
    original = path.read_bytes()
    op = point.split(".")[0]
    env = {**os.environ, "HOLDSCAN_CRASH_AT": point, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(postfix.config_dir), str(path),
                        op], env=env, capture_output=True, text=True)
    assert p.returncode == -9, p.stderr        # killed right at the crash point
    # While nothing has recovered, the original is untouched if it is still there (rule 8).
    if path.exists():
        assert path.read_bytes() == original
    spool.recover()
    assert not list(spool.tmp_dir.iterdir())
    assert not list(spool.journal.dir.iterdir())
    quarantined = [q for q in spool.quarantine_dir.iterdir() if not q.name.startswith(".")]
    held = postfix.queue_files("hold")
    if op == "quarantine":
        # Either still held (killed before the take, the commit point: undone) or
        # stored and gone from hold (taken: finished). Never both, never neither.
        if point in ("quarantine.before_commit", "quarantine.after_commit"):
            assert held and not quarantined
            assert path.read_bytes() == original
        else:
            assert quarantined and not held
            assert (quarantined[0] / "queuefile").read_bytes() == original
        assert not [q for q in spool.quarantine_dir.iterdir() if q.name.startswith(".tmp-")]
        return
    # A rewrite: after recovery, exactly one of original-in-hold or new-file-released.
    if held:
        claim = spool.claim(held[0])
        spool.release(claim)
    spool.wake_qmgr()
    sink.wait_count(1)
    postfix.wait_empty()
    import time
    time.sleep(1)
    assert sink.count() == 1
    assert "renam" not in postfix.postsuper("-s").stderr
