"""A private, real Postfix instance for tests, benchmarks and the demo.

It lives in a temporary directory with its own config, queue and data
directories, listens on a free loopback port, holds every message it receives
by SMTP (header_checks `/^Received:/ HOLD`) and relays to a sink on another
loopback port. Postfix insists that a non-default config directory be listed
in the default instance's `alternate_config_directories`; we add ours there
for the instance's lifetime and take it out again.

hold=True holds everything cleanup sees, sendmail submissions included;
hold="smtpd" puts the HOLD rule on the public smtpd's own cleanup service
only, as deploy/postfix/*.snippet set it up, so that mail submitted with
sendmail (holdscan's notices) is not held; hold=False holds nothing.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from holdscan.lab.server import free_port

DEFAULT_MAIN_CF = Path("/etc/postfix/main.cf")
_LOCK = Path("/tmp/.holdscan-postfix-alternates.lock")


def run(*argv: str, check: bool = True, input: bytes | None = None
        ) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, input=input.decode() if input else None,
                       text=True, check=False)
    if check and p.returncode != 0:
        why = p.stderr.strip() or p.stdout.strip()
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {why}")
    return p


@contextmanager
def _alternates_lock() -> Iterator[None]:
    with open(_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _edit_alternates(add: str | None = None, remove: str | None = None) -> None:
    """Add or remove a directory in the default main.cf's alternate_config_directories."""
    with _alternates_lock():
        if not DEFAULT_MAIN_CF.exists():
            # A Postfix installed with "No configuration" has no main.cf; postconf needs one.
            DEFAULT_MAIN_CF.write_text("compatibility_level = 3.6\n")
        current = run("postconf", "-h", "alternate_config_directories").stdout.split()
        current = [d.rstrip(",") for d in current if d.rstrip(",")]
        if add and add not in current:
            current.append(add)
        if remove:
            current = [d for d in current if d != remove]
        run("postconf", "-e", f"alternate_config_directories = {' '.join(current)}")
        # Postfix commands wait (about 2 s, each) until main.cf looks settled, i.e. is not
        # brand new; postconf -e replaced it by an atomic rename, so it is settled now.
        past = time.time() - 5
        os.utime(DEFAULT_MAIN_CF, (past, past))


class PostfixInstance:
    """A private Postfix. Use as a context manager, or call start() and stop()."""

    def __init__(
        self,
        sink_port: int,
        *,
        base: str | os.PathLike[str] | None = None,
        hold: bool | str = True,
        long_queue_ids: bool = False,
        hash_queue_names: str | None = None,
        hash_queue_depth: int | None = None,
        extra_main_cf: dict[str, str] | None = None,
    ) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="holdscan-postfix-", dir=base))
        # Postfix daemons run as `postfix` and must traverse every parent directory.
        os.chmod(self.base, 0o755)
        self.config_dir = self.base / "etc"
        self.queue_dir = self.base / "spool"
        self.data_dir = self.base / "data"
        self.maillog = self.base / "maillog"
        self.port = free_port()
        self.sink_port = sink_port
        self.hold = hold
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.base),
            "syslog_name": f"postfix-holdscan-{self.port}",
            "myhostname": "mx.holdscan.test",
            "mydomain": "holdscan.test",
            "myorigin": "holdscan.test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "relayhost": f"[127.0.0.1]:{sink_port}",
            "smtp_dns_support_level": "disabled",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtp_line_length_limit": "0",
            "smtputf8_enable": "yes",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "message_size_limit": "52428800",
            "default_destination_recipient_limit": "1000",
            "smtp_destination_concurrency_limit": "20",
            "default_process_limit": "100",
            "queue_run_delay": "5s",
            "minimal_backoff_time": "5s",
            "maximal_backoff_time": "10s",
            "header_checks": f"regexp:{self.config_dir}/header_checks",
            "enable_long_queue_ids": "yes" if long_queue_ids else "no",
        }
        if hash_queue_names is not None:
            settings["hash_queue_names"] = hash_queue_names
        if hash_queue_depth is not None:
            settings["hash_queue_depth"] = str(hash_queue_depth)
        settings.update(extra_main_cf or {})
        self.settings = settings
        self._started = False

    # -- life cycle ---------------------------------------------------------------
    def _write_config(self) -> None:
        self.config_dir.mkdir()
        self.queue_dir.mkdir()
        self.data_dir.mkdir()
        shutil.chown(self.data_dir, "postfix", "postfix")
        (self.config_dir / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in self.settings.items()))
        hold_all = self.hold is True
        (self.config_dir / "header_checks").write_text("/^Received:/ HOLD\n" if hold_all else "")
        if self.hold == "smtpd":
            (self.config_dir / "holdscan_hold_checks").write_text("/^Received:/ HOLD\n")
        lines = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            fields = line.split()
            if fields and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
                smtpd = fields[0] == "smtp" and fields[1] == "inet"
                if smtpd:
                    fields[0] = f"127.0.0.1:{self.port}"
                # No chroot: the private queue directory has no copy of /etc.
                fields[4] = "n"
                line = " ".join(fields)
                if smtpd and self.hold == "smtpd":
                    line += "\n  -o cleanup_service_name=holdscan-cleanup"
            lines.append(line)
        if self.hold == "smtpd":
            lines += ["holdscan-cleanup unix n - n - 0 cleanup",
                      f"  -o header_checks=regexp:{self.config_dir}/holdscan_hold_checks"]
        (self.config_dir / "master.cf").write_text("\n".join(lines) + "\n")

    def start(self) -> PostfixInstance:
        self._write_config()
        _edit_alternates(add=str(self.config_dir))
        try:
            # `postfix start` checks the set-up (and creates the queue directories) itself.
            self.postfix("start")
        except RuntimeError as e:
            log = self.log()[-2000:]
            self.stop()
            raise RuntimeError(f"{e}\n{log}") from None
        self._started = True
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if s.recv(100).startswith(b"220"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"Postfix did not answer on port {self.port}: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self._started:
            self.postfix("stop", check=False)
            # master exits asynchronously; wait for its pid file lock to go.
            deadline = time.monotonic() + 10
            pid_file = self.queue_dir / "pid" / "master.pid"
            while time.monotonic() < deadline and pid_file.exists():
                status = run("postfix", "-c", str(self.config_dir), "status", check=False)
                if status.returncode != 0:
                    break
                time.sleep(0.1)
            self._started = False
        _edit_alternates(remove=str(self.config_dir))
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- commands -----------------------------------------------------------------
    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("postfix", "-c", str(self.config_dir), *args, check=check)

    def postconf(self, name: str) -> str:
        return run("postconf", "-c", str(self.config_dir), "-h", name).stdout.strip()

    def postcat(self, *args: str) -> str:
        return run("postcat", "-c", str(self.config_dir), *args).stdout

    def postsuper(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("postsuper", "-c", str(self.config_dir), *args, check=check)

    def kick(self) -> None:
        """Ask qmgr to scan incoming now: `postkick public qmgr I`.

        postkick writes the request and then, in a second write, a NUL byte. qmgr reads
        what has arrived, acts on it and closes the connection at once; when that close
        comes before the NUL, the NUL's write raises SIGPIPE, and postkick, which leaves
        the signal at its default, dies of it (about one call in three on a 2-core machine)
        although qmgr got the request. Started with SIGPIPE ignored (`env
        --ignore-signal=PIPE`: Python's subprocess would otherwise reset it to the default),
        the late write fails with EPIPE, postkick waits for qmgr's close as it means to and
        exits 0; any other exit status is a real failure (qmgr not there)."""
        run("env", "--ignore-signal=PIPE", "postkick", "-c", str(self.config_dir), "public",
            "qmgr", "I")

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- the queue ------------------------------------------------------------------
    def queue_files(self, queue: str) -> list[Path]:
        """Every regular file under a queue directory (hashed or not)."""
        root = self.queue_dir / queue
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

    def wait_held(self, count: int, timeout: float = 30) -> list[Path]:
        """Wait until `count` ready (mode 0700) files are in hold."""
        deadline = time.monotonic() + timeout
        while True:
            files = [p for p in self.queue_files("hold") if (p.stat().st_mode & 0o700) == 0o700]
            if len(files) >= count:
                return files
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(files)} of {count} messages held after {timeout}s")
            time.sleep(0.05)

    def queue_id_of(self, path: Path) -> str:
        return path.name

    def wait_empty(self, queues: tuple[str, ...] = ("incoming", "active", "deferred", "hold"),
                   timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while any(self.queue_files(q) for q in queues):
            if time.monotonic() > deadline:
                left = {q: [p.name for p in self.queue_files(q)] for q in queues}
                raise TimeoutError(f"queues not empty after {timeout}s: {left}")
            time.sleep(0.1)

    def delivered_ids(self) -> list[str]:
        """Queue IDs that Postfix logged as delivered (status=sent)."""
        return re.findall(r" ([0-9A-Za-z]+): to=<[^>]*>.*status=sent", self.log())
