"""The whole compose stack for tests/cluster/: docker-compose.yml with
docker-compose.test.yml, the `mailhost` profile, on a Docker engine of this machine.

    stack = ComposeStack(artifacts_dir)
    stack.start(workers=3)      # engine, base image, build, up, every container healthy
    stack.smtp_port, stack.flower_url, stack.metrics_port, stack.sink.message_ids()
    stack.close()               # logs saved, down --volumes, engine stopped if started here

Ports are free loopback ports chosen here; the project name is unique to the run, so its
network and volumes are its own. Released mail reaches the sink container, which writes
each message to a file in `sink.dir` on this host.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from holdscan.lab.baseimage import ensure_base_image
from holdscan.lab.compose import ComposeProject
from holdscan.lab.docker import DockerEngine
from holdscan.lab.server import free_port

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "docker-compose.yml", REPO / "docker-compose.test.yml"]
# Fixed, not per run: the next run finds the images and their layers in Docker's cache.
TAG = "compose-test"
# What `--profile mailhost up` starts (not the ha profile's replica and Sentinels).
SERVICES = ("redis", "clamd", "worker", "flower", "postfix", "dispatcher", "web", "sink")
FLOWER_USER = "admin"

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


class SinkDir:
    """The files smtp-sink writes, one per message it accepted."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def message_ids(self) -> Counter[str]:
        ids: Counter[str] = Counter()
        for path in self.dir.glob("mail-*"):
            m = _MESSAGE_ID.search(path.read_bytes())
            ids[m.group(1).decode() if m else f"(no Message-ID in {path.name})"] += 1
        return ids

    def wait_for(self, wanted: set[str], timeout: float) -> Counter[str]:
        deadline = time.monotonic() + timeout
        while True:
            ids = self.message_ids()
            if wanted <= set(ids):
                return ids
            if time.monotonic() > deadline:
                missing = sorted(wanted - set(ids))
                raise TimeoutError(f"{len(missing)} of {len(wanted)} messages not at the sink "
                                   f"after {timeout:.0f}s, e.g. {missing[:5]}")
            time.sleep(0.5)


class ComposeStack:
    def __init__(self, artifacts: Path) -> None:
        self.artifacts = artifacts
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.name = f"holdscantest{os.getpid()}"
        self.smtp_port = free_port()
        self.flower_port = free_port()
        self.metrics_port = free_port()
        self.web_port = free_port()
        self.flower_password = secrets.token_hex(12)
        self.redis_password = secrets.token_hex(16)
        self._sink_dir = Path(tempfile.mkdtemp(prefix="holdscan-compose-sink-"))
        # smtp-sink writes as the container's postfix user.
        os.chmod(self._sink_dir, 0o777)
        self.sink = SinkDir(self._sink_dir)
        self.engine = DockerEngine(log_dir=artifacts / "dockerd")
        self.project: ComposeProject | None = None
        self.timings: dict[str, float] = {}

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.flower_port}"

    def env(self) -> dict[str, str]:
        """What a user puts into .env, for this run."""
        return {
            "REDIS_PASSWORD": self.redis_password, "REDIS_MAXMEMORY": "256mb",
            "WORKER_CONCURRENCY": "1", "HOLDSCAN_TAG": TAG,
            "FLOWER_USER": FLOWER_USER, "FLOWER_PASSWORD": self.flower_password,
            "FLOWER_BIND": "127.0.0.1", "FLOWER_PORT": str(self.flower_port),
            "SMTP_BIND": "127.0.0.1", "SMTP_PORT": str(self.smtp_port),
            "DISPATCHER_METRICS_BIND": "127.0.0.1",
            "DISPATCHER_METRICS_PORT": str(self.metrics_port),
            "WEB_BIND": "127.0.0.1", "WEB_PORT": str(self.web_port),
            "POSTFIX_MYHOSTNAME": "mail.holdscan.test",
            "POSTFIX_RELAYHOST": "[sink]:25",
            # Mail sent to the published port arrives from the compose network's gateway,
            # in one of Docker's default address pools.
            "POSTFIX_MYNETWORKS": "127.0.0.0/8 172.16.0.0/12 192.168.0.0/16",
        }

    def start(self, workers: int) -> None:
        t = time.monotonic()
        self.engine.start()
        self.timings["engine"] = time.monotonic() - t
        t = time.monotonic()
        base = ensure_base_image(self.engine, log=self.artifacts / "base-image.log")
        self.timings["base image"] = time.monotonic() - t
        self.project = ComposeProject(
            self.engine, FILES, self.name, self.env(), profiles=["mailhost"],
            extra_env={"HOLDSCAN_TEST_BASE": base, "HOLDSCAN_TEST_SINK_DIR": str(self._sink_dir)},
            project_dir=REPO)
        t = time.monotonic()
        self.project.build()
        self.timings["build"] = time.monotonic() - t
        t = time.monotonic()
        self.up(workers)
        self.timings["up until healthy"] = time.monotonic() - t

    def expected(self, workers: int) -> dict[str, int]:
        return {s: (workers if s == "worker" else 1) for s in SERVICES}

    def up(self, workers: int, timeout: float = 240) -> None:
        assert self.project is not None
        self.project.up(scale={"worker": workers})
        self.project.wait_healthy(self.expected(workers), timeout=timeout)

    def close(self) -> None:
        try:
            if self.project is not None:
                (self.artifacts / "compose.log").write_text(self.project.logs())
                self.project.down(volumes=True)
                self.project.close()
        finally:
            try:
                self.engine.close()
            finally:
                shutil.rmtree(self._sink_dir, ignore_errors=True)
