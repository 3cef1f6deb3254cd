"""docker-compose.yml brought up for real, under a project name of its own, with Debian's
docker-compose 1.29 (Compose v1 syntax and flags only: no --wait, no `docker compose`).

    project = ComposeProject(engine, ["docker-compose.yml", "docker-compose.test.yml"],
                             env={"REDIS_PASSWORD": ...}, extra_env={...}, profiles=["mailhost"])
    project.build()
    project.up(scale={"worker": 3})
    project.wait_healthy(timeout=180)       # every container, by its own healthcheck
    project.exec("dispatcher", "holdscan", "status")
    project.down(volumes=True)              # containers, network (and volumes) gone

The settings go into an env file of the project's own (like the .env a user writes); the
variables it names are removed from the environment docker-compose runs in, since the
shell's value would win over the file's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from holdscan.lab.docker import DockerEngine, DockerError


class ComposeError(DockerError):
    """A docker-compose command failed, or the stack did not turn healthy."""


def compose_cli() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        raise ComposeError("no docker-compose: install Debian's docker-compose "
                           "(scripts/bootstrap.sh does)")
    return path


class ComposeProject:
    def __init__(self, engine: DockerEngine, files: list[Path], name: str,
                 env: dict[str, str], extra_env: dict[str, str] | None = None,
                 profiles: list[str] | None = None, project_dir: Path | None = None) -> None:
        self.engine = engine
        self.cli = compose_cli()
        self.files = [Path(f) for f in files]
        self.name = name
        self.profiles = profiles or []
        self.project_dir = project_dir or self.files[0].parent
        self._dir = Path(tempfile.mkdtemp(prefix=f"holdscan-compose-{name}-"))
        self.env_file = self._dir / "env"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        os.chmod(self.env_file, 0o600)
        self._proc_env = {k: v for k, v in os.environ.items() if k not in env}
        self._proc_env.update(extra_env or {})

    # -- commands ------------------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        out = [self.cli, "--project-name", self.name, "--project-directory",
               str(self.project_dir), "--env-file", str(self.env_file)]
        for f in self.files:
            out += ["--file", str(f)]
        for p in self.profiles:
            out += ["--profile", p]
        return out + list(args)

    def run(self, *args: str, timeout: float = 600, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        try:
            p = subprocess.run(self.argv(*args), capture_output=True, text=True,
                               timeout=timeout, env=self._proc_env, cwd=self.project_dir)
        except subprocess.TimeoutExpired as e:
            raise ComposeError(f"docker-compose {' '.join(args)}: no end after "
                               f"{timeout:.0f}s") from e
        if check and p.returncode != 0:
            raise ComposeError(f"docker-compose {' '.join(args)} failed ({p.returncode}):\n"
                               f"{(p.stderr or p.stdout).strip()[-3000:]}")
        return p

    def build(self, timeout: float = 1800) -> None:
        self.run("build", timeout=timeout)

    def up(self, scale: dict[str, int] | None = None, services: list[str] | None = None,
           no_deps: bool = False, timeout: float = 600) -> None:
        args = ["up", "--detach", "--no-build", "--no-recreate"]
        if no_deps:
            args.append("--no-deps")
        for service, n in (scale or {}).items():
            args += ["--scale", f"{service}={n}"]
        self.run(*args, *(services or []), timeout=timeout)

    def down(self, volumes: bool = False, timeout: float = 300) -> None:
        self.run("down", "--remove-orphans", *(["--volumes"] if volumes else []),
                 "--timeout", "30", timeout=timeout)

    def exec(self, service: str, *cmd: str, index: int = 1, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.run("exec", "-T", "--index", str(index), service, *cmd, check=check,
                        timeout=timeout)

    def logs(self) -> str:
        p = self.run("logs", "--no-color", "--timestamps", check=False, timeout=120)
        return p.stdout + p.stderr

    # -- containers ----------------------------------------------------------------------

    def containers(self, service: str | None = None, running_only: bool = True
                   ) -> list[dict[str, str]]:
        """The project's containers: id, name, service, state, health ("none" without a
        healthcheck)."""
        filters = ["--filter", f"label=com.docker.compose.project={self.name}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = self.engine.run("ps", "--quiet", "--no-trunc", *([] if running_only else ["-a"]),
                              *filters).stdout.split()
        if not ids:
            return []
        info = json.loads(self.engine.run("inspect", *ids).stdout)
        out = []
        for c in info:
            labels = c["Config"]["Labels"]
            health = (c["State"].get("Health") or {}).get("Status", "none")
            out.append({"id": c["Id"], "hostname": c["Config"]["Hostname"],
                        "name": c["Name"].lstrip("/"),
                        "service": labels.get("com.docker.compose.service", ""),
                        "number": labels.get("com.docker.compose.container-number", ""),
                        "state": c["State"]["Status"], "health": health})
        return sorted(out, key=lambda c: (c["service"], int(c["number"] or 0)))

    def wait_healthy(self, expected: dict[str, int], timeout: float = 300) -> float:
        """Wait until exactly `expected` containers run per service, each healthy by its
        own healthcheck; returns the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            cs = self.containers()
            counts: dict[str, int] = {}
            for c in cs:
                if c["health"] == "healthy":
                    counts[c["service"]] = counts.get(c["service"], 0) + 1
            running = {s: sum(1 for c in cs if c["service"] == s) for s in expected}
            if counts == expected and running == expected and \
                    len(cs) == sum(expected.values()):
                return time.monotonic() - started
            if time.monotonic() > deadline:
                state = ", ".join(f"{c['name']} {c['state']}/{c['health']}" for c in cs)
                raise ComposeError(f"not healthy after {timeout:.0f}s: want {expected}, "
                                   f"have {state or 'no containers'}")
            time.sleep(1)

    def port(self, service: str, container_port: int) -> int:
        out = self.run("port", service, str(container_port)).stdout.strip()
        return int(out.rsplit(":", 1)[1])

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
