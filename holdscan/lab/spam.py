"""Real spam daemons for the tests: SpamAssassin's spamd and rspamd, from Debian's packages.

Each runs from a temporary directory, on a free loopback port, with no network
tests (no DNS, no blocklists, no rule updates: the tests must not depend on the
outside world, and a DNS lookup that times out would make every scan slow).
Both know the GTUBE test string, which scores as spam without any rules
being downloaded.

    with SpamdServer() as spamd:        # about 1-2 s to start
        spamd.url                       # "spamd://127.0.0.1:PORT"
        spamd.socket_url                # "spamd:///tmp/.../spamd.sock"
        spamd.stop(); spamd.start()     # same port and socket again

    with RspamdServer() as rspamd:      # about 1-2 s to start
        rspamd.url                      # "rspamd://127.0.0.1:PORT"

GTUBE is built at run time from two halves, so that no file in the
repository is itself scored as spam (by a mail filter reading a patch, say).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import time
import urllib.request
from pathlib import Path

from holdscan.lab.server import LabServer, ServerError, port_open

SPAMD = "/usr/sbin/spamd"
SA_RULES = "/usr/share/spamassassin"        # the rules the Debian package ships
SA_SITE = "/etc/spamassassin"               # its .pre files: which plugins load
RSPAMD = "/usr/bin/rspamd"
RSPAMD_CONF = "/etc/rspamd"

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-" + b"TEST-EMAIL*C.34X"

# When the tests run as root, the daemons' workers run as this user (spamd and
# rspamd both refuse, or complain, to scan mail as root).
RUN_AS = "nobody"


def spamd_available() -> bool:
    return os.access(SPAMD, os.X_OK) and os.path.isdir(SA_RULES)


def rspamd_available() -> bool:
    return os.access(RSPAMD, os.X_OK) and os.path.isdir(RSPAMD_CONF)


class SpamDaemonError(ServerError):
    """The daemon would not start; the message carries the end of its log."""


class _Daemon(LabServer):
    """A spam daemon: its directory is readable by RUN_AS; the same port again after a
    restart, and "stopped" means nobody listens there any more."""

    start_timeout = 60.0
    stop_timeout = 15.0     # both daemons take their worker processes down on SIGTERM
    error = SpamDaemonError
    _LOG_LINES = 15

    def __init__(self, directory: str | None = None) -> None:
        super().__init__(directory)
        # The daemon's workers run as RUN_AS and read their configuration here.
        os.chmod(self.dir, 0o755)

    def after_stop(self) -> None:
        # A worker that outlives its parent for a moment would still answer;
        # "stopped" must mean nobody listens.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and port_open(self.port, timeout=0.5):
            time.sleep(0.05)

    def _give_to_run_user(self, *paths: Path) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            for p in paths:
                os.chown(p, user.pw_uid, user.pw_gid)


class SpamdServer(_Daemon):
    """SpamAssassin's spamd with the Debian package's rules and no network tests."""

    name = "spamd"
    log_name = "spamd.log"

    def __init__(self, directory: str | None = None, required_score: float = 5.0) -> None:
        super().__init__(directory)
        self.socket_path = str(self.dir / "spamd.sock")
        self.required_score = required_score
        self._write_files()

    @property
    def url(self) -> str:
        return f"spamd://127.0.0.1:{self.port}"

    @property
    def socket_url(self) -> str:
        return f"spamd://{self.socket_path}"

    def _write_files(self) -> None:
        site = self.dir / "site"
        site.mkdir(exist_ok=True)
        # The .pre files load the plugins (v320.pre loads Check, without which
        # spamd cannot scan at all); local.cf switches off what needs a network.
        for pre in sorted(Path(SA_SITE).glob("*.pre")):
            shutil.copy(pre, site / pre.name)
        (site / "local.cf").write_text(
            f"required_score {self.required_score}\n"
            "dns_available no\n"
            "skip_rbl_checks 1\n"
            "use_bayes 0\n"
            "bayes_auto_learn 0\n")
        for p in [site, *site.iterdir()]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)

    def command(self) -> list[str]:
        cmd = [SPAMD, "--local", "--nouser-config",
               f"--configpath={SA_RULES}", f"--siteconfigpath={self.dir / 'site'}",
               f"--listen=127.0.0.1:{self.port}", f"--listen={self.socket_path}",
               "--socketmode=0666", f"--syslog={self.log_path}",
               "--max-children=2", "--min-children=1"]
        if os.geteuid() == 0:
            cmd.append(f"--username={RUN_AS}")
        return cmd

    def ping(self) -> bool:
        """PING -> PONG over the TCP port and the Unix socket."""
        targets: list[tuple[int, str | tuple[str, int]]] = [
            (socket.AF_INET, ("127.0.0.1", self.port)), (socket.AF_UNIX, self.socket_path)]
        for family, target in targets:
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect(target)
                    s.sendall(b"PING SPAMC/1.5\r\n\r\n")
                    s.shutdown(socket.SHUT_WR)
                    if b"PONG" not in s.recv(64):
                        return False
            except OSError:
                return False
        return True

    def after_stop(self) -> None:
        super().after_stop()
        # So that a client sees "no such file" rather than a socket nobody listens on.
        Path(self.socket_path).unlink(missing_ok=True)


class RspamdServer(_Daemon):
    """rspamd's normal worker only (no controller, proxy or fuzzy storage), no network."""

    name = "rspamd"
    log_name = "rspamd.log"

    def __init__(self, directory: str | None = None) -> None:
        super().__init__(directory)
        self._write_files()

    @property
    def url(self) -> str:
        return f"rspamd://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/checkv2"

    def _write_files(self) -> None:
        for sub in ("db", "run"):
            (self.dir / sub).mkdir(exist_ok=True)
        # Compiling the full public-suffix list takes rspamd about 12 s at every
        # start in a fresh directory; the TLDs the tests' mail uses are enough.
        (self.dir / "tld.dat").write_text("com\nnet\norg\ntest\nexample\ninvalid\nlocalhost\n")
        # Our own top-level file, not /etc/rspamd/rspamd.conf: it would bind the
        # standard ports and read the host's local.d. The rules come from CONFDIR
        # (/etc/rspamd) as in production. fuzzy_check is left out of `filters`: it
        # resolves rspamd.com's fuzzy servers when it loads. DNS goes to a port
        # where nothing answers, so network rules fail at once instead of waiting.
        (self.dir / "rspamd.conf").write_text(f"""\
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    filters = "chartable,dkim,regexp";
    cache_file = "$DBDIR/symbols.cache";
    dynamic_conf = "$DBDIR/rspamd_dynamic";
    history_file = "$DBDIR/rspamd.history";
    control_socket = "$DBDIR/rspamd.sock mode=0600";
    hs_cache_dir = "$DBDIR/";
    tempdir = "$DBDIR";
    url_tld = "$LOCAL_CONFDIR/tld.dat";
    explicit_modules = ["settings", "bayes_expiry"];
    allow_raw_input = true;
    task_timeout = 8s;
    mime = true;
    lua = "$RULESDIR/rspamd.lua";
    dns {{
        nameserver = ["127.0.0.1:9"];
        timeout = 0.1s;
        retransmits = 1;
    }}
}}
logging {{
    type = "file";
    filename = "$LOGDIR/{self.log_name}";
    level = "info";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{self.port}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}
""")
        self._give_to_run_user(self.dir / "db", self.dir / "run", self.dir)

    def command(self) -> list[str]:
        cmd = [RSPAMD, "--no-fork", "--config", str(self.dir / "rspamd.conf"),
               "--var", f"LOCAL_CONFDIR={self.dir}", "--var", f"DBDIR={self.dir / 'db'}",
               "--var", f"RUNDIR={self.dir / 'run'}", "--var", f"LOGDIR={self.dir}"]
        if os.geteuid() == 0:
            group = grp.getgrgid(pwd.getpwnam(RUN_AS).pw_gid).gr_name
            cmd += ["--user", RUN_AS, "--group", group]
        return cmd

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=2) as r:
                return bool(r.read(16).strip() == b"pong")
        except OSError:
            return False
