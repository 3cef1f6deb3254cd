"""Messages of every kind the queue-file codec must handle, each with its envelope, to
send through a private Postfix: long lines, 8-bit and SMTPUTF8, DSN options, 499
recipients, the null sender, an empty message, recipients extracted by `sendmail -t` ...

    for case in CASES.values():
        send_case(pf, case)         # the held file's first recipient is case.key
"""

from __future__ import annotations

import smtplib
import subprocess
from dataclasses import dataclass, field

from holdscan.lab.postfix import PostfixInstance

DEST = "dest.test"


@dataclass
class Case:
    name: str
    sender: str = "sender@example.test"
    recipients: list[str] = field(default_factory=list)
    message: bytes = b""
    mail_options: list[str] = field(default_factory=list)
    rcpt_options: list[str] = field(default_factory=list)
    sendmail_t: bool = False       # submit with `sendmail -t` (pickup), not by SMTP

    @property
    def key(self) -> str:
        # The first recipient names the case, so we can find its held file.
        return f"case-{self.name}@{DEST}"


def msg(subject: str, body: bytes = b"hello\r\n", extra: bytes = b"") -> bytes:
    return (b"From: sender@example.test\r\nTo: rcpt@dest.test\r\nSubject: " + subject.encode()
            + b"\r\nMessage-ID: <" + subject.encode() + b"@holdscan.test>\r\n" + extra
            + b"\r\n" + body)


LINE_3000 = bytes(ord("a") + i % 26 for i in range(3000))
LINE_100K = bytes(ord("A") + i % 26 for i in range(100_000))
LINE_4096 = b"m" * 4096      # smtpd ends it with an empty N record

CASES = {c.name: c for c in [
    Case("plain", message=msg("plain")),
    Case("8bit", message=msg("8bit", b"Gr\xfc\xdfe aus K\xf6ln\r\n",
                             b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=latin1\r\n"
                             b"Content-Transfer-Encoding: 8bit\r\n"),
         mail_options=["BODY=8BITMIME"]),
    Case("smtputf8", sender="s\u00e9nder@exampl\u00e9.test",
         recipients=["j\u00fcrgen@b\u00fccher.test"],
         message="From: s\u00e9nder@exampl\u00e9.test\r\nTo: j\u00fcrgen@b\u00fccher.test\r\n"
                 "Subject: gr\u00fc\u00dfe \u2603\r\n\r\nh\u00e9llo \u2603\r\n".encode(),
         mail_options=["SMTPUTF8", "BODY=8BITMIME"]),
    Case("long3000", message=msg("long3000", b"before\r\n" + LINE_3000 + b"\r\nafter\r\n")),
    Case("long100k", message=msg("long100k", b"before\r\n" + LINE_100K + b"\r\nafter\r\n")),
    Case("long4096", message=msg("long4096", LINE_4096 + b"\r\n")),
    Case("longheader", message=msg("longheader", extra=b"X-Long: " + LINE_3000 + b"\r\n")),
    Case("rcpt500", recipients=[f"r{i:03d}@{DEST}" for i in range(499)], message=msg("rcpt500")),
    Case("dsn", recipients=[f"second@{DEST}"], message=msg("dsn"),
         mail_options=["RET=HDRS", "ENVID=holdscan-envid-1"],
         rcpt_options=["NOTIFY=SUCCESS,DELAY,FAILURE", f"ORCPT=rfc822;original@{DEST}"]),
    Case("nullsender", sender="", message=msg("nullsender")),
    Case("emptybody", message=msg("emptybody", b"")),
    Case("emptymessage", message=b""),
    Case("folded", message=msg("folded", extra=b"X-Folded: one\r\n\ttwo\r\n three\r\n")),
    Case("nonheader", message=b"Subject: nonheader\r\nthis is no header\r\nbody\r\n"),
    # Recipients taken from the headers land in the extracted section.
    Case("extracted", sender="local@example.test", sendmail_t=True,
         message=f"To: case-extracted@{DEST}, second@{DEST}\nCc: third@{DEST}\n"
                 "Subject: extracted\n\nbody\n".encode()),
]}


def send_case(pf: PostfixInstance, case: Case) -> None:
    """By SMTP, the case's key first among the recipients; or by `sendmail -t`."""
    if case.sendmail_t:
        subprocess.run(["sendmail", "-C", str(pf.config_dir), "-t", "-f", case.sender],
                       input=case.message, check=True, timeout=60)
        return
    with smtplib.SMTP("127.0.0.1", pf.port, timeout=60) as s:
        s.ehlo()
        s.sendmail(case.sender, [case.key] + case.recipients, case.message,
                   mail_options=case.mail_options, rcpt_options=case.rcpt_options)
