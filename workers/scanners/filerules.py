"""Filename and filetype rules, shared by the attachments and archives scanners.

The defaults follow MailScanner's filename.rules and filetype.rules in spirit:
deny what Windows (or a Mac, or a Linux desktop) will run on a double-click,
deny names built to hide what a file is, and deny executables whatever their
name says. Allow everything else; the virus scanner looks at content.

A name is judged the way the recipient's machine will treat it, not as it is
written: Unicode-normalised (NFKC turns a full-width "．ｅｘｅ" into ".exe"),
without invisible and bidirectional control characters, with the trailing dots
and spaces that Windows drops removed, and without any directory part.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from shared.config import ConfigError
from workers.filetype import DESCRIPTIONS, sniff

DENY_EXTENSIONS = [
    # Windows programs, scripts and installers
    "exe", "com", "scr", "pif", "bat", "cmd", "cpl", "msi", "msp", "mst", "msc",
    "vbs", "vbe", "js", "jse", "wsf", "wsh", "wsc", "ws", "sct", "hta", "ps1", "psm1", "psd1",
    "jar", "reg", "inf", "scf", "lnk", "url", "chm", "hlp", "shs", "shb", "gadget", "xll",
    "application", "appref-ms", "appx", "appxbundle", "msix", "msixbundle",
    "library-ms", "search-ms", "settingcontent-ms",
    # disk images that Windows mounts on a double-click, hiding their contents from mail filters
    "iso", "img", "vhd", "vhdx",
]

DENY_PATTERNS = [
    r"\{[0-9a-f-]{20,}\}",     # a CLSID "extension" that Explorer hides
    # A run of spaces that pushes the real extension out of view. Anchored at the
    # start of the run: unanchored, the search tries every blank of a long run
    # as a start and costs the square of its length.
    r"(?<!\s)\s{5,}\S",
]

# Sniffed types denied whatever the name. Scripts with a #! line are not denied
# by default: mail between administrators carries them, and on the desktops
# that matter they do not run on a double-click (their extensions are denied).
# Disk images and installers are denied by content as their extensions are by name:
# Windows mounts or runs them on a double-click, whatever they are called.
DENY_TYPES = ["pe", "msdos", "elf", "mach-o", "lnk", "registry", "hta",
              "iso", "udf", "vhd", "vhdx", "msi"]

RULE_DEFAULTS: dict[str, Any] = {
    "deny_extensions": DENY_EXTENSIONS,
    "deny_patterns": DENY_PATTERNS,
    "deny_types": DENY_TYPES,
    "block_double_extensions": True,
    "block_invisible_characters": True,
}

# A few characters without the Cf category that still render as nothing.
_INVISIBLE_EXTRA = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Longest run of white space a name pattern sees: longer runs look the same to
# the eye, and a pattern an operator writes may be quadratic in the run.
_MAX_BLANKS = 64
_BLANK_RUN = re.compile(r"\s{" + str(_MAX_BLANKS + 1) + ",}")


def _invisible(ch: str) -> bool:
    # A tab is shown as a blank (it comes from a folded header line), not hidden.
    return (unicodedata.category(ch) in ("Cf", "Cc") and ch != "\t") or ch in _INVISIBLE_EXTRA


def normalise(name: str) -> str:
    """The name as the recipient's machine will treat it."""
    name = unicodedata.normalize("NFKC", name)
    name = "".join(c for c in name if not _invisible(c))
    name = re.split(r"[/\\]", name)[-1]
    name = _BLANK_RUN.sub(" " * _MAX_BLANKS, name.replace("\t", " "))
    return name.rstrip(". \t").lower()


@dataclass(frozen=True)
class FileRules:
    deny_extensions: frozenset[str]
    deny_patterns: tuple[re.Pattern[str], ...]
    deny_types: frozenset[str]
    block_double_extensions: bool
    block_invisible_characters: bool

    @classmethod
    def from_options(cls, scanner: str, options: dict[str, Any]) -> FileRules:
        patterns = []
        for p in options["deny_patterns"]:
            try:
                patterns.append(re.compile(p, re.IGNORECASE))
            except re.error as e:
                raise ConfigError(f"[scanners.{scanner}]: deny_patterns: {p!r} is not a valid "
                                  f"regular expression: {e}") from None
        unknown = sorted(set(options["deny_types"]) - set(DESCRIPTIONS))
        if unknown:
            raise ConfigError(f"[scanners.{scanner}]: deny_types: unknown type(s) "
                              f"{', '.join(unknown)}; known: {', '.join(sorted(DESCRIPTIONS))}")
        return cls(
            deny_extensions=frozenset(e.lower().lstrip(".") for e in options["deny_extensions"]),
            deny_patterns=tuple(patterns),
            deny_types=frozenset(options["deny_types"]),
            block_double_extensions=options["block_double_extensions"],
            block_invisible_characters=options["block_invisible_characters"],
        )

    def check_name(self, name: str) -> str | None:
        """The rule a filename breaks, as a short text, or None."""
        if self.block_invisible_characters:
            hidden = [c for c in name if _invisible(c)]
            if hidden:
                return f"invisible or bidi character U+{ord(hidden[0]):04X} in filename"
        plain = normalise(name)
        pieces = plain.split(".")
        ext = pieces[-1] if len(pieces) > 1 else ""
        if ext in self.deny_extensions:
            before = pieces[-2].strip() if len(pieces) > 2 else ""
            if self.block_double_extensions and re.fullmatch(r"[a-z0-9]{1,5}", before):
                return f"double extension .{before}.{ext}"
            return f"denied extension .{ext}"
        for pattern in self.deny_patterns:
            if pattern.search(plain):
                return f"denied name pattern {pattern.pattern!r}"
        return None

    def check_type(self, data: bytes) -> str | None:
        """The rule the content breaks (a denied sniffed type), or None."""
        kind = sniff(data)
        if kind in self.deny_types:
            return f"denied file type {kind} ({DESCRIPTIONS[kind]})"
        return None
