"""A real clamd for the tests, the demo and the benchmarks, with a signature
database we generate.

No signature download is possible here (and tests must not depend on one), so
the database is a single .ndb signature matching the 68-byte EICAR test
string. clamd reports it as "Eicar-Test-Signature.UNOFFICIAL" (ClamAV appends
".UNOFFICIAL" to signatures that do not come from its own databases).

The EICAR string is built at run time from two halves, so no file in the
repository is itself detected by a virus scanner.

    with ClamdServer(stream_max_length="2M") as clamd:
        clamd.addresses        # ["unix:/tmp/.../clamd.sock", "tcp:127.0.0.1:PORT"]
        clamd.stop(); clamd.start()     # same socket path and port again

debian=True starts it with the settings Debian ships (/etc/clamav/clamd.conf),
only the paths of the private instance replaced: its temporary files then go
to /tmp, as on a stock Debian host, not to tmpfs as in the default lab set-up.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from holdscan.lab.server import LabServer, ServerError, free_port

CLAMD = "/usr/sbin/clamd"
DEBIAN_CONF = Path("/etc/clamav/clamd.conf")
# What a private instance sets itself; the rest of Debian's file is kept as it is.
_PRIVATE = frozenset({"localsocket", "localsocketgroup", "localsocketmode", "tcpsocket",
                      "tcpaddr", "user", "databasedirectory", "logfile", "logsyslog",
                      "foreground", "pidfile", "streammaxlength", "temporarydirectory",
                      "logtime"})

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE = "Eicar-Test-Signature"
DETECTED_AS = f"{SIGNATURE}.UNOFFICIAL"


def available() -> bool:
    return os.access(CLAMD, os.X_OK)


class ClamdError(ServerError):
    """clamd would not start; the message carries the end of its log."""


class ClamdServer(LabServer):
    name = "clamd"
    log_name = "clamd.log"
    start_timeout = 30.0
    error = ClamdError

    def __init__(self, stream_max_length: str = "25M", tcp: bool = True,
                 directory: str | None = None, extra_config: str = "",
                 debian: bool = False) -> None:
        # clamd writes every INSTREAM to a file in its TemporaryDirectory before it scans it;
        # on tmpfs that costs a third of the CPU it costs on disk (measured: 0.42 against
        # 1.27 ms per 5 KB message), so the lab keeps clamd's directory in /dev/shm.
        super().__init__(directory, port=free_port() if tcp else 0,
                         temp_parent="/dev/shm" if os.path.isdir("/dev/shm") else None)
        # Like Debian's /var/run/clamav: scanners running as other users (a dispatcher's
        # local pool runs as Postfix's mail_owner) must reach the socket.
        os.chmod(self.dir, 0o755)
        self.socket_path = str(self.dir / "clamd.sock")
        self.stream_max_length = stream_max_length
        self.extra_config = extra_config
        self.debian = debian
        self._write_files()

    @property
    def addresses(self) -> list[str]:
        out = [f"unix:{self.socket_path}"]
        if self.port:
            out.append(f"tcp:127.0.0.1:{self.port}")
        return out

    def _write_files(self) -> None:
        db = self.dir / "db"
        db.mkdir(exist_ok=True)
        (db / "holdscan-test.ndb").write_text(f"{SIGNATURE}:0:*:{EICAR.hex()}\n")
        tcp = f"TCPSocket {self.port}\nTCPAddr 127.0.0.1\n" if self.port else ""
        # Debian's clamd.conf leaves TemporaryDirectory unset: clamd's default, /tmp.
        temporary = "" if self.debian else f"TemporaryDirectory {self.dir}\n"
        (self.dir / "clamd.conf").write_text(
            f"{debian_settings() if self.debian else ''}"
            f"DatabaseDirectory {db}\n"
            f"LocalSocket {self.socket_path}\n"
            "LocalSocketMode 666\n"
            f"{tcp}"
            "Foreground yes\n"
            f"StreamMaxLength {self.stream_max_length}\n"
            f"{temporary}"
            f"LogFile {self.log_path}\n"
            "LogTime yes\n"
            f"{self.extra_config}")

    @property
    def temporary_directory(self) -> str:
        return "/tmp" if self.debian else str(self.dir)

    def command(self) -> list[str]:
        return [CLAMD, "--config-file", str(self.dir / "clamd.conf")]

    def ping(self) -> bool:
        """PING -> PONG over every socket it should listen on."""
        targets: list[tuple[int, str | tuple[str, int]]] = [(socket.AF_UNIX, self.socket_path)]
        if self.port:
            targets.append((socket.AF_INET, ("127.0.0.1", self.port)))
        for family, target in targets:
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect(target)
                    s.sendall(b"zPING\0")
                    if s.recv(16) != b"PONG\0":
                        return False
            except OSError:
                return False
        return True

    def after_stop(self) -> None:
        # clamd removes its socket on a clean exit; make sure, so that a client
        # sees "no such file" rather than a socket nobody listens on.
        Path(self.socket_path).unlink(missing_ok=True)


def debian_settings() -> str:
    """Debian's clamd.conf without the settings a private instance makes its own."""
    if not DEBIAN_CONF.exists():
        raise ClamdError(f"{DEBIAN_CONF} is missing: install clamav-daemon "
                         "(apt-get install clamav-daemon)")
    keep = []
    for line in DEBIAN_CONF.read_text().splitlines():
        words = line.split()
        if words and not words[0].startswith("#") and words[0].lower() not in _PRIVATE:
            keep.append(line)
    return "\n".join(keep) + "\n"
