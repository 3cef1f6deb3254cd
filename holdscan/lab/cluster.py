"""Start holdscan itself as separate processes, the way an administrator would:
`holdscan dispatch` and `holdscan worker`, with a TOML config written for the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HOLDSCAN = str(Path(sys.executable).parent / "holdscan")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    os.chmod(path, 0o644)
    return path


def lab_config(path: Path, postfix_config_dir: Path, broker_url: str, clamd_address: str,
               tables: dict[str, dict[str, Any]] | None = None, **dispatcher: Any) -> Path:
    """A config for lab runs: short deadlines so that recovery shows within seconds."""
    d = {"verdict_deadline": 15.0, "rescan_interval": 2.0, "batch_wait": 0.02}
    d.update(dispatcher)
    config: dict[str, dict[str, Any]] = {
        "postfix": {"config_directory": str(postfix_config_dir)},
        "dispatcher": d,
        "broker": {"url": broker_url, "task_time_limit": 60, "visibility_timeout": 120},
        "scanners.clamav": {"addresses": [clamd_address], "timeout": 10.0},
    }
    # A table given here adds to (and overrides settings of) the one above of its name.
    for name, values in (tables or {}).items():
        config[name] = {**config.get(name, {}), **values}
    return write_config(path, config)


class Cluster:
    """Dispatcher and worker processes; everything is stopped by close()."""

    def __init__(self, config: Path, log_dir: Path) -> None:
        self.config = config
        self.log_dir = log_dir
        self.workers: list[subprocess.Popen[bytes]] = []
        self.dispatcher: subprocess.Popen[bytes] | None = None
        self._n = 0

    def _spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None,
               stderr: int | None = None) -> subprocess.Popen[bytes]:
        self._n += 1
        # The child keeps the log open; ours is closed as soon as the child has it.
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HOLDSCAN_CONFIG": str(self.config),
                    **(env or {})}
        with open(self.log_dir / f"{name}.{self._n}.log", "wb") as log:
            return subprocess.Popen(argv, stdout=log, env=full_env, start_new_session=True,
                                    stderr=subprocess.STDOUT if stderr is None else stderr)

    def start_worker(self, concurrency: int = 1, name: str = "w",
                     env: dict[str, str] | None = None, log_level: str = "WARNING"
                     ) -> subprocess.Popen[bytes]:
        p = self._spawn([HOLDSCAN, "worker", "--config", str(self.config),
                         f"--concurrency={concurrency}", f"--hostname={name}{self._n}@%h",
                         f"--log-level={log_level}"], "worker", env)
        self.workers.append(p)
        return p

    def start_dispatcher(self, *args: str, env: dict[str, str] | None = None,
                         stderr: int | None = None) -> subprocess.Popen[bytes]:
        """stderr: a file descriptor for its stderr (e.g. a terminal's), instead of the log."""
        self.dispatcher = self._spawn([HOLDSCAN, "dispatch", "--config", str(self.config),
                                       *args], "dispatcher", env, stderr)
        return self.dispatcher

    def kill_dispatcher(self) -> None:
        if self.dispatcher and self.dispatcher.poll() is None:
            self.dispatcher.kill()
            self.dispatcher.wait(10)

    def stop_dispatcher(self, timeout: float = 30) -> int:
        assert self.dispatcher is not None
        if self.dispatcher.poll() is None:
            self.dispatcher.send_signal(signal.SIGTERM)
        return self.dispatcher.wait(timeout)

    def kill_worker(self, p: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        # The whole process group: the Celery main process and its pool children.
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        p.wait(15)

    def logs(self, name: str = "") -> str:
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.log_dir.glob(f"{name}*.log")))

    def close(self) -> None:
        if self.dispatcher:
            self.kill_dispatcher()
        for p in self.workers:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not reached after {timeout}s\n{self.logs()[-4000:]}")
            time.sleep(0.1)
