"""Rule 3: new mail from outside lands in hold; locally submitted or forwarded mail does not.

A real private Postfix is configured from deploy/postfix/*.snippet exactly as
docs/install.md tells an administrator to (the same `postconf -M` / `-P`
edits), with two test-only changes: the public smtpd listens on a loopback
port, and nothing runs chrooted (the private queue has no copy of /etc).
"""

from __future__ import annotations

import shutil
import smtplib
import subprocess
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from holdscan.lab.postfix import PostfixInstance, free_port, run
from holdscan.lab.sink import Sink

pytestmark = [pytest.mark.postfix]

REPO = Path(__file__).resolve().parents[2]
SNIPPETS = REPO / "deploy" / "postfix"


@dataclass
class MasterEntry:
    name: str
    type: str
    fields: list[str]                      # the eight columns
    options: list[tuple[str, str]] = field(default_factory=list)


def parse_master_snippet(text: str) -> list[MasterEntry]:
    """master.cf syntax: an entry starts in column 1, continuation lines start with blanks."""
    entries: list[MasterEntry] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            f = line.split()
            assert len(f) >= 8, f"master.cf entry with fewer than 8 columns: {line!r}"
            entries.append(MasterEntry(f[0], f[1], f))
            continue
        words = line.split()
        assert entries and words[0] == "-o" and len(words) == 2, f"unexpected line {line!r}"
        name, _, value = words[1].partition("=")
        entries[-1].options.append((name, value))
    return entries


def parse_main_snippet(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


class SnippetPostfix(PostfixInstance):
    """A private Postfix whose only HOLD rule comes from deploy/postfix/*.snippet."""

    def __init__(self, sink_port: int, **kw: object) -> None:
        main = parse_main_snippet((SNIPPETS / "main.cf.snippet").read_text())
        extra = dict(kw.pop("extra_main_cf", None) or {})  # type: ignore[call-overload]
        super().__init__(sink_port, hold=False, extra_main_cf={**main, **extra}, **kw)  # type: ignore[arg-type]
        for k, v in self.settings.items():
            self.settings[k] = self._local(v)

    def _local(self, value: str) -> str:
        return value.replace("/etc/postfix/", f"{self.config_dir}/")

    def _write_config(self) -> None:
        super()._write_config()
        shutil.copy(SNIPPETS / "holdscan_hold_checks", self.config_dir / "holdscan_hold_checks")
        cd = str(self.config_dir)
        for entry in parse_master_snippet((SNIPPETS / "master.cf.snippet").read_text()):
            if (entry.name, entry.type) == ("smtp", "inet"):
                # The test's public smtpd is the loopback listener PostfixInstance made.
                service = f"127.0.0.1:{self.port}"
            else:
                service = entry.name
                cols = list(entry.fields)
                cols[4] = "n"          # no chroot in a private instance
                run("postconf", "-c", cd, "-M", f"{service}/{entry.type}={' '.join(cols)}")
            for name, value in entry.options:
                run("postconf", "-c", cd, "-P",
                    f"{service}/{entry.type}/{name}={self._local(value)}")

    def send_smtp(self, msg: EmailMessage) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as s:
            s.send_message(msg)

    def send_sendmail(self, msg: EmailMessage) -> None:
        # sendmail -> postdrop -> maildrop -> pickup -> the default cleanup.
        run("sendmail", "-C", str(self.config_dir), "-f", str(msg["From"]), "-i",
            str(msg["To"]), input=msg.as_bytes())


def message(to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@outside.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="holdscan.test")
    msg.set_content(f"{subject}\n")
    return msg


def held_message_ids(pf: PostfixInstance) -> list[str]:
    ids = []
    for path in pf.wait_held(0, timeout=0):
        for line in pf.postcat("-h", str(path)).splitlines():
            if line.lower().startswith("message-id:"):
                ids.append(line.split(":", 1)[1].strip())
    return ids


def wait_for(pred, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def postfix():  # noqa: ANN201
    sink = Sink(free_port()).start()
    # A local domain whose alias forwards to a remote address: the forwarded copy is
    # made by local(8) through the default cleanup service.
    pf = SnippetPostfix(sink.port, extra_main_cf={
        "mydestination": "local.holdscan.test",
        "alias_maps": "inline:{ forward-me=far-away@remote.test }",
        "alias_database": "",
        "mailbox_size_limit": "0",   # local(8) refuses to start if it is below message_size_limit
    })
    try:
        pf.start()
        yield pf, sink
    finally:
        pf.stop()
        sink.stop()
        shutil.rmtree(sink.dir, ignore_errors=True)


def test_the_snippets_pass_postfix_check(postfix) -> None:  # noqa: ANN001
    pf, _ = postfix
    p = pf.postfix("check", check=False)
    # Only warnings about our configuration count: other tests on this machine edit the
    # default instance's alternate_config_directories at the same time.
    ours = [line for line in p.stderr.splitlines() if "warning" in line and any(
        w in line for w in ("master.cf", "main.cf", "holdscan", "cleanup", "header_checks"))]
    assert p.returncode == 0 and not ours, p.stderr


def test_mail_from_smtp_is_held(postfix) -> None:  # noqa: ANN001
    pf, sink = postfix
    msg = message("someone@remote.test", "from outside")
    pf.send_smtp(msg)
    wait_for(lambda: msg["Message-ID"] in held_message_ids(pf), 20, "SMTP mail not held")
    time.sleep(0.5)
    assert msg["Message-ID"] not in [d.message_id for d in sink.deliveries()]


def test_mail_from_sendmail_is_not_held(postfix) -> None:  # noqa: ANN001
    pf, sink = postfix
    msg = message("someone@remote.test", "submitted locally")
    pf.send_sendmail(msg)
    wait_for(lambda: msg["Message-ID"] in [d.message_id for d in sink.deliveries()], 30,
             f"sendmail mail never reached the sink; hold has {held_message_ids(pf)}")
    assert msg["Message-ID"] not in held_message_ids(pf)


def test_released_mail_forwarded_locally_is_not_held_again(postfix) -> None:  # noqa: ANN001
    pf, sink = postfix
    msg = message("forward-me@local.holdscan.test", "forwarded by an alias")
    pf.send_smtp(msg)
    wait_for(lambda: msg["Message-ID"] in held_message_ids(pf), 20, "SMTP mail not held")
    # Release it the way an operator would (holdscan renames hold -> incoming instead).
    queue_id = next(p.name for p in pf.queue_files("hold")
                    if msg["Message-ID"] in pf.postcat("-h", str(p)))
    pf.postsuper("-H", queue_id)
    run("postqueue", "-c", str(pf.config_dir), "-f")
    wait_for(lambda: any(d.message_id == msg["Message-ID"] for d in sink.deliveries()), 30,
             f"forwarded copy never reached the sink; hold has {held_message_ids(pf)}")
    delivered = [d for d in sink.deliveries() if d.message_id == msg["Message-ID"]]
    assert delivered[0].rcpt_tos == ["far-away@remote.test"]
    assert msg["Message-ID"] not in held_message_ids(pf)


def test_check_accepts_the_snippets(postfix) -> None:  # noqa: ANN001
    pf, _ = postfix
    from holdscan.check import check_hold_rule
    from shared.config import Config

    cfg = Config()
    cfg.postfix.config_directory = str(pf.config_dir)
    result = check_hold_rule(cfg)
    assert result.status == "ok", result.line()
    assert f"127.0.0.1:{pf.port}/inet via holdscan-cleanup" in result.message


def test_postconf_shows_hold_only_on_the_public_smtpd(postfix) -> None:  # noqa: ANN001
    pf, _ = postfix
    overrides = subprocess.run(["postconf", "-c", str(pf.config_dir), "-P"],
                               capture_output=True, text=True, check=True).stdout
    assert f"127.0.0.1:{pf.port}/inet/cleanup_service_name = holdscan-cleanup" in overrides
    assert "pickup/unix/cleanup_service_name" not in overrides
    assert pf.postconf("cleanup_service_name") == "cleanup"
