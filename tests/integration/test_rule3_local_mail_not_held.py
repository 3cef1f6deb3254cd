"""Rule 3: new mail from outside lands in hold; locally submitted or forwarded mail does not.

A real private Postfix is configured from deploy/postfix/*.snippet exactly as
docs/install.md tells an administrator to (the same `postconf -M` / `-P`
edits), with two test-only changes: the public smtpd listens on a loopback
port, and nothing runs chrooted (the private queue has no copy of /etc).
"""

from __future__ import annotations

import functools
import subprocess
import time
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from holdscan.lab.postfix import PostfixInstance, run
from tests.support.snippet_postfix import SnippetPostfix

pytestmark = [pytest.mark.postfix]


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
def shared_postfix_kind():  # noqa: ANN201
    # A local domain whose alias forwards to a remote address: the forwarded copy is
    # made by local(8) through the default cleanup service.
    return functools.partial(SnippetPostfix, extra_main_cf={
        "mydestination": "local.holdscan.test",
        "alias_maps": "inline:{ forward-me=far-away@remote.test }",
        "alias_database": "",
        "mailbox_size_limit": "0",   # local(8) refuses to start if it is below message_size_limit
    })


def test_the_snippets_pass_postfix_check(shared_postfix) -> None:  # noqa: ANN001
    pf, _ = shared_postfix
    p = pf.postfix("check", check=False)
    # Only warnings about our configuration count: other tests on this machine edit the
    # default instance's alternate_config_directories at the same time.
    ours = [line for line in p.stderr.splitlines() if "warning" in line and any(
        w in line for w in ("master.cf", "main.cf", "holdscan", "cleanup", "header_checks"))]
    assert p.returncode == 0 and not ours, p.stderr


def test_mail_from_smtp_is_held(shared_postfix) -> None:  # noqa: ANN001
    pf, sink = shared_postfix
    msg = message("someone@remote.test", "from outside")
    pf.send_smtp(msg)
    wait_for(lambda: msg["Message-ID"] in held_message_ids(pf), 20, "SMTP mail not held")
    time.sleep(0.5)
    assert msg["Message-ID"] not in [d.message_id for d in sink.deliveries()]


def test_mail_from_sendmail_is_not_held(shared_postfix) -> None:  # noqa: ANN001
    pf, sink = shared_postfix
    msg = message("someone@remote.test", "submitted locally")
    pf.send_sendmail(msg)
    wait_for(lambda: msg["Message-ID"] in [d.message_id for d in sink.deliveries()], 30,
             f"sendmail mail never reached the sink; hold has {held_message_ids(pf)}")
    assert msg["Message-ID"] not in held_message_ids(pf)


def test_released_mail_forwarded_locally_is_not_held_again(shared_postfix) -> None:  # noqa: ANN001
    pf, sink = shared_postfix
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


def test_check_accepts_the_snippets(shared_postfix) -> None:  # noqa: ANN001
    pf, _ = shared_postfix
    from holdscan.check import check_hold_rule
    from shared.config import Config

    cfg = Config()
    cfg.postfix.config_directory = str(pf.config_dir)
    result = check_hold_rule(cfg)
    assert result.status == "ok", result.line()
    assert f"127.0.0.1:{pf.port}/inet via holdscan-cleanup" in result.message


def test_postconf_shows_hold_only_on_the_public_smtpd(shared_postfix) -> None:  # noqa: ANN001
    pf, _ = shared_postfix
    overrides = subprocess.run(["postconf", "-c", str(pf.config_dir), "-P"],
                               capture_output=True, text=True, check=True).stdout
    assert f"127.0.0.1:{pf.port}/inet/cleanup_service_name = holdscan-cleanup" in overrides
    assert "pickup/unix/cleanup_service_name" not in overrides
    assert pf.postconf("cleanup_service_name") == "cleanup"
