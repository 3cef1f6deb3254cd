"""Helpers for the web's tests: its user, quarantined mail made the dispatcher's way, a
config with [web] enabled, and running code as another user.

    web_user()                 the throwaway user and group the web runs as in tests
    quarantine_message(pf, message, ...)   send, hold, and quarantine one message
    web_config(path, pf, data_dir, **web)  a holdscan.toml: local scanning, [web] enabled
    run_as(uid, gid, code)     a Python snippet run as that user (the project importable)
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dispatcher import queuefile
from dispatcher.postfix import PostfixSettings
from dispatcher.spool import Spool
from holdscan.lab.cluster import write_config
from holdscan.lab.postfix import PostfixInstance
from tests.support.mail import send

ROOT = Path(__file__).resolve().parents[2]
WEB_USER = "holdscan-webtest"
# The administrators tests/web/conftest.py makes.
ADMIN, SECOND_ADMIN, PASSWORD = "admin", "bob", "correct horse battery"


def web_user() -> tuple[str, int, int]:
    """A system user and group of their own for the web (created once, kept)."""
    try:
        pw = pwd.getpwnam(WEB_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--shell", "/usr/sbin/nologin", WEB_USER], check=True)
        pw = pwd.getpwnam(WEB_USER)
    return WEB_USER, pw.pw_uid, grp.getgrnam(WEB_USER).gr_gid


def spool(pf: PostfixInstance) -> Spool:
    return Spool(PostfixSettings.read(str(pf.config_dir)))


def quarantine_message(pf: PostfixInstance, message: bytes, sender: str,
                       recipients: list[str], action: str = "spam", reason: str = "",
                       subject: str = "", when: float | None = None,
                       findings: list[dict[str, Any]] | None = None) -> str:
    """Send a message through the Postfix, and quarantine it as the dispatcher does
    (only while no dispatcher runs on it). Returns the entry's ID."""
    before = set(pf.queue_files("hold"))
    send(pf.port, sender, recipients, message)
    deadline = time.monotonic() + 30
    while True:
        new = [p for p in pf.queue_files("hold") if p not in before
               and (p.stat().st_mode & 0o700) == 0o700]
        if new:
            break
        assert time.monotonic() < deadline, "the message was not held"
        time.sleep(0.05)
    sp = spool(pf)
    sp.prepare()
    claim = sp.claim(new[0])
    assert claim is not None
    qf = queuefile.parse(claim.read_bytes())
    verdict = {"action": action, "reasons": [reason], "findings": findings or [
        {"scanner": "test", "action": action, "detail": reason or action, "part": ""}]}
    return sp.quarantine(claim, {"time": time.time() if when is None else when,
                                 "sender": qf.sender, "recipients": recipients,
                                 "verdict": verdict, "action": action, "reason": reason,
                                 "subject": subject, "policy": ["test"]})


def web_config(path: Path, pf: PostfixInstance, data_dir: Path, **web: Any) -> Path:
    """Scanning in one local process without clamd (the tests here quarantine by hand),
    and the web enabled for the test user."""
    user, _, _ = web_user()
    return write_config(path, {
        "postfix": {"config_directory": str(pf.config_dir)},
        "dispatcher": {"local_workers": 1, "rescan_interval": 2.0},
        "scanners.clamav": {"enabled": False},
        "web": {"enabled": True, "user": user, "group": user, "data_dir": str(data_dir),
                **web},
    })


def run_as(uid: int, gid: int, code: str, groups: tuple[int, ...] = ()
           ) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run([sys.executable, "-c", code], user=uid, group=gid,
                          extra_groups=list(groups), env=env, cwd="/", capture_output=True,
                          text=True, timeout=60)




# -- a running site: Postfix, dispatcher and `holdscan web` ---------------------------------

# Mail that tries to get its own markup or script into the pages, every way it can.
MARKER = "window.__pwned"
HOSTILE_SENDER = f'"<script>{MARKER}=1</script>"@example.test'
HOSTILE_SUBJECT = f"<script>{MARKER}=2</script> <img src=x onerror=\"{MARKER}=3\">"


def hostile_message() -> bytes:
    # <script>window.__pwned=4</script>
    b64_script = "PHNjcmlwdD53aW5kb3cuX19wd25lZD00PC9zY3JpcHQ+"
    return (
        f"From: \"<b onmouseover={MARKER}=5>Boss</b>\" <boss@example.test>\r\n"
        "To: r@example.test\r\n"
        f"Subject: {HOSTILE_SUBJECT} =?utf-8?b?{b64_script}?=\r\n"
        "Message-ID: <hostile@holdscan.test>\r\n"
        f"X-Evil: <svg onload=\"{MARKER}=6\"></svg>\r\n"
        "X-Crlf: =?utf-8?q?first=0D=0AInjected-Header:_yes?=\r\n"
        f"List-Unsubscribe: <javascript:{MARKER}=7>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"<script>{MARKER}=8</script> <a href=\"javascript:{MARKER}=9\">click me</a>\r\n"
        "--b1\r\nContent-Type: text/html\r\n\r\n"
        f"<html><body><script>{MARKER}=10</script><p>HTML-ONLY-TEXT</p></body></html>\r\n"
        "--b1\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Disposition: attachment; filename=\"<img src=x onerror={MARKER}=11>.exe\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n"
        "--b1\r\nContent-Type: application/pdf\r\n"
        "Content-Disposition: attachment; "
        f"filename*=utf-8''%3Cscript%3E{MARKER}%3D12%3C%2Fscript%3E.pdf\r\n"
        "\r\n%PDF-1.4\r\n--b1--\r\n").encode()


def message(subject: str, body: str = "hello\r\n", sender: str = "alice@example.test",
            to: str = "r@example.test") -> bytes:
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash(subject))}@holdscan.test>\r\n\r\n{body}").encode()


__all__ = ["ADMIN", "HOSTILE_SENDER", "HOSTILE_SUBJECT", "MARKER", "PASSWORD", "SECOND_ADMIN",
           "WEB_USER", "hostile_message", "message", "quarantine_message", "run_as", "spool",
           "web_config", "web_user"]
