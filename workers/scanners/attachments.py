"""The attachments scanner: filename and filetype rules on every MIME part.

Every name any reading of the message gives a part is checked (a client may
show any of them), and every part's decoded content is sniffed, so a Windows
program called "report.pdf" is blocked for what it is. Archive members get
the same rules from the archives scanner.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared.contract import Finding
from workers.message import ParsedMessage
from workers.scanners.base import Scanner, show_name
from workers.scanners.filerules import RULE_DEFAULTS, FileRules
from workers.strip import locate, pinned


class AttachmentsScanner(Scanner):
    name = "attachments"
    defaults: ClassVar[dict[str, Any]] = dict(RULE_DEFAULTS)

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.rules = FileRules.from_options(self.name, self.options)

    def scan(self, msg: ParsedMessage) -> list[Finding]:
        findings: list[Finding] = []
        for part in msg.parts:
            details = []
            for filename in part.filenames:
                rule = self.rules.check_name(filename)
                if rule:
                    details.append(f"{rule}: {show_name(filename)}")
            rule = self.rules.check_type(part.payload)
            if rule:
                label = show_name(part.filenames[0]) if part.filenames else part.label
                details.append(f"{rule}: {label}")
            if details:
                # Pinned to the part, so that a `strip` policy can remove just that part.
                paths = locate(msg.raw, part.payload)
                for d in details:
                    findings += pinned(self.finding("blocked", d), paths)
        return list(dict.fromkeys(findings))
