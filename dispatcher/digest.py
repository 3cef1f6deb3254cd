"""The recipients' daily digest: what was quarantined for each of them, with links.

Once a day (web.digest = true) the dispatcher mails each recipient of mail quarantined
since the last digest one message listing it, each entry with a link signed for that
recipient and entry (shared/webrequest.sign_link, expiring after web.link_days) to a
page where they may release or delete their own message. The digest goes to Postfix's
`sendmail`, i.e. through pickup: not through the public smtpd, so it is neither held
nor scanned again (deploy/postfix/*.snippet put the HOLD rule on smtpd only).

STATE/digest.json remembers when the last digest went out (the first covers one day).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from dispatcher import durable
from dispatcher.notify import NotifyError, sendmail
from dispatcher.quarantine import entries, format_time
from dispatcher.spool import Spool
from shared.config import Config
from shared.logging import event
from shared.webrequest import ADDRESS_RE, WebPaths, sign_link

log = logging.getLogger("holdscan.dispatcher")

DAY = 86400.0
MAX_LISTED = 200            # entries in one recipient's digest


class Digest:
    def __init__(self, spool: Spool, cfg: Config, paths: WebPaths) -> None:
        self.spool = spool
        self.cfg = cfg
        self.paths = paths
        self.state = spool.state_dir / "digest.json"
        self.next_look = 0.0
        host = socket.getfqdn()
        self.sender = cfg.web.digest_sender or cfg.notify.sender or f"postmaster@{host}"
        self.host = host

    def tick(self) -> None:
        """From the loop: send the day's digests when a day has passed since the last."""
        now_m = time.monotonic()
        if now_m < self.next_look:
            return
        self.next_look = now_m + 60
        last = self._last()
        now = time.time()
        if last and now - last < DAY:
            return
        try:
            sent = self.send(since=last or now - DAY, now=now)
        except (OSError, NotifyError) as e:
            event(log, logging.ERROR, "digest not sent; tried again in a minute", error=str(e))
            return
        durable.write_file(self.state, json.dumps({"last": now}).encode(), mode=0o600)
        if sent:
            event(log, logging.INFO, "digests sent", recipients=sent)

    def _last(self) -> float:
        try:
            return float(json.loads(self.state.read_bytes())["last"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0

    def collect(self, since: float) -> dict[str, list[dict[str, Any]]]:
        """Recipient -> the entries stored for them since `since`, not released."""
        out: dict[str, list[dict[str, Any]]] = {}
        for e in entries(self.spool.quarantine_dir):
            if e.time < since or e.meta.get("released_as"):
                continue
            for r in e.meta.get("recipients", []):
                if isinstance(r, str) and ADDRESS_RE.fullmatch(r):
                    out.setdefault(r.lower(), []).append({"id": e.id, **e.meta})
        return out

    def send(self, since: float, now: float) -> int:
        key = self.paths.key.read_bytes()
        per_recipient = self.collect(since)
        for recipient, listed in sorted(per_recipient.items()):
            sendmail(self.cfg.notify.sendmail, str(self.spool.settings.config_directory or ""),
                     recipient, self.build(key, recipient, listed, now))
        return len(per_recipient)

    def build(self, key: bytes, recipient: str, listed: list[dict[str, Any]],
              now: float) -> bytes:
        expires = now + self.cfg.web.link_days * DAY
        base = self.cfg.web.base_url.rstrip("/")
        lines = [f"Mail for {recipient} was stopped and kept aside ({len(listed)} "
                 f"message{'s' if len(listed) != 1 else ''}).",
                 "Each link shows one message; you may have it delivered or delete it",
                 f"(until {format_time(expires)} UTC). Mail with a virus can only be",
                 "released by your administrator.", ""]
        for m in listed[:MAX_LISTED]:
            token = sign_link(key, recipient, m["id"], expires)
            lines += [f"From:    {_line(m.get('sender') or '<>')}",
                      f"Subject: {_line(m.get('subject', ''))}",
                      f"When:    {format_time(float(m.get('time', 0)))} UTC",
                      f"Why:     {_line(m.get('action', ''))}",
                      f"Open:    {base}/r/{token}", ""]
        if len(listed) > MAX_LISTED:
            lines.append(f"... and {len(listed) - MAX_LISTED} more; ask your administrator.")
        msg = EmailMessage()
        msg["From"] = f"holdscan <{self.sender}>"
        msg["To"] = f"<{recipient}>"
        msg["Subject"] = f"Quarantined mail for you: {len(listed)} message(s)"
        msg["Date"] = formatdate(now, localtime=True)
        msg["Message-ID"] = make_msgid("holdscan-digest", self.host)
        msg["Auto-Submitted"] = "auto-generated"
        # 8bit: the links stay whole on their lines for any reader (lines stay far below
        # SMTP's 998).
        msg.set_content("\n".join(lines) + "\n", charset="utf-8", cte="8bit")
        return msg.as_bytes()


def _line(value: Any) -> str:
    """One line of the digest: the message's own text cannot start another."""
    return " ".join(str(value).split())[:200]


__all__ = ["Digest"]
