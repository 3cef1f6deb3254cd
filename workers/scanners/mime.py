"""The mime scanner: a message whose structure cannot be decided is not clean.

The parser reads a broken message every way a client might (workers/message.py)
and the other scanners judge every reading, so conflicting headers, several
boundaries or odd encodings are no reason to hold innocent mail. What is left
undecidable is a part whose content no decoder turns into bytes, and a message
past a parsing limit or the CPU budget: no scanner can promise it saw what the
recipient will see. What to do then is `on_undecidable` (default
"unscannable": the message is held for the operator's policy); the finding
names the part and the reason.

This scanner also owns the parsing limits and the CPU budget; the engine
parses and scans with them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared.contract import Finding
from workers.message import ParsedMessage, ParseLimits
from workers.scanners.base import Scanner, check_fallback

_DEFAULT_LIMITS = ParseLimits()


class MimeScanner(Scanner):
    name = "mime"
    defaults: ClassVar[dict[str, Any]] = {
        "on_undecidable": "unscannable",
        "max_parts": _DEFAULT_LIMITS.max_parts,
        "max_depth": _DEFAULT_LIMITS.max_depth,
        "max_decoded_bytes": _DEFAULT_LIMITS.max_decoded_bytes,
        "max_readings": _DEFAULT_LIMITS.max_variants,
        "decoded_per_byte": _DEFAULT_LIMITS.decoded_per_byte,
        "cpu_seconds": _DEFAULT_LIMITS.cpu_seconds,
    }

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.on_undecidable = check_fallback(self.name, "on_undecidable",
                                            self.options["on_undecidable"])
        self.parse_limits = ParseLimits(max_parts=max(1, self.options["max_parts"]),
                                        max_depth=max(1, self.options["max_depth"]),
                                        max_decoded_bytes=self.options["max_decoded_bytes"],
                                        max_variants=max(1, self.options["max_readings"]),
                                        decoded_per_byte=max(1, self.options["decoded_per_byte"]),
                                        cpu_seconds=self.options["cpu_seconds"])

    def scan(self, msg: ParsedMessage) -> list[Finding]:
        if not msg.undecidable or self.on_undecidable == "clean":
            return []
        # The first reason is the one that matters (a limit, when one was hit);
        # the rest go to the log through ParsedMessage.problems.
        more = len(msg.undecidable) - 1
        detail = msg.undecidable[0] + (f" (and {more} more)" if more else "")
        return [self.finding(self.on_undecidable, f"MIME structure undecidable: {detail}")]
