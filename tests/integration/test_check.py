"""`holdscan check` against real parts: a private Postfix configured from the
deploy snippets, redis-server (with and without a password) and clamd.

A correct set-up prints only "ok" lines and exits 0; each broken set-up prints
the one FAIL line that names the problem and the fix, exits 1, and never a
traceback.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from holdscan.lab.clamd import ClamdServer
from holdscan.lab.postfix import free_port, run
from holdscan.lab.redis import RedisServer
from holdscan.lab.sink import Sink
from tests.support.snippet_postfix import SnippetPostfix

pytestmark = [pytest.mark.postfix, pytest.mark.redis, pytest.mark.clamd]

REPO = Path(__file__).resolve().parents[2]
@dataclass
class Parts:
    postfix: SnippetPostfix
    redis: RedisServer
    redis_with_password: RedisServer
    clamd: ClamdServer
    tmp: Path

    def config(self, broker: str | None = None, clamd: list[str] | None = None,
               extra: str = "", postfix_config: str | None = None) -> Path:
        broker = broker if broker is not None else self.redis.url
        clamd = clamd if clamd is not None else self.clamd.addresses
        addresses = ", ".join(f'"{a}"' for a in clamd)
        path = Path(tempfile.mkstemp(suffix=".toml", dir=self.tmp)[1])
        path.write_text(
            f'[postfix]\nconfig_directory = "{postfix_config or self.postfix.config_dir}"\n'
            f'[broker]\nurl = "{broker}"\n{extra}\n'
            f"[scanners.clamav]\nenabled = true\naddresses = [{addresses}]\n")
        return path


@pytest.fixture(scope="module")
def parts() -> Iterator[Parts]:
    tmp = Path(tempfile.mkdtemp(prefix="holdscan-check-"))
    started: list[Any] = []
    try:
        sink = Sink(free_port(), tmp / "sink").start()
        started.append(sink)
        pf = SnippetPostfix(sink.port)
        pf.start()
        started.append(pf)
        r1 = RedisServer().start()
        started.append(r1)
        r2 = RedisServer(password="s3cret-pw").start()
        started.append(r2)
        clamd = ClamdServer().start()
        started.append(clamd)
        yield Parts(pf, r1, r2, clamd, tmp)
    finally:
        for part in reversed(started):
            getattr(part, "close", part.stop)()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Outcome:
    code: int
    lines: list[str]
    output: str

    def line(self, name: str) -> str:
        found = [x for x in self.lines if x[5:].startswith(f"{name}:")]
        assert found, f"no {name!r} line in:\n{self.output}"
        return found[0]


def holdscan_check(config: Path, *, via: str = "cli", env: dict[str, str] | None = None,
                   user: str | None = None) -> Outcome:
    module = ["holdscan.cli", "check"] if via == "cli" else ["holdscan.check"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOLDSCAN_")}
    p = subprocess.run([sys.executable, "-m", *module, "--config", str(config)],
                       cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**clean, **(env or {})}, user=user)
    output = p.stdout + p.stderr
    assert "Traceback" not in output, output
    return Outcome(p.returncode, p.stdout.splitlines(), output)


def assert_one_failure(out: Outcome, name: str, expected: str) -> str:
    assert out.code == 1, out.output
    fails = [x for x in out.lines if x.startswith("FAIL")]
    assert len(fails) == 1, out.output
    assert fails[0] == out.line(name)
    assert expected in fails[0], out.output
    assert " — " in fails[0], "a FAIL line says how to fix it"
    return fails[0]


def test_correct_setup_is_all_ok(parts: Parts) -> None:
    out = holdscan_check(parts.config())
    assert out.code == 0, out.output
    assert all(x.startswith("ok   ") for x in out.lines), out.output
    assert "holdscan-cleanup" in out.line("hold rule")
    assert parts.redis.url in out.line("broker")
    assert "clamd answers PING" in out.line(f"clamd unix:{parts.clamd.socket_path}")
    assert "clamd answers PING" in out.line(f"clamd tcp:127.0.0.1:{parts.clamd.port}")
    for name in ("postfix", "hold sources", "one file system", "spool owner", "user",
                 "runtime"):
        out.line(name)


def test_check_runs_as_a_module_too(parts: Parts) -> None:
    out = holdscan_check(parts.config(), via="module")
    assert out.code == 0, out.output
    assert len(out.lines) == 13, out.output
    assert "0 rule(s); default: infected quarantine" in out.line("policy")
    assert "off" in out.line("notify")
    assert "off" in out.line("web")


def test_redis_not_listening(parts: Parts) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    line = assert_one_failure(holdscan_check(parts.config(broker=url)), "broker",
                              f"cannot connect to {url}")
    assert "start redis-server or fix broker.url or HOLDSCAN_BROKER" in line


def test_malformed_broker_url(parts: Parts) -> None:
    out = holdscan_check(parts.config(broker="redis://127.0.0.1:notaport/0"))
    line = assert_one_failure(out, "broker", "malformed URL redis://127.0.0.1:notaport/0")
    assert "redis://[:PASSWORD@]HOST:PORT/DB" in line


def test_redis_wants_a_password(parts: Parts) -> None:
    url = f"redis://127.0.0.1:{parts.redis_with_password.port}/0"
    line = assert_one_failure(holdscan_check(parts.config(broker=url)), "broker",
                              f"Redis at {url} requires a password")
    assert "redis://:PASSWORD@host:port/db" in line


def test_redis_wrong_password_is_named_and_not_printed(parts: Parts) -> None:
    url = f"redis://:not-the-password@127.0.0.1:{parts.redis_with_password.port}/0"
    out = holdscan_check(parts.config(broker=url))
    assert_one_failure(out, "broker", "rejected the password")
    assert "not-the-password" not in out.output


def test_redis_with_the_password_is_ok(parts: Parts) -> None:
    out = holdscan_check(parts.config(broker=parts.redis_with_password.url))
    assert out.code == 0, out.output
    assert "s3cret-pw" not in out.output
    assert ":***@" in out.line("broker")


def test_clamd_socket_missing(parts: Parts) -> None:
    missing = parts.tmp / "no-such-clamd.ctl"
    out = holdscan_check(parts.config(clamd=[f"unix:{missing}"]))
    line = assert_one_failure(out, f"clamd unix:{missing}", "")
    assert line == (f"FAIL clamd unix:{missing}: clamd socket {missing} missing — "
                    "start clamav-daemon or fix scanners.clamav.addresses")


def test_clamd_socket_stale(parts: Parts) -> None:
    # What a clamd that died leaves behind: the socket file, with nobody listening.
    stale = parts.tmp / "stale-clamd.ctl"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    try:
        out = holdscan_check(parts.config(clamd=[f"unix:{stale}"]))
    finally:
        stale.unlink()
    line = assert_one_failure(out, f"clamd unix:{stale}", "refuses connections")
    assert "start clamav-daemon" in line


def test_clamd_tcp_port_closed(parts: Parts) -> None:
    address = f"tcp:127.0.0.1:{free_port()}"
    assert_one_failure(holdscan_check(parts.config(clamd=[address])), f"clamd {address}",
                       "refuses connections")


def test_clamd_address_malformed(parts: Parts) -> None:
    assert_one_failure(holdscan_check(parts.config(clamd=["clamd.example:3310"])),
                       "clamd clamd.example:3310", "malformed clamd address")


def test_hold_rule_missing(parts: Parts) -> None:
    cd = str(parts.postfix.config_dir)
    override = f"127.0.0.1:{parts.postfix.port}/inet/cleanup_service_name"
    run("postconf", "-c", cd, "-PX", override)
    try:
        out = holdscan_check(parts.config())
    finally:
        run("postconf", "-c", cd, "-P", f"{override}=holdscan-cleanup")
    assert_one_failure(out, "hold rule", "no smtpd service holds incoming mail")


def test_hold_rule_table_without_hold(parts: Parts) -> None:
    cd = str(parts.postfix.config_dir)
    table = parts.tmp / "no_hold_checks"
    table.write_text("/^Subject: spam/ REJECT\n")
    setting = "holdscan-cleanup/unix/header_checks"
    run("postconf", "-c", cd, "-P", f"{setting}=regexp:{table}")
    try:
        out = holdscan_check(parts.config())
    finally:
        run("postconf", "-c", cd, "-P",
            f"{setting}=regexp:{parts.postfix.config_dir}/holdscan_hold_checks")
    assert_one_failure(out, "hold rule", "do not HOLD a Received: header")


def test_hold_rule_in_main_cf_breaks_rule_3(parts: Parts) -> None:
    cd = str(parts.postfix.config_dir)
    before = parts.postfix.postconf("header_checks")
    run("postconf", "-c", cd, "-e",
        f"header_checks = regexp:{parts.postfix.config_dir}/holdscan_hold_checks")
    try:
        out = holdscan_check(parts.config())
    finally:
        run("postconf", "-c", cd, "-e", f"header_checks = {before}")
    assert_one_failure(out, "hold rule", "holds all mail, also locally forwarded mail")


def test_state_dir_on_another_file_system(parts: Parts) -> None:
    if os.stat("/dev/shm").st_dev == os.stat(parts.postfix.queue_dir).st_dev:
        pytest.skip("/dev/shm is on the queue's file system here")
    other = Path(tempfile.mkdtemp(prefix="holdscan-state-", dir="/dev/shm"))
    shutil.chown(other, "postfix")      # only the file system is wrong here
    try:
        out = holdscan_check(parts.config(extra=f'[dispatcher]\nstate_dir = "{other}"\n'))
    finally:
        shutil.rmtree(other, ignore_errors=True)
    line = assert_one_failure(out, "one file system", "must be on one file system")
    assert str(other) in line


def test_state_dir_owned_by_root(parts: Parts) -> None:
    state = parts.postfix.queue_dir / "holdscan-root-owned"
    state.mkdir()
    try:
        out = holdscan_check(parts.config(extra=f'[dispatcher]\nstate_dir = "{state}"\n'))
    finally:
        state.rmdir()
    line = assert_one_failure(out, "spool owner", f"{state} belongs to root")
    assert "chown -R postfix" in line


def test_neither_root_nor_mail_owner(parts: Parts) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the check as another user")
    shared_tmp = Path(tempfile.mkdtemp(prefix="holdscan-check-nobody-"))
    try:
        shared_tmp.chmod(0o755)
        config = shared_tmp / "holdscan.toml"
        config.write_text(parts.config(clamd=[]).read_text())
        config.chmod(0o644)
        probe = subprocess.run([sys.executable, "-c", "import holdscan.check"], cwd=REPO,
                               capture_output=True, user="nobody")
        if probe.returncode != 0:
            pytest.skip("user nobody cannot read this checkout")
        out = holdscan_check(config, user="nobody")
    finally:
        shutil.rmtree(shared_tmp, ignore_errors=True)
    assert out.code == 1
    line = out.line("user")
    assert line.startswith("FAIL user: running as nobody"), out.output
    assert "run holdscan as root (it drops to postfix) or as postfix" in line
    assert out.line("broker").startswith("ok"), out.output


def test_postfix_missing_skips_what_needs_it(parts: Parts) -> None:
    out = holdscan_check(parts.config(), env={"PATH": "/nonexistent"})
    line = assert_one_failure(out, "postfix", "cannot read Postfix's settings")
    assert "install Postfix" in line
    assert out.line("hold rule").startswith("skip")
    assert out.line("broker").startswith("ok")


def test_unreadable_config_is_one_line(parts: Parts) -> None:
    bad = parts.tmp / "bad.toml"
    bad.write_text("[broker]\nurll = 'redis://x'\n")
    out = holdscan_check(bad, via="module")
    assert out.code == 1
    assert out.lines == [out.lines[0]] and out.lines[0].startswith("FAIL config:")
    assert "unknown setting 'urll'" in out.lines[0]


POLICY = """
[[policy.rules]]
name = "example.com strips"
recipients = ["*@example.com"]
infected = "strip"
"""


def test_policy_is_checked_and_reported(parts: Parts) -> None:
    out = holdscan_check(parts.config(extra=POLICY))
    assert out.code == 0, out.output
    assert "1 rule(s)" in out.line("policy")


def test_policy_with_a_wrong_action_names_the_key(parts: Parts) -> None:
    out = holdscan_check(parts.config(extra=POLICY.replace('"strip"', '"strip-it"')))
    line = assert_one_failure(out, "policy", "#1 (example.com strips): infected = 'strip-it'")
    assert "did you mean 'strip'" in line


def test_policy_rule_that_never_applies(parts: Parts) -> None:
    out = holdscan_check(parts.config(extra=POLICY + """
[[policy.rules]]
recipients = ["boss@example.com"]
infected = "deliver"
"""))
    assert_one_failure(out, "policy", "rule #2: infected never applies, because rule #1 "
                                      "(example.com strips)")


def test_notify_template_with_an_unknown_field(parts: Parts) -> None:
    template = parts.tmp / "admin.txt"
    template.write_text("Subject: $subjekt\n\nbody $queue_id\n")
    out = holdscan_check(parts.config(
        extra=f'[notify]\nadmin = "postmaster@example.com"\nadmin_template = "{template}"\n'))
    assert_one_failure(out, "notify", "unknown field $subjekt")
    template.write_text("Subject: stopped $subject\n\nbody $queue_id\n")
    out = holdscan_check(parts.config(
        extra=f'[notify]\nadmin = "postmaster@example.com"\nadmin_template = "{template}"\n'))
    assert out.code == 0, out.output
    assert "notices to postmaster@example.com" in out.line("notify")
