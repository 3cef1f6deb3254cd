"""The clamav scanner: the whole message to clamd by INSTREAM, plus suspect parts.

clamd decodes MIME and unpacks archives itself (EICAR in a zip in a zip in a
base64 attachment is found from the raw message), so the raw message is what
it gets. But clamd's MIME decoder is one more reading of a broken message, and
a part it cannot decode (base64 with junk in it, a part only a prefix-matched
boundary reveals) goes unscanned. So the decoded payloads that the tolerant
reading found and the strict one did not, or that were oddly encoded, are sent
too, each as its own stream. Ordinary mail has no such parts: one INSTREAM.

Outcomes: a signature -> infected; the message past clamd's StreamMaxLength
-> unscannable; clamd answering with an error, or no clamd answering -> error,
so the message waits in hold and is scanned again later.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from shared.config import ConfigError
from shared.contract import Finding
from workers.clamdclient import (
    DEFAULT_ADDRESSES,
    Address,
    ClamdPool,
    ClamdReplyError,
    ClamdTooLarge,
    ClamdUnavailable,
)
from workers.message import ParsedMessage
from workers.scanners.base import Scanner
from workers.strip import payloads

log = logging.getLogger("holdscan.clamav")

TOO_LARGE = "too large for clamd (StreamMaxLength)"

# clamd decodes MIME only in a stream it recognises as mail, by the header it
# starts with: "Received:", "From:", "Subject:" and others do, "X-Anything:"
# does not, and then an attachment in base64 is scanned as plain text. A
# message from Postfix starts with Postfix's own Received: header; for any
# other, this line goes first (in the stream to clamd only), so a sender
# cannot switch clamd's MIME decoding off by the order of its headers.
MAIL_HINT = b"Received: by holdscan (so that clamd reads this as mail)\r\n"


class ClamavScanner(Scanner):
    name = "clamav"
    defaults: ClassVar[dict[str, Any]] = {
        "addresses": list(DEFAULT_ADDRESSES),
        "timeout": 60.0,            # per socket operation, once connected
        "connect_timeout": 5.0,
        "reuse_connections": True,  # IDSESSION; see workers/clamdclient.py for why
        "retry_after": 10.0,        # seconds a failed address is tried last
        "scan_parts": True,         # also scan the suspect parts separately
    }

    def __init__(self, options: dict[str, Any]) -> None:
        if isinstance(options.get("addresses"), str):      # one address, as a string
            options = {**options, "addresses": [options["addresses"]]}
        super().__init__(options)
        try:
            addresses = [Address.parse(a) for a in self.options["addresses"]]
        except ValueError as e:
            raise ConfigError(f"[scanners.clamav] addresses: {e}") from None
        if not addresses:
            raise ConfigError("[scanners.clamav] addresses: give at least one clamd address")
        self.pool = ClamdPool(addresses, timeout=self.options["timeout"],
                              connect_timeout=self.options["connect_timeout"],
                              reuse=self.options["reuse_connections"],
                              retry_after=self.options["retry_after"])

    def scan(self, msg: ParsedMessage) -> list[Finding]:
        hint = b"" if msg.raw[:9].lower() == b"received:" else MAIL_HINT
        streams: list[tuple[str, tuple[bytes, ...]]] = [("message", (hint, msg.raw))]
        if self.options["scan_parts"]:
            streams += [(p.label, (p.payload,)) for p in msg.suspect_parts]
        findings: list[Finding] = []
        for what, buffers in streams:
            try:
                signature = self.pool.scan(*buffers)
            except ClamdTooLarge:
                findings.append(self.finding("unscannable", TOO_LARGE))
                continue
            except ClamdReplyError as e:
                findings.append(self.finding("error", f"clamd error: {e}"))
                continue
            except ClamdUnavailable as e:
                log.warning("no clamd answered for %s: %s", what, e)
                # Without clamd there is no virus verdict for this message at all.
                return [self.finding("error", f"clamd unavailable: {e}")]
            if signature:
                findings.append(self.finding("infected", signature))
        if any(f.verdict == "infected" for f in findings):
            findings = self._pin_to_parts(msg, findings)
        return list(dict.fromkeys(findings))

    def _pin_to_parts(self, msg: ParsedMessage, findings: list[Finding]) -> list[Finding]:
        """Which parts carry the signatures found in the whole message.

        Only for infected mail (rare), one INSTREAM per part: a `strip` policy
        needs to know what to remove. A signature found in the message and in
        no single part stays a finding about the whole message, which cannot
        be stripped.
        """
        pinned: list[Finding] = []
        for path, payload in payloads(msg.raw):
            try:
                signature = self.pool.scan(payload)
            except (ClamdTooLarge, ClamdReplyError, ClamdUnavailable) as e:
                log.info("cannot scan part %s alone: %s", path, e)
                continue
            if signature:
                pinned.append(Finding(self.name, "infected", signature, path))
        found_in_parts = {f.detail for f in pinned}
        rest = [f for f in findings
                if not (f.verdict == "infected" and f.detail in found_in_parts)]
        return rest + pinned

    def close(self) -> None:
        self.pool.close()
