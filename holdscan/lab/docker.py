"""A Docker engine for the tests: the one that runs, or a `dockerd` started for them.

    with DockerEngine() as engine:     # uses a running engine, or starts dockerd
        engine.run("image", "ls")      # the docker CLI against it; DockerError on failure
        engine.started                 # True if this object started dockerd (and stops it)

A dockerd started here is stopped again by its PID (SIGTERM, then SIGKILL), never by name:
other engines on the machine are none of its business. It runs with --ip-forward=false:
containers reach each other and the host's published loopback ports, but the kernel does
not route their packets anywhere else. Image builds that need the package registries use
the host's network (`network: host` in the compose file), so they reach exactly what the
host reaches.

EngineUnavailable (a DockerError) means no engine could be had at all (not root, no kernel
support): the one reason a test may skip. Anything else is a failure with the log's end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

DOCKERD = "dockerd"
SOCKET = "/var/run/docker.sock"


class DockerError(RuntimeError):
    """A docker command failed; the message says which and why."""


class EngineUnavailable(DockerError):
    """No Docker engine runs here and none can be started."""


def docker_cli() -> str:
    path = shutil.which("docker")
    if path is None:
        raise DockerError("no docker command: install Debian's docker.io "
                          "(scripts/bootstrap.sh does)")
    return path


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class DockerEngine:
    """A Docker engine to use; starts dockerd when none answers."""

    start_timeout = 60.0
    stop_timeout = 30.0

    def __init__(self, log_dir: Path | None = None) -> None:
        self.cli = docker_cli()
        self.started = False
        self.proc: subprocess.Popen[bytes] | None = None
        self._own_dir = log_dir is None
        self.log_dir = Path(tempfile.mkdtemp(prefix="holdscan-dockerd-")) if log_dir is None \
            else log_dir
        self.log_path = self.log_dir / "dockerd.log"

    # -- use -------------------------------------------------------------------------------

    def answers(self) -> bool:
        p = subprocess.run([self.cli, "version", "--format", "{{.Server.Version}}"],
                           capture_output=True, text=True, timeout=30)
        return p.returncode == 0 and bool(p.stdout.strip())

    def run(self, *args: str, timeout: float = 600, check: bool = True,
            input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """`docker ARGS`; DockerError naming the command and its output when it fails."""
        try:
            p = subprocess.run([self.cli, *args], capture_output=True, timeout=timeout,
                               input=input)
        except subprocess.TimeoutExpired as e:
            raise DockerError(f"docker {' '.join(args)}: no end after {timeout:.0f}s") from e
        out = subprocess.CompletedProcess(p.args, p.returncode,
                                          p.stdout.decode(errors="replace"),
                                          p.stderr.decode(errors="replace"))
        if check and p.returncode != 0:
            raise DockerError(f"docker {' '.join(args)} failed ({p.returncode}): "
                              f"{(out.stderr or out.stdout).strip()[-2000:]}")
        return out

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False, timeout=60).returncode == 0

    # -- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        if self.answers():
            return
        dockerd = shutil.which(DOCKERD) or ("/usr/sbin/dockerd"
                                            if os.access("/usr/sbin/dockerd", os.X_OK) else None)
        if dockerd is None:
            raise DockerError("no dockerd: install Debian's docker.io (scripts/bootstrap.sh "
                              "does)")
        if os.geteuid() != 0:
            raise EngineUnavailable("no Docker engine runs, and starting dockerd needs root")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [dockerd, "--ip-forward=false", "--pidfile", str(self.log_dir / "dockerd.pid"),
                 "--host", f"unix://{SOCKET}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started = True
        deadline = time.monotonic() + self.start_timeout
        while not self.answers():
            if self.proc.poll() is not None:
                self.started = False
                log_end = _tail(self.log_path)
                raise EngineUnavailable(f"dockerd exited with {self.proc.returncode} at start:"
                                        f"\n{log_end}")
            if time.monotonic() > deadline:
                self.stop()
                raise EngineUnavailable(f"dockerd did not answer within "
                                        f"{self.start_timeout:.0f}s:\n{_tail(self.log_path)}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop dockerd if this object started it (by its PID); containers it runs stop too."""
        if not self.started or self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.started = False

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
