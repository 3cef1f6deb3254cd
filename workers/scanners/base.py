"""What every scanner is: a name, its options, and scan(message) -> findings.

A scanner is a small class:

    class Thing(Scanner):
        name = "thing"
        defaults = {"limit": 10}            # every option it knows, with its default

        def scan(self, msg: ParsedMessage) -> list[Finding]: ...

A scanner that has more to say than findings (the spam scanner: a score and
the rules that fired, and headers for the recipient's filters) returns a
ScanResult instead of the list. One that needs the envelope (rspamd wants the
sender, recipients and queue ID) overrides run(), which is what the engine
calls; its default is scan().

`__init__` receives the scanner's `[scanners.NAME]` TOML table (minus
`enabled`, which the registry handles) and checks it against `defaults`: a key
it does not know, or a value of the wrong type, is a ConfigError that names
the key, so a typo never silently falls back to a default.

scan() must not touch the spool, the broker or the network other than the
service it scans with; it returns findings and nothing else. Returning no
findings means clean. An exception escaping scan() is a bug; the engine turns
it into an `error` finding (the message stays in hold) rather than a crash.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shared.config import ConfigError
from shared.contract import Finding, ScanRequest
from workers.message import ParsedMessage, ParseLimits, Part

# The verdicts a "what to do when ..." option (on_encrypted, on_limit, ...) may name.
FALLBACK_VERDICTS = ("blocked", "unscannable", "clean")


@dataclass(frozen=True)
class ScanResult:
    """Findings plus what goes into the verdict besides them.

    `extra` is merged into Verdict.extra, which is for people (keys start with the
    scanner's name, e.g. "spam_score", so scanners cannot collide); no decision reads
    it. `spam_high` (spam above the high threshold) is what the policy may treat
    apart, and goes into Verdict.spam_high. `headers` maps a header
    name *suffix* to its value: the engine adds the configured prefix
    ("Spam-Score" -> "X-Holdscan-Spam-Score") and replaces any header of that
    name the sender put there, so the scanner needs to know nothing of the
    [headers] configuration. `derived` is content the scanner found inside the
    parts (workers/derived.py): the scanners after it see it as more parts.
    """

    findings: list[Finding]
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    spam_high: bool = False
    derived: list[Part] = field(default_factory=list)


class Scanner(ABC):
    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    # A scanner that owns the MIME parsing limits sets this; the engine parses
    # with the first one it finds (the mime scanner's), else with the defaults.
    parse_limits: ParseLimits | None = None

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = check_options(self.name, options, self.defaults)

    @abstractmethod
    def scan(self, msg: ParsedMessage) -> list[Finding] | ScanResult:
        """Findings about `msg`; an empty list means clean."""

    def run(self, msg: ParsedMessage, request: ScanRequest) -> ScanResult:
        """What the engine calls: scan(), as a ScanResult.

        Override it (not scan) to see the envelope in `request`.
        """
        found = self.scan(msg)
        return found if isinstance(found, ScanResult) else ScanResult(list(found))

    def finding(self, verdict: str, detail: str) -> Finding:
        return Finding(scanner=self.name, verdict=verdict, detail=detail)


def _type_name(value: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            list: "a list"}.get(type(value), type(value).__name__)


def check_options(scanner: str, options: dict[str, Any],
                  defaults: dict[str, Any]) -> dict[str, Any]:
    """`defaults` updated with `options`, after checking each key and value type."""
    where = f"[scanners.{scanner}]"
    out = dict(defaults)
    for key, value in options.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {known}")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ConfigError(f"{where}: {key} must be {_type_name(default)}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{where}: {key} must not be negative, got {value!r}")
        out[key] = value
    return out


def check_fallback(scanner: str, key: str, value: str) -> str:
    if value not in FALLBACK_VERDICTS:
        raise ConfigError(f"[scanners.{scanner}]: {key} must be one of "
                          f"{', '.join(FALLBACK_VERDICTS)}, got {value!r}")
    return value


def show_name(name: str, limit: int = 80) -> str:
    """A filename for a finding: quoted, ASCII, invisible characters made visible.

    Findings end up in headers and logs; a right-to-left override in a log
    line would mislead the reader exactly as it misleads the recipient.
    """
    shown = name.encode("ascii", "backslashreplace").decode("ascii")
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)
    if len(shown) > limit:
        shown = shown[:limit - 3] + "..."
    return f'"{shown}"'
