"""Scan rate of one worker process against bare clamd INSTREAM, on the same messages.

For 5 KB, 100 KB and 5 MB messages, in one run against one private clamd:

  raw     a bare INSTREAM per message over clamd's UNIX socket (one new
          connection each, nothing parsed): what clamd alone costs a worker;
  engine  workers.engine.scan_message with every default scanner (mime,
          attachments, archives, clamav in a kept session): what a worker does.

Prints messages/s for each and engine/raw. Every message is distinct (random
attachment bytes), and clamd's clean-file cache is off, so neither pass gains
from the other having seen the same bytes. Everything shares this machine's
cores; on a noisy 2-core machine repeat the run and read the ratios rather
than the absolute figures.

Usage: .venv/bin/python benchmarks/scan_rate.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from holdscan.lab.clamd import ClamdServer  # noqa: E402
from shared.config import Config, HeadersConfig  # noqa: E402
from shared.contract import ScanRequest  # noqa: E402
from workers.engine import scan_message  # noqa: E402
from workers.scanners import build_scanners  # noqa: E402

RECEIVED = (b"Received: from mx.example.test by hold.example.test;\r\n"
            b"\tMon, 1 Jan 2024 10:00:00 +0000\r\n")
TEXT = ("Hello,\n\nplease find the documents attached. Let me know if anything is "
        "missing before Friday.\n\nBest regards,\nAlice\n")


def _zip(rnd: random.Random, size: int) -> bytes:
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(5):
            words = " ".join(rnd.choice(("alpha", "beta", "gamma", "delta", str(i)))
                             for _ in range(size // 30))
            zf.writestr(f"notes/{i}.txt", words)
    return buf.getvalue()


def message(rnd: random.Random, size: int, n: int) -> bytes:
    """A typical message of about `size` bytes: text, maybe HTML, attachments."""
    m = EmailMessage(policy=SMTP)
    m["From"] = "Alice <alice@example.test>"
    m["To"] = "Bob <bob@example.test>"
    m["Subject"] = f"Documents {n}"
    m["Message-ID"] = f"<bench-{size}-{n}@example.test>"
    m.set_content(TEXT)
    if size >= 50_000:
        m.add_alternative(f"<html><body><p>{TEXT}</p></body></html>", subtype="html")
        m.add_attachment(_zip(rnd, 20_000), "application", "zip", filename="notes.zip")
    room = max(500, int((size - len(m.as_bytes())) * 0.74))     # base64 costs a third
    m.add_attachment(b"%PDF-1.7\n" + rnd.randbytes(room), "application", "pdf",
                     filename=f"report-{n}.pdf")
    return RECEIVED + m.as_bytes()


def raw_instream(path: str) -> Callable[[bytes], None]:
    def scan(data: bytes) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            s.sendall(b"zINSTREAM\0")
            view = memoryview(data)
            for start in range(0, len(view), 1 << 20):
                chunk = view[start:start + (1 << 20)]
                s.sendall(struct.pack("!L", len(chunk)) + chunk)
            s.sendall(b"\0\0\0\0")
            reply = b""
            while not reply.endswith(b"\0"):
                got = s.recv(4096)
                if not got:
                    raise RuntimeError("clamd closed the connection")
                reply += got
            if not reply.endswith(b"OK\0"):
                raise RuntimeError(f"unexpected clamd reply {reply!r}")
    return scan


def rates(passes: dict[str, Callable[[bytes], object]], messages: list[bytes],
          seconds: float, rounds: int = 5) -> dict[str, float]:
    """Messages per second for each pass, over the same messages.

    The passes take turns in `rounds` rounds, so that a busy spell on a shared
    machine slows both rather than whichever happened to run then.
    """
    for scan in passes.values():
        scan(messages[0])           # warm up: connection, first-scan costs in clamd
    done = dict.fromkeys(passes, 0)
    spent = dict.fromkeys(passes, 0.0)
    for _ in range(rounds):
        for name, scan in passes.items():
            started = time.perf_counter()
            n = 0
            while True:
                scan(messages[(done[name] + n) % len(messages)])
                n += 1
                elapsed = time.perf_counter() - started
                if elapsed >= seconds / rounds and n >= 2:
                    break
            done[name] += n
            spent[name] += elapsed
    return {name: done[name] / spent[name] for name in passes}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="per size and pass")
    args = p.parse_args()
    rnd = random.Random(2024)
    sizes = {"5 KB": (5_000, 200), "100 KB": (100_000, 100), "5 MB": (5_000_000, 12)}
    request = ScanRequest("BENCH", 1, "a@example.test", ["b@example.test"], "k", 0, "r", 0.0)

    with ClamdServer(stream_max_length="64M", tcp=False,
                     extra_config="DisableCache yes\n") as clamd:
        cfg = Config()
        cfg.scanners = {"clamav": {"addresses": clamd.addresses}}
        scanners = build_scanners(cfg)
        headers = HeadersConfig()
        raw = raw_instream(clamd.socket_path)

        def engine(data: bytes) -> None:
            verdict = scan_message(data, request, scanners, headers, "bench")
            if verdict.verdict != "clean":
                raise RuntimeError(f"benchmark message not clean: {verdict.reasons}")
            for name, t in verdict.scan_times.items():
                times[name] = times.get(name, 0.0) + t
            counted[0] += 1

        print(f"{'size':>7} {'bytes':>9} {'raw clamd msg/s':>16} {'engine msg/s':>13} "
              f"{'engine/raw':>10}   engine time per message by step (ms)")
        for label, (size, count) in sizes.items():
            messages = [message(rnd, size, n) for n in range(count)]
            times: dict[str, float] = {}
            counted = [0]
            measured = rates({"raw": raw, "engine": engine}, messages, args.seconds)
            raw_rate, engine_rate = measured["raw"], measured["engine"]
            steps = "  ".join(f"{k} {1000 * v / counted[0]:.2f}" for k, v in times.items())
            mean = sum(len(m) for m in messages) // len(messages)
            print(f"{label:>7} {mean:>9} {raw_rate:>16.1f} {engine_rate:>13.1f} "
                  f"{engine_rate / raw_rate:>10.2f}   {steps}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
