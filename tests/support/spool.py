"""Looking at a lab Postfix's spool after a test: what was quarantined, what is held,
what was delivered how often, and whether holdscan left anything behind.

    quarantined(pf)             the meta.json of every quarantine entry
    quarantine_entries(pf)      the entries' directories (each has queuefile, meta.json)
    held_bytes(pf, count)       wait for `count` held files; their bytes
    assert_exactly_once(sink, message_ids)
    assert_spool_clean(pf)      queues empty, no journal or temporary file, postsuper -s quiet
    copies_per_recipient(pf, sink, spool, message_id)
                                one Message-ID counted at the sink, in every queue and
                                in the quarantine
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from dispatcher import queuefile
from dispatcher.spool import Spool
from holdscan.lab.postfix import PostfixInstance
from holdscan.lab.sink import Sink


def quarantine_dir(pf: PostfixInstance) -> Path:
    return pf.queue_dir / "holdscan" / "quarantine"


def quarantine_entries(pf: PostfixInstance) -> list[Path]:
    """The quarantine's entries (not the half-built .tmp-* ones); [] before the first."""
    d = quarantine_dir(pf)
    if not d.exists():
        return []
    return [p for p in d.iterdir() if not p.name.startswith(".")]


def quarantined(pf: PostfixInstance) -> list[dict]:
    """The meta.json of each quarantine entry."""
    return [json.loads((p / "meta.json").read_text()) for p in quarantine_entries(pf)]


def held_bytes(pf: PostfixInstance, count: int = 1) -> list[bytes]:
    return [p.read_bytes() for p in pf.wait_held(count)]


def assert_exactly_once(sink: Sink, expected_ids: list[str]) -> None:
    counts = Counter(d.message_id for d in sink.deliveries())
    missing = [i for i in expected_ids if counts[i] == 0]
    dupes = {i: c for i, c in counts.items() if c > 1}
    assert not missing, f"{len(missing)} never delivered, e.g. {missing[:5]}"
    assert not dupes, f"delivered more than once: {dict(list(dupes.items())[:5])}"


def assert_spool_clean(pf: PostfixInstance) -> None:
    pf.wait_empty()
    state = pf.queue_dir / "holdscan"
    assert not list((state / "tmp").iterdir())
    assert not list((state / "journal").iterdir())
    assert "renam" not in pf.postsuper("-s").stderr


def copies_per_recipient(pf: PostfixInstance, sink: Sink, spool: Spool,
                         message_id: str) -> tuple[Counter[str], Counter[str], list[str]]:
    """(delivered or still queued, per recipient), (quarantined, per recipient), and
    which of those copies were rewritten by us."""
    live: Counter[str] = Counter()
    rewritten = []
    for d in sink.deliveries():
        if d.message_id == message_id:
            live.update(d.rcpt_tos)
            if d.header("X-Holdscan-Status"):
                rewritten.append("delivered")
    for q in ("maildrop", "incoming", "active", "deferred", "hold"):
        for p in pf.queue_files(q):
            try:
                qf = queuefile.parse(p.read_bytes())
            except (queuefile.QueueFileError, FileNotFoundError):
                continue        # maildrop files are not queue files; gone meanwhile
            if f"Message-ID: {message_id}".encode() in qf.message_bytes(b"\n"):
                live.update(r.address for r in qf.recipients if not r.done)
    quarantined: Counter[str] = Counter()
    for e in spool.quarantine_dir.iterdir():
        if e.name.startswith(".") or not (e / "queuefile").exists():
            continue
        meta = json.loads((e / "meta.json").read_text())
        if message_id.encode() in (e / "queuefile").read_bytes():
            quarantined.update(meta["recipients"])
    return live, quarantined, rewritten
