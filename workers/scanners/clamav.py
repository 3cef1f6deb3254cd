"""The clamav scanner: the whole message to clamd by INSTREAM, plus suspect parts.

clamd decodes MIME and unpacks archives itself (EICAR in a zip in a zip in a
base64 attachment is found from the raw message), so the raw message is what
it gets. But clamd's MIME decoder is one more reading of a broken message, and
a part it cannot decode (base64 with junk in it, a part only a prefix-matched
boundary reveals) goes unscanned. So the decoded payloads that the tolerant
reading found and the strict one did not, or that were oddly encoded, are sent
too, each as its own stream. Ordinary mail has no such parts: one INSTREAM.

With the verdict cache on (`cache_ttl` > 0, workers/verdictcache.py), a
message whose readings all agree and that has decoded leaves of at least
`cache_min_size` bytes, other than text, goes to clamd in pieces: each such leaf's decoded
content as a stream of its own (unless the cache already holds clamd's answer
about exactly those bytes), and the message as a skeleton, its raw bytes with
those leaves' bodies left out, so that clamd still reads the headers, the MIME
structure, every text and every small part of every message (clamd checks the
links in HTML for phishing only in mail it reads as mail). A leaf found infected this way
is a finding about that part. Mail with no large leaf, and mail whose readings
disagree (suspect parts, problems, anything undecidable), goes as before: the
whole raw message plus the suspect parts. What is lost against the whole
message: a signature written for the raw mail file that matches across a large
part's encoded body; ClamAV's official signatures match decoded content.

Outcomes: a signature -> infected; the message past clamd's StreamMaxLength
-> unscannable; clamd answering with an error, or no clamd answering -> error,
so the message waits in hold and is scanned again later.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from shared import mimeparts
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
from workers.verdictcache import VerdictCache, config_hash

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
        "cache_ttl": 86400,         # seconds a verdict cache entry lives; 0: no cache
        "cache_min_size": 16384,    # decoded leaves this large are scanned alone, cached
        "cache_refresh": 5.0,       # seconds between reads of clamd's signature version
    }
    cache: VerdictCache | None = None

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

    def use_cache(self, store_factory: Callable[[], Any]) -> None:
        """Share clamd's answers through the Redis that store_factory() connects to."""
        if self.options["cache_ttl"] > 0:
            self.cache = VerdictCache(store_factory, self.pool.versions,
                                      lambda: self.pool.reconnects,
                                      config_hash(a.text for a in self.pool.addresses),
                                      self.options["cache_ttl"], self.options["cache_refresh"])

    def scan(self, msg: ParsedMessage) -> list[Finding]:
        pieces = self._pieces(msg) if self.cache is not None else None
        if pieces is not None and self.cache is not None:
            answers = self.cache.lookup(list(pieces.payloads))
            if answers is not None:
                return self._scan_pieces(msg, pieces, answers, self.cache)
        return self._scan_whole(msg)

    def _pieces(self, msg: ParsedMessage) -> _Pieces | None:
        """The large leaves and the skeleton, or None: the message goes whole."""
        min_size = max(1, self.options["cache_min_size"])
        if not any(len(p.payload) >= min_size for p in msg.parts):
            return None
        if msg.suspect_parts or msg.undecidable or msg.problems:
            return None     # the readings disagree somewhere: clamd gets all of it
        try:
            leaves = mimeparts.leaves(msg.raw)
        except mimeparts.StripError:
            return None
        decoded = {p.digest: p for p in msg.parts}
        pieces = _Pieces(b"", {}, {})
        cuts = []
        for leaf in leaves:
            data = leaf.decoded()
            if data is None or len(data) < min_size:
                continue
            digest = hashlib.sha256(data).digest()
            part = decoded.get(digest)
            if part is None:
                # The plain reading (part paths, the skeleton's cuts) decoded something
                # the scanning readings did not: not a message to take apart.
                return None
            if any(t.startswith("text/") for t in (leaf.content_type, *part.declared_types)):
                # Text stays in the message: clamd checks the links in a mail's HTML
                # (PhishingScanURLs) only when it reads them as part of a mail.
                continue
            cuts.append((leaf.body_start, leaf.end))
            pieces.payloads[digest] = data
            pieces.paths.setdefault(digest, []).append(leaf.path)
        if not cuts:
            return None
        kept, at = [], 0
        for start, end in sorted(cuts):
            kept.append(msg.raw[at:start])
            at = end
        kept.append(msg.raw[at:])
        pieces.skeleton = b"".join(kept)
        return pieces

    def _scan_pieces(self, msg: ParsedMessage, pieces: _Pieces,
                     answers: dict[bytes, str | None], cache: VerdictCache) -> list[Finding]:
        findings: list[Finding] = []
        fresh: dict[bytes, str] = {}
        for digest, data in pieces.payloads.items():
            answer = answers.get(digest)
            if answer is None:
                try:
                    answer = self.pool.scan(data) or ""
                except ClamdTooLarge:
                    findings.append(self.finding("unscannable", TOO_LARGE))
                    continue
                except ClamdReplyError as e:
                    findings.append(self.finding("error", f"clamd error: {e}"))
                    continue
                except ClamdUnavailable as e:
                    log.warning("no clamd answered for a part: %s", e)
                    cache.store(fresh)
                    return [self.finding("error", f"clamd unavailable: {e}")]
                fresh[digest] = answer
            if answer:
                findings += [Finding(self.name, "infected", answer, path)
                             for path in pieces.paths[digest]]
        cache.store(fresh)
        log.debug("verdict cache: %d of %d parts known (%d hits, %d misses so far)",
                  len(pieces.payloads) - len(fresh), len(pieces.payloads), cache.hits,
                  cache.misses)
        hint = b"" if pieces.skeleton[:9].lower() == b"received:" else MAIL_HINT
        try:
            signature = self.pool.scan(hint, pieces.skeleton)
        except ClamdTooLarge:
            findings.append(self.finding("unscannable", TOO_LARGE))
        except ClamdReplyError as e:
            findings.append(self.finding("error", f"clamd error: {e}"))
        except ClamdUnavailable as e:
            log.warning("no clamd answered for the message: %s", e)
            return [self.finding("error", f"clamd unavailable: {e}")]
        else:
            if signature:
                findings += self._pin_to_parts(msg, [self.finding("infected", signature)])
        return list(dict.fromkeys(findings))

    def _scan_whole(self, msg: ParsedMessage) -> list[Finding]:
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


@dataclass
class _Pieces:
    """A message taken apart for clamd: the skeleton and the large leaves it lacks."""

    skeleton: bytes
    payloads: dict[bytes, bytes]        # SHA-256 -> decoded content
    paths: dict[bytes, list[str]]       # SHA-256 -> the part paths that decode to it
