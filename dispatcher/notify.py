"""Notices about stopped mail: to the administrator, and optionally to the recipients.

When the policy quarantines, strips (or discards) a message, a short notice
can go to `[notify] admin`, and with `recipients = true` to each recipient
concerned. Never to the sender: the sender of a virus or of spam is almost
always forged, and a notice would be backscatter to an innocent address.

A notice is a new message handed to Postfix with its own `sendmail`
(`sendmail -C <postfix config> -f <> -i -- ADDRESS`): it goes through pickup
and the default cleanup service, which does not hold mail when the HOLD rule
is on the public smtpd only (deploy/postfix/master.cf.snippet), so a notice is
delivered and never scanned. The envelope sender is null (<>), as for a
bounce: a notice that cannot be delivered is dropped, never bounced back into
another notice. Notices carry `Auto-Submitted: auto-generated` (RFC 3834), so
vacation responders stay quiet.

Templates are string.Template texts: header lines (at least Subject), an
empty line, then the body; `$name` is replaced by one of FIELDS. The built-in
ones below can be replaced by files (`admin_template`, `recipient_template`);
an unknown $name in a file is a ConfigError when the dispatcher starts.

Notices are best effort, sent by a thread after the spool operation: mail is
never held up by them, and a notice lost in a crash is not sent again. Each
notified address gets at most `rate_limit` notices an hour; the counts are in
STATE/notify.json, which says how many were sent and suppressed per address.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate, make_msgid
from pathlib import Path
from string import Template

from shared.config import ConfigError, NotifyConfig
from shared.mimeparts import safe_text

log = logging.getLogger("holdscan.notify")

FIELDS = {
    "outcome": "what was done: quarantined, stripped or discarded",
    "verdict": "infected, blocked, spam, spam_high, unscannable or error",
    "reasons": "what the scanners found, one per line",
    "removed": "stripped: the parts removed, one per line; otherwise empty",
    "queue_id": "the message's queue ID in the hold queue",
    "quarantine_id": "its quarantine entry (for holdscan quarantine show/release); or empty",
    "sender": "the envelope sender (<> for none)",
    "recipients": "the recipients this notice is about, comma-separated",
    "subject": "the message's Subject",
    "message_id": "the message's Message-ID",
    "date": "when holdscan acted (RFC 5322 date)",
    "hostname": "this mail host's name",
    "admin": "the administrator's address ([notify] admin)",
}

ADMIN_TEMPLATE = """\
Subject: [holdscan] $verdict message $outcome: $subject

holdscan $outcome a message on $hostname.

Verdict:     $verdict
Queue ID:    $queue_id
Quarantine:  $quarantine_id
From:        $sender
To:          $recipients
Subject:     $subject
Message-ID:  $message_id
Date:        $date

Found:
$reasons

Removed:
$removed

holdscan quarantine show ID    shows a quarantined message
holdscan quarantine release ID delivers it after all
"""

RECIPIENT_TEMPLATE = """\
Subject: A message to you was $outcome: $subject

A message to you was $outcome by the mail system's content scanner.

From:     $sender
Subject:  $subject
Date:     $date
Reason:   $verdict

$removed

If you expected this message, ask your administrator ($admin) and quote
the queue ID $queue_id.
"""

STATE_FILE = "notify.json"
WINDOW = 3600.0


class NotifyError(RuntimeError):
    """A notice could not be handed to Postfix."""


def sendmail(program: str, postfix_config_directory: str, recipient: str, data: bytes) -> None:
    """Hand one message from the null sender to Postfix's sendmail (the notices and the
    web's digests): it enters by the pickup service, so it is neither held nor scanned."""
    argv = [program]
    if postfix_config_directory:
        argv += ["-C", postfix_config_directory]
    argv += ["-f", "<>", "-i", "--", recipient]
    try:
        p = subprocess.run(argv, input=data, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NotifyError(f"{argv[0]}: {e}") from None
    if p.returncode != 0:
        raise NotifyError(f"{' '.join(argv)} exited {p.returncode}: "
                          f"{p.stderr.decode(errors='replace').strip()[:300]}")


@dataclass(frozen=True)
class Notice:
    """One stopped message, and who is to hear about it."""

    outcome: str                    # "quarantined", "stripped", "discarded"
    fields: dict[str, str]          # FIELDS, except recipients
    recipients: list[str]           # the message's recipients concerned


@dataclass(frozen=True)
class MessageTemplate:
    headers: list[tuple[str, Template]]
    body: Template

    @classmethod
    def parse(cls, text: str, where: str) -> MessageTemplate:
        head, sep, body = text.replace("\r\n", "\n").partition("\n\n")
        if not sep:
            raise ConfigError(f"{where}: a template is header lines (Subject: ...), an empty "
                              "line, then the body; there is no empty line")
        headers = []
        for line in head.split("\n"):
            name, colon, value = line.partition(":")
            if not colon or not name or any(c.isspace() for c in name) or not name.isascii():
                raise ConfigError(f"{where}: {line[:60]!r} is not a header line (Name: value)")
            if name.lower() in ("from", "to", "date", "message-id", "auto-submitted"):
                raise ConfigError(f"{where}: holdscan sets {name}: itself; leave it out")
            headers.append((name, Template(value.strip())))
        if not any(n.lower() == "subject" for n, _ in headers):
            raise ConfigError(f"{where}: the template has no Subject: line")
        tpl = cls(headers, Template(body))
        for t in [body_t for _, body_t in headers] + [tpl.body]:
            if not t.is_valid():
                raise ConfigError(f"{where}: a $ that is not $name, ${{name}} or $$")
            unknown = sorted(set(t.get_identifiers()) - set(FIELDS))
            if unknown:
                raise ConfigError(f"{where}: unknown field ${unknown[0]}; the fields are "
                                  f"{', '.join('$' + f for f in FIELDS)}")
        return tpl

    @classmethod
    def load(cls, path: str, builtin: str, key: str) -> MessageTemplate:
        if not path:
            return cls.parse(builtin, f"built-in {key}")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"notify.{key} = {path!r}: cannot read it: "
                              f"{e.strerror or e}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"notify.{key} = {path!r}: not UTF-8 text") from None
        return cls.parse(text, f"notify.{key} ({path})")

    def render(self, fields: dict[str, str]) -> tuple[list[tuple[str, str]], str]:
        # Header values: one printable ASCII line each, so no field can add a header.
        one_line = {k: safe_text(v.replace("\n", ", "), 200) for k, v in fields.items()}
        headers = [(n, t.substitute(one_line)) for n, t in self.headers]
        multi = {k: "\n".join(safe_text(line, 500) for line in v.split("\n"))
                 for k, v in fields.items()}
        return headers, self.body.substitute(multi)


class RateLimit:
    """Notices per address in the last hour, in a JSON file an operator can read."""

    def __init__(self, path: Path, per_hour: int) -> None:
        self.path = path
        self.per_hour = per_hour

    def _read(self) -> dict[str, dict[str, list[float]]]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {"sent": {}, "suppressed": {}}
        return {"sent": data.get("sent", {}), "suppressed": data.get("suppressed", {})}

    def allow(self, address: str, now: float | None = None) -> bool:
        """Count one notice to `address`; False if it is over the limit (counted as suppressed)."""
        now = time.time() if now is None else now
        data = self._read()
        for kind in ("sent", "suppressed"):
            data[kind] = {a: recent for a, ts in data[kind].items()
                          if (recent := [t for t in ts if now - t < WINDOW])}
        key = address.lower()
        ok = not self.per_hour or len(data["sent"].get(key, [])) < self.per_hour
        data["sent" if ok else "suppressed"].setdefault(key, []).append(now)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
        return ok

    def summary(self) -> dict[str, int]:
        data = self._read()
        now = time.time()
        return {kind: sum(1 for ts in data[kind].values() for t in ts if now - t < WINDOW)
                for kind in ("sent", "suppressed")}


def _outcome_key(outcome: str) -> str:
    return {"quarantined": "quarantine", "stripped": "strip", "discarded": "discard"}[outcome]


class Notifier:
    """Sends notices from a thread; notify() never blocks the dispatcher."""

    def __init__(self, cfg: NotifyConfig, postfix_config_directory: str, state_dir: Path,
                 hostname: str = "") -> None:
        self.cfg = cfg
        self.postfix_config_directory = postfix_config_directory
        self.hostname = hostname or socket.getfqdn()
        self.admin_template = MessageTemplate.load(cfg.admin_template, ADMIN_TEMPLATE,
                                                   "admin_template")
        self.recipient_template = MessageTemplate.load(cfg.recipient_template,
                                                       RECIPIENT_TEMPLATE, "recipient_template")
        self.limit = RateLimit(state_dir / STATE_FILE, cfg.rate_limit)
        self.sender = cfg.sender or f"postmaster@{self.hostname}"
        self._queue: queue.Queue[Notice | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.admin or self.cfg.recipients)

    def wanted(self, outcome: str) -> bool:
        return self.enabled and _outcome_key(outcome) in self.cfg.on

    # -- the dispatcher's side -------------------------------------------------------------
    def notify(self, notice: Notice) -> None:
        if not self.wanted(notice.outcome):
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
            self._thread.start()
        self._queue.put(notice)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (for up to `timeout` seconds), then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            notice = self._queue.get()
            if notice is None:
                return
            for address, template, about in self.messages_for(notice):
                try:
                    self.send(address, template, {**notice.fields,
                                                  "recipients": ", ".join(about)})
                except NotifyError as e:
                    log.error("notice to %s about %s not sent: %s", address,
                              notice.fields.get("queue_id", ""), e)

    def messages_for(self, notice: Notice) -> list[tuple[str, MessageTemplate, list[str]]]:
        """(address, template, the recipients it is about) for each notice to send."""
        out = []
        if self.cfg.admin:
            out.append((self.cfg.admin, self.admin_template, notice.recipients))
        if self.cfg.recipients:
            for r in dict.fromkeys(notice.recipients):
                if r and r.lower() != self.cfg.admin.lower():
                    out.append((r, self.recipient_template, [r]))
        return out

    def build(self, address: str, template: MessageTemplate, fields: dict[str, str]) -> bytes:
        values = {f: "" for f in FIELDS}
        values.update(fields)
        values["hostname"] = values["hostname"] or self.hostname
        values["admin"] = self.cfg.admin or self.sender
        values["date"] = values["date"] or formatdate(localtime=True)
        headers, body = template.render(values)
        lines = [f"From: holdscan <{self.sender}>", f"To: <{address}>",
                 f"Date: {formatdate(localtime=True)}",
                 f"Message-ID: {make_msgid('holdscan', self.hostname)}",
                 "Auto-Submitted: auto-generated", "MIME-Version: 1.0",
                 "Content-Type: text/plain; charset=us-ascii",
                 "Content-Transfer-Encoding: 7bit"]
        lines += [f"{n}: {v}" for n, v in headers]
        text = "\n".join(lines) + "\n\n" + body
        return text.encode("ascii", "replace")

    def send(self, address: str, template: MessageTemplate, fields: dict[str, str]) -> bool:
        """Hand one notice to Postfix. False if the rate limit suppressed it."""
        if not self.limit.allow(address):
            log.warning("notice to %s about %s suppressed: more than %d this hour (%s)",
                        address, fields.get("queue_id", ""), self.cfg.rate_limit,
                        self.limit.path)
            return False
        sendmail(self.cfg.sendmail, self.postfix_config_directory, address,
                 self.build(address, template, fields))
        log.info("notice sent to %s about %s (%s)", address, fields.get("queue_id", ""),
                 fields.get("outcome", ""))
        return True
