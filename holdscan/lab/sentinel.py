"""Redis Sentinel on loopback: a master, its replicas and three Sentinels that watch
them, each a process of its own on a free port, with short timeouts so that a failover
takes seconds.

    with SentinelGroup() as group:          # all up, replicas in sync, Sentinels agreed
        group.url                           # sentinel://:PW@127.0.0.1:P1/0;sentinel://...
        old = group.kill_master()           # SIGKILL, as a crash
        group.wait_failover(old)            # a replica is the master now
"""

from __future__ import annotations

import secrets
import time
from types import TracebackType
from typing import Self

import redis as redis_py

from holdscan.lab.redis import RedisServer
from holdscan.lab.server import LabServer, ServerError


class SentinelServer(LabServer):
    """One redis-sentinel watching the master on `master_port`."""

    name = "sentinel"
    log_name = "sentinel.log"
    start_timeout = 10.0

    def __init__(self, master_name: str, master_port: int, redis_password: str,
                 password: str, down_after_ms: int = 1000, failover_timeout_ms: int = 3000
                 ) -> None:
        super().__init__()
        self.master_name = master_name
        self.master_port = master_port
        self.redis_password = redis_password
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def command(self) -> list[str]:
        # Sentinel rewrites its configuration file as it learns: it must be its own.
        conf = self.dir / "sentinel.conf"
        m = self.master_name
        conf.write_text("\n".join([
            f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}",
            f"logfile {self.log_path}",
            # The other Sentinels are asked with this password too (redis.io/topics/sentinel).
            f"requirepass {self.password}",
            f"sentinel monitor {m} 127.0.0.1 {self.master_port} 2",
            f"sentinel auth-pass {m} {self.redis_password}",
            f"sentinel down-after-milliseconds {m} {self.down_after_ms}",
            f"sentinel failover-timeout {m} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {m} 2", ""]))
        return ["redis-sentinel", str(conf)]

    def client(self) -> redis_py.Redis:
        return redis_py.Redis(host="127.0.0.1", port=self.port, password=self.password,
                              socket_connect_timeout=0.5, socket_timeout=2)

    def ping(self) -> bool:
        c = self.client()
        try:
            return bool(c.ping())
        except redis_py.RedisError:
            return False
        finally:
            c.close()

    def master_state(self) -> dict[str, object]:
        c = self.client()
        try:
            return dict(c.sentinel_master(self.master_name))
        finally:
            c.close()

    def master_port_now(self) -> int | None:
        c = self.client()
        try:
            addr = c.sentinel_get_master_addr_by_name(self.master_name)
            return int(addr[1]) if addr else None
        except redis_py.RedisError:
            return None
        finally:
            c.close()


class SentinelGroupError(ServerError):
    pass


class SentinelGroup:
    """A master, `replicas` replicas and three Sentinels (quorum 2)."""

    def __init__(self, replicas: int = 2, master_name: str = "holdscan",
                 down_after_ms: int = 1000, failover_timeout_ms: int = 3000) -> None:
        self.master_name = master_name
        self.password = secrets.token_hex(8)           # the Redis servers'
        self.sentinel_password = secrets.token_hex(8)  # the Sentinels'
        self.servers: list[RedisServer] = [RedisServer(password=self.password)]
        self.servers += [RedisServer(password=self.password, replica_of=self.servers[0].port)
                         for _ in range(replicas)]
        self.sentinels = [SentinelServer(master_name, self.servers[0].port, self.password,
                                         self.sentinel_password, down_after_ms,
                                         failover_timeout_ms) for _ in range(3)]

    @property
    def url(self) -> str:
        """The broker URL: the Redis password in the first address, as Celery takes it."""
        ports = [s.port for s in self.sentinels]
        return ";".join([f"sentinel://:{self.password}@127.0.0.1:{ports[0]}/0"] +
                        [f"sentinel://127.0.0.1:{p}" for p in ports[1:]])

    def start(self, timeout: float = 30.0) -> Self:
        try:
            for server in self.servers + self.sentinels:
                server.start()
            self._wait(self._settled, timeout, "replicas in sync and Sentinels agreed")
        except BaseException:
            self.close()
            raise
        return self

    def _settled(self) -> bool:
        master = self.servers[0].client()
        try:
            info = master.info("replication")
        except redis_py.RedisError:
            return False
        finally:
            master.close()
        online = sum(1 for k, v in info.items() if k.startswith("slave")
                     and isinstance(v, dict) and v.get("state") == "online")
        if online < len(self.servers) - 1:
            return False
        # Each Sentinel must know the replicas and the other Sentinels (from their hello
        # messages), or a failover would wait for them first.
        for s in self.sentinels:
            try:
                state = s.master_state()
            except redis_py.RedisError:
                return False
            if int(str(state.get("num-slaves", 0))) < len(self.servers) - 1 or \
                    int(str(state.get("num-other-sentinels", 0))) < len(self.sentinels) - 1:
                return False
        return True

    def master_port(self) -> int | None:
        """The master's port, as the first Sentinel that answers says."""
        for s in self.sentinels:
            if s.proc is not None:
                port = s.master_port_now()
                if port is not None:
                    return port
        return None

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def kill_master(self) -> int:
        """SIGKILL the current master, as a crash; its port."""
        port = self.master_port()
        assert port is not None, "no Sentinel names a master"
        server = self.server(port)
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait()
        server.stop()
        return port

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Until the Sentinels name another master and it says it is one; its port."""
        def promoted() -> bool:
            port = self.master_port()
            if port is None or port == old_port:
                return False
            c = self.server(port).client()
            try:
                return c.info("replication").get("role") == "master"
            except redis_py.RedisError:
                return False
            finally:
                c.close()
        self._wait(promoted, timeout, "a replica promoted by Sentinel")
        port = self.master_port()
        assert port is not None
        return port

    def _wait(self, predicate: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                logs = "\n".join(f"-- {s.name} {s.port}:\n{s.log_tail(8)}"
                                 for s in self.servers + self.sentinels)
                raise SentinelGroupError(f"{what}: not within {timeout:g}s\n{logs}")
            time.sleep(0.1)

    def close(self) -> None:
        for server in self.sentinels + self.servers:
            server.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
