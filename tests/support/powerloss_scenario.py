"""The dispatcher's spool operations under a power cut: the run to trace, and the check.

    python -m tests.support.powerloss_scenario PLAN.json

runs, on the spool the plan names (keeping every inode it unlinks, when the
tracer asks: see powerloss.keeping_inodes): Spool.prepare(), recover(), then for each
held message in the plan claim() and one of release, rewrite (an X-Test header
added), quarantine, or split (rewrite plus the original quarantined, in one
operation). tests/support/powerloss.py traces it and builds every crash state;
check_state() recovers each state and says what is wrong with it.

HOLDSCAN_TEST_NO_FSYNC=file (or =dir) makes os.fsync a no-op for regular files
(or directories) in this run only: the fsync the code would lose, to show that
the checker notices.

The invariant, per message, after recovery: it is where it was (the original,
byte for byte, in hold: it will be scanned again) or where its operation puts it,
exactly once:

    release     the original in a Postfix queue (incoming, active, deferred)
    rewrite     the rewritten file in a Postfix queue
    quarantine  the original in one quarantine entry
    split       the rewritten file in a Postfix queue, and the original in one
                quarantine entry

and nothing else: no other copy anywhere, no file in a queue directory that is
not ready (mode 0700: Postfix would never deliver it) or that is ready but does
not parse (rule 9), nothing left in holdscan's tmp/ or journal/ or as a
half-built quarantine entry (.tmp-*).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher import queuefile
from dispatcher.postfix import PostfixSettings
from dispatcher.spool import Spool
from tests.support.powerloss import keep_inodes_from_env

# Postfix's queues for messages: a file in one of these is Postfix's to deliver.
MESSAGE_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
OPS = ("release", "rewrite", "quarantine", "split")


# A plan (JSON): {"settings": settings_to_json(...), "messages": [{"queue_id", "message_id",
# "original" (the held file's bytes, hex), "op" (one of OPS)}, ...]}
Plan = dict[str, Any]


def settings_to_json(s: PostfixSettings) -> dict[str, Any]:
    return {"queue_directory": str(s.queue_directory), "mail_owner": s.mail_owner,
            "long_queue_ids": s.long_queue_ids, "hash_queue_names": sorted(s.hash_queue_names),
            "hash_queue_depth": s.hash_queue_depth, "line_length_limit": s.line_length_limit,
            "config_directory": s.config_directory}


def settings_from_json(d: dict[str, Any], queue_directory: str | os.PathLike[str] | None = None
                       ) -> PostfixSettings:
    return PostfixSettings(
        queue_directory=Path(queue_directory or str(d["queue_directory"])),
        mail_owner=str(d["mail_owner"]), long_queue_ids=bool(d["long_queue_ids"]),
        hash_queue_names=frozenset(d["hash_queue_names"]),
        hash_queue_depth=int(d["hash_queue_depth"]),
        line_length_limit=int(d["line_length_limit"]),
        config_directory=str(d["config_directory"]))


def rewritten(original: bytes, line_length_limit: int) -> bytes:
    qf = queuefile.parse(original).with_headers(add=[("X-Test", "1")], replace=[],
                                                subject_tag=None)
    return queuefile.serialize(qf, line_length_limit)


def message_id(data: bytes) -> str:
    qf = queuefile.parse(data)
    for line in qf.content[:qf.header_end()]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"message-id":
            return value.strip().decode("latin-1")
    return ""


# -- the run that is traced -------------------------------------------------------------------

def _break_fsync(what: str) -> None:
    if what not in ("file", "dir"):
        raise SystemExit(f"HOLDSCAN_TEST_NO_FSYNC={what!r}: say file or dir")
    real = os.fsync

    def fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        if is_dir == (what == "dir"):
            return
        real(fd)

    os.fsync = fsync  # type: ignore[assignment]


def run(plan: Plan) -> None:
    settings = settings_from_json(plan["settings"])
    spool = Spool(settings)
    spool.prepare()
    spool.recover()
    for m in plan["messages"]:
        path = spool.path("hold", m["queue_id"])
        claim = spool.claim(path)
        if claim is None:
            raise SystemExit(f"cannot claim {path}")
        op = m["op"]
        if op == "release":
            spool.release(claim)
        elif op == "quarantine":
            spool.quarantine(claim, {"reason": "test"})
        else:
            new = rewritten(claim.read_bytes(), settings.line_length_limit)
            if op == "split":
                spool.rewrite(claim, [new], quarantine={"reason": "split"})
            else:
                spool.rewrite(claim, [new])


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[1]).read_text())
    keep_inodes_from_env()
    if os.environ.get("HOLDSCAN_TEST_NO_FSYNC"):
        _break_fsync(os.environ["HOLDSCAN_TEST_NO_FSYNC"])
    run(plan)
    return 0


# -- the check of one crash state ---------------------------------------------------------------

@dataclass(frozen=True)
class Copy:
    where: str          # "hold", "incoming", ..., or "quarantine"
    path: str           # relative to the spool
    data: bytes


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir()) if root.is_dir() else []


def check_state(spool_root: Path, plan: Plan) -> list[str]:
    """Recover the spool at spool_root as the dispatcher does at start (prepare, then
    recover) and return every way in which it breaks the invariant (empty: none)."""
    settings = settings_from_json(plan["settings"], spool_root)
    with _logged() as said:
        try:
            spool = Spool(settings)
            spool.prepare()
            spool.recover()
        except Exception as e:      # noqa: BLE001 - a recovery that fails is a finding
            return [f"recovery failed: {type(e).__name__}: {e}"]
    problems = _problems(spool_root, plan, settings)
    return problems + [f"(recovery logged: {line})" for line in said] if problems else []


@contextmanager
def _logged() -> Iterator[list[str]]:
    """holdscan's log records while recovering, kept for a violation's description
    rather than printed for every state."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if not message.startswith("cannot wake the queue manager"):  # none runs here
                lines.append(f"{record.levelname.lower()}: {message}")

    logger = logging.getLogger("holdscan")
    handler, level, propagate = Keep(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _problems(spool_root: Path, plan: Plan, settings: PostfixSettings) -> list[str]:
    problems: list[str] = []
    copies: dict[str, list[Copy]] = {}

    def rel(p: Path) -> str:
        return str(p.relative_to(spool_root))

    def add(where: str, p: Path, data: bytes) -> None:
        try:
            mid = message_id(data)
        except (queuefile.QueueFileError, ValueError) as e:
            problems.append(f"{rel(p)}: does not parse ({e})")
            return
        copies.setdefault(mid, []).append(Copy(where, rel(p), data))

    for q in MESSAGE_QUEUES:
        for p in _files(spool_root / q):
            st = p.lstat()
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"{rel(p)}: not a regular file")
            elif st.st_mode & 0o700 != 0o700:
                problems.append(f"{rel(p)}: not ready (mode {st.st_mode & 0o7777:04o}, "
                                f"{st.st_size} bytes): Postfix never delivers it")
            else:
                add(q, p, p.read_bytes())

    state = spool_root / "holdscan"
    for d in ("tmp", "journal"):
        for p in _files(state / d):
            problems.append(f"{rel(p)}: left after recovery")
    qdir = state / "quarantine"
    for entry in sorted(qdir.iterdir()) if qdir.is_dir() else []:
        if not entry.is_dir():
            continue
        if entry.name.startswith("."):
            problems.append(f"{rel(entry)}/: half-built quarantine entry left after recovery "
                            f"({', '.join(sorted(c.name for c in entry.iterdir())) or 'empty'})")
        elif not (entry / "queuefile").is_file():
            problems.append(f"{rel(entry)}/: quarantine entry without a queuefile")
        else:
            add("quarantine", entry / "queuefile", (entry / "queuefile").read_bytes())

    for m in plan["messages"]:
        found = copies.pop(m["message_id"], [])
        problem = _outcome(m, found, settings.line_length_limit)
        if problem:
            problems.append(problem)
    for mid, found in copies.items():
        problems.append(f"{mid or '(no Message-ID)'}: not a message of the run, at "
                        + ", ".join(c.path for c in found))
    return problems


def _outcome(m: dict[str, str], found: list[Copy], line_length_limit: int) -> str | None:
    original = bytes.fromhex(m["original"])
    new = rewritten(original, line_length_limit)

    def kind(c: Copy) -> str:
        if c.where == "quarantine":
            return "quarantined original" if c.data == original else "quarantined, changed"
        if c.where == "hold":
            return "held original" if c.data == original else "held, changed"
        return ("queued original" if c.data == original
                else "queued rewritten" if c.data == new else "queued, changed")

    got = Counter(kind(c) for c in found)
    after = {"release": ["queued original"], "rewrite": ["queued rewritten"],
             "quarantine": ["quarantined original"],
             "split": ["queued rewritten", "quarantined original"]}[m["op"]]
    if got in (Counter(["held original"]), Counter(after)):
        return None
    what = ("lost: no copy anywhere" if not found else
            "duplicated" if sum(got.values()) > len(after) else "wrong outcome")
    return (f"{m['message_id']} ({m['op']} of {m['queue_id']}): {what}: found "
            + (", ".join(f"{kind(c)} at {c.path}" for c in found) or "nothing")
            + f"; expected either the held original or {' + '.join(after)}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
