"""A private redis-server on a free loopback port, in a temporary directory."""

from __future__ import annotations

import redis as redis_py

from holdscan.lab.server import LabServer


class RedisServer(LabServer):
    name = "redis"
    log_name = "redis.log"
    start_timeout = 10.0

    def __init__(self, password: str | None = None, port: int | None = None,
                 replica_of: int | None = None) -> None:
        """replica_of: the port of a master on loopback this one replicates (with the same
        password)."""
        super().__init__(port=port)
        self.password = password
        self.replica_of = replica_of

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--maxmemory-policy", "noeviction", "--logfile", str(self.log_path)]
        if self.password:
            # masterauth too: a master that Sentinel demotes replicates from the new one.
            argv += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replica_of:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return argv

    def ping(self) -> bool:
        client = redis_py.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis_py.RedisError:
            return False
        finally:
            client.close()

    def restart(self) -> None:
        """Stop and start on the same port: everything in memory is lost, as in a crash."""
        self.stop()
        self.start()

    def client(self) -> redis_py.Redis:
        return redis_py.Redis.from_url(self.url)
