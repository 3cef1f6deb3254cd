"""The spam scanner: a score from SpamAssassin's spamd or from rspamd.

Off unless configured: a `[scanners.spam]` table with a `url` turns it on.
The daemon scores the message; holdscan's own thresholds decide, so a policy
reads the same verdict whichever daemon answered:

    score >= threshold          -> a "spam" finding ("score 15.0 >= 5.0")
    score >= high_threshold     -> the same, marked high ("high score ...", spam_high)
    otherwise                   -> a "clean" finding with the score

The score and the symbols go into Verdict.extra (spam_score, spam_required,
spam_symbols), a high score into Verdict.spam_high, and into two headers for the
recipient's filters:
<prefix>-Spam-Score and <prefix>-Spam-Status ("Yes, score=15.0 required=5.0").

A message larger than max_size is not sent (spamc and rspamd skip large mail
too: spam is small, and scoring a 20 MB attachment costs seconds): a clean
finding says so, and no spam headers are added. No answer from the daemon is
an `error` finding, so the message waits in hold and is scanned again; with
on_error = "skip" it is a clean finding instead and the mail flows unscored.
A daemon that did not answer is not asked again for retry_after seconds: the
messages in between get that outcome at once, where a hung daemon would
otherwise cost each one the full timeout, and a batch of them the task's
time limit.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from shared.config import ConfigError
from shared.contract import ScanRequest
from workers.message import ParsedMessage
from workers.scanners.base import Scanner, ScanResult
from workers.spamclient import (
    Envelope,
    SpamClient,
    SpamError,
    SpamReplyError,
    SpamUnavailable,
    spam_client,
)

log = logging.getLogger("holdscan.spam")

# threshold = 0 means the daemon's usual scale: spamd's required_score is 5;
# rspamd adds its spam header at 6 and rejects at 15. 15 is past doubt on both.
USUAL_THRESHOLDS = {"spamd": (5.0, 15.0), "rspamd": (6.0, 15.0)}

ON_ERROR = ("error", "skip")


def show_score(score: float) -> str:
    """15.0, 4.96, -0.1: enough digits that "4.96 < 5.0" never reads "5.0 < 5.0"."""
    text = f"{score:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


class SpamScanner(Scanner):
    name = "spam"
    defaults: ClassVar[dict[str, Any]] = {
        "url": "",                  # spamd://HOST:PORT, spamd:///SOCKET, rspamd://HOST:PORT, http(s)://
        "timeout": 30.0,            # seconds for the whole exchange with the daemon
        "threshold": 0.0,           # 0: the daemon's usual (spamd 5.0, rspamd 6.0)
        "high_threshold": 0.0,      # 0: 15.0
        "max_size": 512000,         # bytes; larger messages are not scored; 0: no limit
        "on_error": "error",        # or "skip": deliver unscored when the daemon fails
        "retry_after": 10.0,        # seconds a daemon that did not answer is not asked
    }

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        url = self.options["url"]
        if not url:
            raise ConfigError('[scanners.spam] url: say which daemon to ask, e.g. '
                              '"spamd://127.0.0.1:783" or "rspamd://127.0.0.1:11333" '
                              "(or enabled = false)")
        if self.options["timeout"] <= 0:
            raise ConfigError("[scanners.spam] timeout must be more than 0 seconds")
        if self.options["on_error"] not in ON_ERROR:
            raise ConfigError(f"[scanners.spam] on_error must be one of {', '.join(ON_ERROR)}, "
                              f"got {self.options['on_error']!r}")
        try:
            self.client: SpamClient = spam_client(url, self.options["timeout"])
        except ValueError as e:
            raise ConfigError(f"[scanners.spam] url: {e}") from None
        usual, usual_high = USUAL_THRESHOLDS[self.client.kind]
        self.threshold: float = self.options["threshold"] or usual
        self.high_threshold: float = self.options["high_threshold"] or max(usual_high,
                                                                           self.threshold)
        if self.high_threshold < self.threshold:
            raise ConfigError(f"[scanners.spam] high_threshold ({self.high_threshold:g}) must "
                              f"not be below threshold ({self.threshold:g})")
        # Per worker process: when the daemon last failed to answer, and why.
        self._down_until = 0.0
        self._down_reason = ""

    def scan(self, msg: ParsedMessage) -> ScanResult:
        return self.check(msg, None)

    def run(self, msg: ParsedMessage, request: ScanRequest) -> ScanResult:
        envelope = Envelope(request.sender, tuple(request.recipients), request.queue_id)
        return self.check(msg, envelope)

    def check(self, msg: ParsedMessage, envelope: Envelope | None) -> ScanResult:
        size, limit = len(msg.raw), self.options["max_size"]
        if limit and size > limit:
            return ScanResult([self.finding(
                "clean", f"not scored: {size} bytes is over max_size {limit}")])
        queue_id = envelope.queue_id if envelope else "-"
        if time.monotonic() < self._down_until:
            return self._failed(f"{self.client.kind} unavailable: {self._down_reason} "
                                f"(not asked again for {self.options['retry_after']:g}s)")
        try:
            report = self.client.check(msg.raw, envelope)
        except SpamError as e:
            what = "error" if isinstance(e, SpamReplyError) else "unavailable"
            detail = f"{self.client.kind} {what}: {e}"
            log.warning("%s: no spam score: %s", queue_id, detail)
            if isinstance(e, SpamUnavailable):
                self._down_until = time.monotonic() + self.options["retry_after"]
                self._down_reason = str(e)
            return self._failed(detail)

        score, spam = report.score, report.score >= self.threshold
        high = report.score >= self.high_threshold
        shown, required = show_score(score), show_score(self.threshold)
        if high:
            finding = self.finding("spam", f"high score {shown} >= "
                                           f"{show_score(self.high_threshold)}")
        elif spam:
            finding = self.finding("spam", f"score {shown} >= {required}")
        else:
            finding = self.finding("clean", f"score {shown} < {required}")
        return ScanResult(
            [finding],
            extra={"spam_score": score, "spam_required": self.threshold,
                   "spam_symbols": list(report.symbols)},
            spam_high=high,
            headers={"Spam-Score": shown,
                     "Spam-Status": f"{'Yes' if spam else 'No'}, score={shown} "
                                    f"required={required}"})

    def _failed(self, detail: str) -> ScanResult:
        if self.options["on_error"] == "skip":
            return ScanResult([self.finding("clean", f"not scored: {detail}")])
        return ScanResult([self.finding("error", detail)])
