"""`holdscan demo`: the whole system on this machine, in a temporary directory.

A private Postfix that holds every message it receives, Redis, clamd with a
generated EICAR signature, the dispatcher, two Celery workers and Flower, all
on free loopback ports. It sends a mixed set of messages by SMTP, shows them
flow, and prints where each one ended. Everything it started is stopped, and
everything it wrote removed, when it ends — also on Ctrl-C, SIGTERM (`timeout`,
systemd, `kill`) and SIGHUP (a closed terminal), at any moment.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TextIO

from dispatcher.quarantine import entries as quarantine_entries

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


class DemoError(RuntimeError):
    pass


class DemoStopped(Exception):
    """Ctrl-C, SIGTERM or SIGHUP: unwind, so that everything started is stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# A stop signal that came while a server was being started and registered for clean-up.
_held: dict[str, int] = {"depth": 0, "pending": 0, "stopped": 0}


def _stop(signum: int, _frame: object) -> None:
    # Once: a second signal must not cut the clean-up short (a closed terminal may send
    # SIGHUP and then SIGTERM; an impatient user presses Ctrl-C twice).
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    _held["stopped"] = signum
    if _held["depth"]:
        _held["pending"] = signum
        return
    raise DemoStopped(signum)


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """Start something and register its clean-up as one step: a stop signal in between
    would leave it running (a process started, its stop not yet on the ExitStack). The
    signal takes effect when the step is done."""
    _held["depth"] += 1
    try:
        yield
    finally:
        _held["depth"] -= 1
        if not _held["depth"] and _held["pending"]:
            signum, _held["pending"] = _held["pending"], 0
            raise DemoStopped(signum)


def _attachment_message(n: int, subject: str, filename: str, payload: bytes,
                        ctype: str = "application/octet-stream") -> bytes:
    b64 = base64.encodebytes(payload).decode()
    return (f"From: demo@example.test\r\nTo: user@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <demo-{n}@holdscan.test>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="demo-boundary"\r\n\r\n'
            "--demo-boundary\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            "Please see the attachment.\r\n"
            f"--demo-boundary\r\nContent-Type: {ctype}; name=\"{filename}\"\r\n"
            f"Content-Disposition: attachment; filename=\"{filename}\"\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--demo-boundary--\r\n").encode()


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


def demo_messages() -> list[tuple[str, bytes]]:
    """(subject, message) pairs: what an administrator wants to see handled."""
    plain = ("From: demo@example.test\r\nTo: user@example.test\r\nSubject: {s}\r\n"
             "Message-ID: <demo-{n}@holdscan.test>\r\n{extra}\r\n{body}")
    pe = b"MZ\x90\x00" + b"\x00" * 60 + b"This program cannot be run in DOS mode.\r\n"
    msgs = [
        ("A clean note", plain.format(s="A clean note", n=1, extra="",
                                       body="Lunch at noon?\r\n").encode()),
        ("EICAR attached", _attachment_message(2, "EICAR attached", "eicar.com", EICAR)),
        ("EICAR in a zip", _attachment_message(3, "EICAR in a zip", "docs.zip",
                                               _zip("eicar.txt", EICAR), "application/zip")),
        ("An .exe attachment", _attachment_message(4, "An .exe attachment", "setup.exe", pe)),
        ("8-bit text", plain.format(
            s="8-bit text", n=5,
            extra="MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: 8bit\r\n",
            body="Grüße aus Köln — ça va? ☕\r\n").encode()),
        ("A very long line", plain.format(s="A very long line", n=6, extra="",
                                          body="x" * 5000 + "\r\n").encode()),
    ]
    return msgs


def _row_table(rows: list[dict[str, str]]) -> str:
    cols = ["queue_id", "subject", "verdict", "action", "ended"]
    heads = {"queue_id": "QUEUE ID", "subject": "SUBJECT", "verdict": "VERDICT",
             "action": "ACTION", "ended": "WHERE IT ENDED"}
    widths = {c: max(len(heads[c]), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(heads[c].ljust(widths[c]) for c in cols)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _original_queue_id(message: bytes) -> str:
    m = re.search(rb"\(Postfix\) with E?SMTPS?A? id ([0-9A-Za-z]+)", message)
    return m.group(1).decode() if m else "?"


def run_demo(keep: bool = False, out: TextIO | None = None) -> list[dict[str, str]]:
    """Run the demo; returns the table rows (also used by the tests)."""
    from holdscan.lab.clamd import ClamdServer
    from holdscan.lab.cluster import Cluster, lab_config
    from holdscan.lab.postfix import PostfixInstance, free_port
    from holdscan.lab.redis import RedisServer
    from holdscan.lab.sink import Sink

    write = (out or sys.stdout).write
    if os.geteuid() != 0:
        raise DemoError("the demo starts a private Postfix, which needs root: run it as root "
                        "(sudo make demo)")
    if shutil.which("postconf") is None or not Path("/usr/sbin/clamd").exists():
        raise DemoError("Postfix or clamd is not installed: run `make demo`, which installs them")
    messages = demo_messages()
    with ExitStack() as stack:
        with _uninterrupted():
            base = Path(tempfile.mkdtemp(prefix="holdscan-demo-"))
            stack.callback(shutil.rmtree, base, True)
        os.chmod(base, 0o755)
        write(f"holdscan demo: working in {base}\n")
        with _uninterrupted():
            sink = stack.enter_context(Sink(free_port(), base / "sink"))
        with _uninterrupted():
            pf = stack.enter_context(PostfixInstance(sink.port, base=base))
        write(f"  Postfix   127.0.0.1:{pf.port} (holds everything it receives)\n")
        with _uninterrupted():
            rds = stack.enter_context(RedisServer())
        write(f"  Redis     {rds.url}\n")
        with _uninterrupted():
            clamd = stack.enter_context(ClamdServer(tcp=False))
        write(f"  clamd     {clamd.addresses[0]} (one generated EICAR signature)\n")
        cfg = lab_config(base / "holdscan.toml", pf.config_dir, rds.url, clamd.addresses[0])
        logs = base / "logs"
        logs.mkdir()
        with _uninterrupted():
            cluster = Cluster(cfg, logs)
            stack.callback(cluster.close)
            cluster.start_worker(concurrency=1, name="worker-a")
            cluster.start_worker(concurrency=1, name="worker-b")
        flower_port = free_port()
        flower_log = stack.enter_context(open(logs / "flower.log", "wb"))
        with _uninterrupted():
            flower = subprocess.Popen(
                [str(Path(sys.executable).parent / "celery"), "-A", "workers.app", "flower",
                 f"--port={flower_port}", "--address=127.0.0.1", f"--broker={rds.url}"],
                env={**os.environ, "HOLDSCAN_CONFIG": str(cfg)},
                stdout=flower_log, stderr=subprocess.STDOUT)
            stack.callback(flower.wait, 10)
            stack.callback(flower.terminate)
        with _uninterrupted():
            cluster.start_dispatcher()
        write("  dispatcher and two workers started\n\nsending "
              f"{len(messages)} messages by SMTP ...\n")
        for _subject, data in messages:
            with smtplib.SMTP("127.0.0.1", pf.port, timeout=30) as s:
                s.sendmail("demo@example.test", ["user@example.test"], data)
        qdir = pf.queue_dir / "holdscan" / "quarantine"
        deadline = time.monotonic() + 120
        while True:
            delivered = sink.count()
            stopped = len(quarantine_entries(qdir))
            held = len(pf.queue_files("hold"))
            write(f"\r  held {held}  delivered {delivered}  quarantined {stopped}   ")
            if delivered + stopped >= len(messages):
                break
            if time.monotonic() > deadline:
                raise DemoError("not every message was handled within 2 minutes; logs: "
                                f"{logs}\n{cluster.logs('dispatcher')[-2000:]}")
            time.sleep(0.2)
        write("\n\n")
        rows = []
        for d in sink.deliveries():
            rows.append({"queue_id": _original_queue_id(d.data),
                         "subject": d.header("Subject") or "",
                         "verdict": d.header("X-Holdscan-Status") or "(none)",
                         "action": "delivered", "ended": f"sink (to {', '.join(d.rcpt_tos)})"})
        for e in quarantine_entries(qdir):
            meta = e.meta
            rows.append({"queue_id": meta["queue_id"], "subject": meta.get("subject", ""),
                         "verdict": f"{meta['action']} ({meta['reason']})",
                         "action": "quarantined", "ended": f"quarantine {e.id}"})
        order = {s: i for i, (s, _) in enumerate(messages)}
        rows.sort(key=lambda r: order.get(r["subject"], 99))
        write(_row_table(rows) + "\n\n")
        write(f"Flower (the task queue and the workers): http://127.0.0.1:{flower_port}/\n")
        if keep:
            write("Everything stays up until Ctrl-C.\n")
            try:
                while True:
                    time.sleep(1)
            except (KeyboardInterrupt, DemoStopped):
                write("\n")
        write("stopping and cleaning up ...\n")
    return rows


def main_demo(keep: bool = False) -> int:
    # Without these, SIGTERM and SIGHUP kill the demo at once, and the dispatcher, the
    # workers (in sessions of their own), Redis, clamd, Postfix and their directories
    # stay behind. Raising instead unwinds run_demo's ExitStack, as Ctrl-C does.
    previous = {s: signal.signal(s, _stop) for s in STOP_SIGNALS}
    try:
        run_demo(keep=keep)
    except DemoError as e:
        print(f"holdscan demo: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        # Unwinding from DemoStopped can raise something else on the way (smtplib's QUIT
        # after an interrupted command): stopped all the same, and cleaned up.
        signum = e.signum if isinstance(e, DemoStopped) else _held["stopped"]
        if not signum:
            raise
        name = signal.Signals(signum).name
        print(f"holdscan demo: stopped by {name}; everything it started is stopped and "
              "removed", file=sys.stderr)
        return 128 + signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
