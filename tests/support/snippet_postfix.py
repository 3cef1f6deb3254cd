"""A private Postfix set up from deploy/postfix/*.snippet, as docs/install.md tells an
administrator to (the same `postconf -M` / `-P` edits), with two test-only changes: the
public smtpd listens on a loopback port, and nothing runs chrooted (the private queue
has no copy of /etc).
"""

from __future__ import annotations

import shutil
import smtplib
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from holdscan.lab.postfix import PostfixInstance, run

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
