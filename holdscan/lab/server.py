"""What every lab server has in common: a temporary directory, a free loopback
port, a process started in its own session with its output in that directory,
a wait until it answers, and a stop that does not leave it running.

A subclass says how to run its server (`command`) and how to tell that it
answers (`ping`); the rest is here:

    class EchoServer(LabServer):
        name = "echo"

        def command(self) -> list[str]:
            return ["socat", f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork", "EXEC:cat"]

        def ping(self) -> bool:
            return port_open(self.port)

    with EchoServer() as echo:          # started, answering; stopped and removed after
        echo.port, echo.dir, echo.proc

start() raises the subclass's `error` (a ServerError) with the end of the
server's log when the process exits or does not answer in time; stop() sends
SIGTERM to the process, then SIGKILL if it is still there after stop_timeout;
close() also removes the directory if the server made it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ServerError(RuntimeError):
    """A lab server would not start; the message carries the end of its log."""


class LabServer:
    """One server process of the lab. Subclasses set the class attributes and
    implement command() and ping()."""

    name = "server"                 # in messages, and in the temporary directory's name
    log_name: str | None = None     # the server's own log file in `dir`, if it writes one
    start_timeout = 30.0            # seconds until it must answer
    stop_timeout = 10.0             # seconds between SIGTERM and SIGKILL
    error: type[ServerError] = ServerError
    _LOG_LINES = 20                 # lines of each log in an error message

    def __init__(self, directory: str | Path | None = None, port: int | None = None,
                 temp_parent: str | None = None) -> None:
        """directory: where the server keeps its files (made, and removed by close(), when
        not given: in temp_parent, or the default temporary directory); port: a free
        loopback port if not given (0 for none)."""
        self._own_dir = directory is None
        self.dir = Path(directory) if directory is not None else Path(
            tempfile.mkdtemp(prefix=f"holdscan-{self.name}-", dir=temp_parent))
        self.port = free_port() if port is None else port
        self.proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    # -- what a subclass says ----------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def ping(self) -> bool:
        """True once the server answers as it should."""
        raise NotImplementedError

    @property
    def cwd(self) -> Path:
        return self.dir

    def after_stop(self) -> None:
        """Called when the process has gone (e.g. to remove a socket file it leaves)."""

    # -- life cycle --------------------------------------------------------------------
    @property
    def output_path(self) -> Path:
        """Where the process's stdout and stderr go."""
        return self.dir / f"{self.name}.out"

    @property
    def log_path(self) -> Path:
        return self.dir / self.log_name if self.log_name else self.output_path

    def start(self, timeout: float | None = None) -> Self:
        """Start the server unless it runs, and wait until it answers."""
        if self.proc is not None:
            return self
        timeout = self.start_timeout if timeout is None else timeout
        self.dir.mkdir(parents=True, exist_ok=True)
        self._output = open(self.output_path, "ab")  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(self.command(), cwd=self.cwd, stdin=subprocess.DEVNULL,
                                     stdout=self._output, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise self.error(f"{self.name} exited at start:\n{self.log_tail()}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise self.error(f"{self.name} did not answer within {timeout:g}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the process: SIGTERM, then SIGKILL after stop_timeout. Files stay."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._output is not None:
            self._output.close()
            self._output = None
        if proc is not None:
            self.after_stop()

    def close(self) -> None:
        """Stop, and remove the directory if the server made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int | None = None) -> str:
        """The last lines of the server's log and of its output."""
        lines = lines or self._LOG_LINES
        out: list[str] = []
        for path in dict.fromkeys((self.log_path, self.output_path)):
            try:
                out += path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                pass
        return "\n".join(out) or "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
