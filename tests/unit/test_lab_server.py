"""holdscan/lab/server.py: start, wait until ready, stop (SIGTERM, then SIGKILL), clean up."""

from __future__ import annotations

import os
import sys
import time

import pytest

from holdscan.lab.server import LabServer, ServerError, free_port, port_open


class Http(LabServer):
    """Python's own HTTP server: a process that answers on a port."""

    name = "http"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"]

    def ping(self) -> bool:
        return port_open(self.port)


class Script(LabServer):
    """A Python script that never answers a ping unless a file says so."""

    name = "script"
    start_timeout = 5.0

    def __init__(self, code: str, **kw: float) -> None:
        super().__init__(port=0)
        self.code = code
        for k, v in kw.items():
            setattr(self, k, v)

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.code]

    def ping(self) -> bool:
        return (self.dir / "ready").exists()


def test_free_port_is_free() -> None:
    port = free_port()
    assert 0 < port < 65536 and not port_open(port)


def test_start_stop_again_and_close() -> None:
    server = Http()
    with server:
        assert port_open(server.port) and server.proc is not None
        assert os.getsid(server.proc.pid) == server.proc.pid      # its own session
        pid = server.proc.pid
        server.stop()
        assert server.proc is None and not port_open(server.port)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert server.start() is server and port_open(server.port)    # same port again
        assert server.start().proc is server.proc                     # already running
    assert server.proc is None and not server.dir.exists()


def test_a_given_directory_is_kept() -> None:
    with Http() as first:
        given = first.dir / "given"
        with Http(given) as server:
            assert server.dir == given
        assert given.is_dir() and (given / "http.out").exists()


def test_exit_at_start_says_so_with_the_log() -> None:
    server = Script("import sys; print('cannot bind', flush=True); sys.exit(3)")
    with pytest.raises(ServerError, match="script exited at start:\ncannot bind"):
        server.start()
    assert server.proc is None
    server.close()
    assert not server.dir.exists()


def test_no_answer_in_time_stops_it_and_shows_the_log() -> None:
    server = Script("import time; print('starting', flush=True); time.sleep(60)")
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"did not answer within 0.5s:\nstarting"):
        server.start(timeout=0.5)
    assert time.monotonic() - started < 5 and server.proc is None
    server.close()


def test_sigkill_when_sigterm_is_ignored() -> None:
    code = ("import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "pathlib.Path('ready').touch(); time.sleep(60)")
    with Script(code, stop_timeout=0.5) as server:
        assert server.proc is not None
        proc = server.proc
        started = time.monotonic()
        server.stop()
        assert proc.returncode == -9 and time.monotonic() - started < 5
