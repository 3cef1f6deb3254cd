"""An SMTP sink that keeps every delivery as two files, for counting at the far end.

Run as its own process (`python -m holdscan.lab.sink PORT DIR`) so that it
outlives nothing and shares no interpreter with the code under test. Each
delivery becomes DIR/<n>.json (envelope) and DIR/<n>.eml (the bytes received,
CRLF line endings as sent on the wire); the process's own output goes to DIR/sink.out.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from holdscan.lab.server import LabServer, port_open


@dataclass
class Delivery:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message_id(self) -> str:
        msg = email.message_from_bytes(self.data, policy=email.policy.compat32)
        return str(msg.get("Message-ID", "")).strip()

    def header(self, name: str) -> str | None:
        msg = email.message_from_bytes(self.data, policy=email.policy.compat32)
        v = msg.get(name)
        return None if v is None else str(v)

    @property
    def body(self) -> bytes:
        """The bytes after the first empty line."""
        sep = self.data.find(b"\r\n\r\n")
        return b"" if sep < 0 else self.data[sep + 4:]


class Sink(LabServer):
    name = "sink"
    start_timeout = 15.0

    def __init__(self, port: int, directory: str | os.PathLike[str] | None = None) -> None:
        super().__init__(None if directory is None else Path(directory), port=port)

    @property
    def cwd(self) -> Path:
        return Path(__file__).resolve().parents[2]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "holdscan.lab.sink", str(self.port), str(self.dir)]

    def ping(self) -> bool:
        return port_open(self.port)

    def stop(self) -> None:
        """Stop, and remove the directory if the sink made it (deliveries are gone then)."""
        super().stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def deliveries(self) -> list[Delivery]:
        out = []
        for j in sorted(self.dir.glob("[0-9]*.json"), key=lambda p: int(p.stem)):
            env = json.loads(j.read_text())
            data = j.with_suffix(".eml").read_bytes()
            out.append(Delivery(env["mail_from"], env["rcpt_tos"], data))
        return out

    def count(self) -> int:
        return len(list(self.dir.glob("[0-9]*.json")))

    def wait_count(self, n: int, timeout: float = 60) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count()} of {n} deliveries at the sink after {timeout}s")
            time.sleep(0.05)
        return self.deliveries()

    def clear(self) -> None:
        for p in self.dir.iterdir():
            if p != self.output_path:
                p.unlink()


def _serve(port: int, directory: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    # RFC 5321's 1000-octet lines are what a sink may refuse; this one must accept what
    # Postfix relays unchanged (smtp_line_length_limit = 0), so that long lines can be
    # compared byte for byte.
    SMTP.line_length_limit = 1 << 24

    counter = itertools.count(1)
    lock = threading.Lock()

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            with lock:
                n = next(counter)
            (directory / f"{n}.eml").write_bytes(envelope.original_content or envelope.content)
            tmp = directory / f".{n}.json"
            tmp.write_text(json.dumps({"mail_from": envelope.mail_from,
                                       "rcpt_tos": list(envelope.rcpt_tos)}))
            tmp.rename(directory / f"{n}.json")   # the .json appearing is the commit
            return "250 OK"

    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(Handler(), hostname="127.0.0.1", port=port,
                            enable_SMTPUTF8=True, decode_data=False, data_size_limit=0)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), Path(sys.argv[2]))
