"""Fuzzing the scan engine and the queue-file codec: no exception, no case over the CPU
budget, memory a fixed multiple of the message.

A short run is part of the suite (a fixed seed, so a failure repeats); a long
one is run by hand:

    HOLDSCAN_FUZZ_CASES=20000 HOLDSCAN_FUZZ_SEED=7 .venv/bin/python -m pytest -q \\
        -p no:cacheprovider tests/workers/test_fuzz_engine.py

Every case is one to four mutations away from a seed (innocent mail, hidden
payloads, hostile shapes; tests/support/fuzzing.py). The engine runs with the
parsing scanners (mime, attachments, archives): clamd only adds waiting, and
the CPU budget counts this process only. A failure prints the seed and case
number, and the message is rebuilt from them.
"""

from __future__ import annotations

import os
import random
import time
import tracemalloc

from dispatcher import queuefile
from shared.config import HeadersConfig
from tests.support.fuzzing import mutate, mutate_queue_file, queue_file, seeds
from tests.support.scanning import REQUEST
from workers.engine import scan_message
from workers.scanners.archives import ArchivesScanner
from workers.scanners.attachments import AttachmentsScanner
from workers.scanners.mime import MimeScanner

CASES = int(os.environ.get("HOLDSCAN_FUZZ_CASES", "300"))
SEED = int(os.environ.get("HOLDSCAN_FUZZ_SEED", "1"))
BUDGET = 2.0                # CPU seconds per message, as [scanners.mime] cpu_seconds
SLACK = 1.0                 # what a verdict costs past the budget: unwinding, the log
MEMORY_FACTOR = 24          # peak traced memory, times the message size ...
MEMORY_FLOOR = 8 * 2**20    # ... plus this (parsers' fixed costs)


def test_the_scan_engine_survives_mutated_mail() -> None:
    rnd = random.Random(SEED)
    pool = seeds()
    scanners = [MimeScanner({"cpu_seconds": BUDGET}), AttachmentsScanner({}),
                ArchivesScanner({})]
    worst = (0.0, 0.0)
    for n in range(CASES):
        raw = mutate(rnd, rnd.choice(pool), pool)
        where = f"seed {SEED} case {n} ({len(raw)} bytes)"
        tracemalloc.start()
        started = time.process_time()
        try:
            verdict = scan_message(raw, REQUEST, scanners, HeadersConfig(), "fuzz")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        seconds = time.process_time() - started
        worst = max(worst, (seconds, peak / max(len(raw), 1)))
        # An exception anywhere is an `error` finding: there must be none.
        assert verdict.verdict != "error", (where, verdict.reasons)
        assert seconds < BUDGET * 2 + SLACK, (where, seconds)
        assert peak < MEMORY_FACTOR * len(raw) + MEMORY_FLOOR, (where, peak)
    print(f"{CASES} cases, worst {worst[0]:.2f}s CPU, worst memory {worst[1]:.1f}x")


def test_the_queue_file_codec_survives_mutated_files() -> None:
    rnd = random.Random(SEED)
    pool = seeds()
    for n in range(CASES * 4):
        message = mutate(rnd, rnd.choice(pool), pool) if rnd.random() < 0.5 else rnd.choice(pool)
        data = queue_file(message)
        if rnd.random() < 0.8:
            data = mutate_queue_file(rnd, data)
        where = f"seed {SEED} case {n}"
        tracemalloc.start()
        started = time.process_time()
        try:
            try:
                qf = queuefile.parse(data)
            except queuefile.QueueFileError:
                continue
            # What the codec accepts, it writes back, and reads again the same.
            again = queuefile.parse(queuefile.serialize(qf))
            assert again.message_bytes() == qf.message_bytes(), where
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert time.process_time() - started < 1.0, where
            # The codec keeps each line as an object of its own: a file of empty
            # lines (2 bytes a record) costs ~100 bytes a line, so per record too.
            records = data.count(b"N") + data.count(b"L")
            assert peak < MEMORY_FACTOR * len(data) + 160 * records + 2**20, (where, peak)
