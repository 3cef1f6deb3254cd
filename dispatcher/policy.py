"""What happens to a message with a given verdict, per envelope sender and recipient.

The `[policy]` table of the configuration:

    [policy]                        # the default, for everyone
    infected = "quarantine"
    blocked = "quarantine"
    spam = "deliver-tagged"
    # spam_high = "quarantine"      # high-scoring spam; unset: whatever spam gets
    unscannable = "quarantine"
    error = "quarantine"            # no verdict after dispatcher.max_attempts

    [[policy.rules]]                # exceptions, in order
    name = "example.org wants attachments stripped"
    recipients = ["*@example.org"]  # and/or senders = [...]
    infected = "strip"
    blocked = "strip"

For each verdict, the first rule that matches the sender and the recipient
*and sets that verdict* decides; a verdict no matching rule sets gets the
default. So a rule says only what it changes. A message whose recipients get
different actions is split (see dispatcher/disposition.py).

Address patterns, one meaning per spelling (case does not matter):

    user@example.com             that address
    *@example.com, example.com   anyone at example.com (not its subdomains)
    *.example.com, *@*.example.com  anyone at any subdomain of example.com
    user@*                       that local part at any domain
    *                            anyone, the null sender included
    <>                           the null sender (bounces)

Anything else with a `*` in it is refused, because a glob such as
`*example.com` also matches `evilexample.com`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from shared.config import Config, ConfigError
from shared.contract import Verdict

VERDICTS = ("infected", "blocked", "spam", "spam_high", "unscannable", "error")
ACTIONS = ("deliver", "deliver-tagged", "strip", "quarantine", "discard", "hold")

# Which action each verdict may take, and why the others make no sense.
ALLOWED: dict[str, tuple[str, ...]] = {
    "infected": ("deliver", "deliver-tagged", "strip", "quarantine", "discard"),
    "blocked": ("deliver", "deliver-tagged", "strip", "quarantine", "discard"),
    "spam": ("deliver", "deliver-tagged", "quarantine", "discard"),
    "spam_high": ("deliver", "deliver-tagged", "quarantine", "discard"),
    "unscannable": ("deliver", "deliver-tagged", "quarantine", "discard"),
    "error": ("deliver", "deliver-tagged", "quarantine", "discard", "hold"),
}
_WHY_NOT = {
    "strip": "strip removes the parts that made a message infected or blocked; "
             "there is no such part for this verdict",
    "hold": "hold (leave it in the hold queue for a human) is for error only",
}

# Today's behaviour, and the defaults of [policy]. spam_high has none of its own:
# unless it is set somewhere, high-scoring spam gets what spam gets.
DEFAULTS = {"infected": "quarantine", "blocked": "quarantine", "spam": "deliver-tagged",
            "unscannable": "quarantine", "error": "quarantine"}

# The Subject prefix of deliver-tagged, unless [headers] subject_tags sets one.
DEFAULT_SUBJECT_TAGS = {"infected": "[VIRUS]", "blocked": "[BLOCKED]", "spam": "[SPAM]",
                        "spam_high": "[SPAM]", "unscannable": "[UNSCANNED]",
                        "error": "[UNSCANNED]"}

_RULE_KEYS = ("name", "senders", "recipients", *VERDICTS)
_BAD_DOMAIN_CHARS = set(" \t\r\n*?<>,;@()[]\\\"'")


def _suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def normalise(address: str) -> str:
    """An envelope address for matching: without <>, lower case."""
    a = address.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1]
    return a.lower()


@dataclass(frozen=True)
class Pattern:
    text: str               # as written, for messages
    local: str = "*"        # "*" or one local part
    domain: str = "*"       # "*", one domain, or ".suffix" for *.suffix
    null: bool = False      # "<>"

    @classmethod
    def parse(cls, text: Any, where: str) -> Pattern:
        if not isinstance(text, str):
            raise ConfigError(f"{where}: address patterns are strings, got {text!r}")
        t = text.strip().lower()
        if not t:
            raise ConfigError(f"{where}: an empty address pattern; write \"*\" for anyone")
        if t == "<>":
            return cls(text, null=True)
        if t == "*":
            return cls(text)
        if any(c.isspace() for c in t):
            raise ConfigError(f"{where}: {text!r} contains white space")
        if "@" in t:
            local, domain = t.rsplit("@", 1)
            local = local or "*"         # "@example.com": anyone there
        else:
            local, domain = "*", t
        if local != "*" and "*" in local:
            raise ConfigError(f"{where}: {text!r}: a * may stand only for the whole local "
                              "part (*@example.com)")
        domain = domain.rstrip(".")
        if domain.startswith("*."):
            suffix = domain[2:]
            cls._check_domain(suffix, text, where)
            return cls(text, local, "." + suffix)
        if domain != "*":
            if domain.startswith("."):
                raise ConfigError(f"{where}: {text!r}: write *{domain} for its subdomains, or "
                                  f"{domain[1:]} for the domain itself")
            cls._check_domain(domain, text, where)
        return cls(text, local, domain)

    @staticmethod
    def _check_domain(domain: str, text: str, where: str) -> None:
        if not domain or set(domain) & _BAD_DOMAIN_CHARS or ".." in domain:
            hint = (" — a * may stand only for the whole local part (*@example.com) or for "
                    "leading subdomain labels (*.example.com)") if "*" in domain else ""
            raise ConfigError(f"{where}: {text!r} is not an address pattern{hint}")

    def matches(self, address: str) -> bool:
        a = normalise(address)
        if self.null:
            return a == ""
        if self.local == "*" and self.domain == "*":
            return True
        if not a:
            return False
        local, _, domain = a.rpartition("@") if "@" in a else (a, "", "")
        if self.local != "*" and local != self.local:
            return False
        if self.domain == "*":
            return True
        if self.domain.startswith("."):
            return domain.endswith(self.domain)
        return domain == self.domain

    def covers(self, other: Pattern) -> bool:
        """True if every address `other` matches, this one matches too."""
        if self.local == "*" and self.domain == "*" and not self.null:
            return True
        if self.null or other.null:
            return self.null and other.null
        if self.local != "*" and self.local != other.local:
            return False
        if self.domain == "*":
            return True
        if other.domain == "*":
            return False
        if self.domain.startswith("."):
            d = other.domain
            return d.endswith(self.domain) or d == self.domain
        return other.domain == self.domain


def _patterns(value: Any, where: str) -> tuple[Pattern, ...]:
    if isinstance(value, str):
        value = [value]     # one pattern is fine without the brackets
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a list of address patterns, "
                          f"e.g. [\"*@example.com\"], got {value!r}")
    return tuple(Pattern.parse(v, where) for v in value)


def _covers_all(a: tuple[Pattern, ...], b: tuple[Pattern, ...]) -> bool:
    """Every address that some pattern of b matches, a matches too (empty = anyone)."""
    if not a or any(p.local == "*" and p.domain == "*" and not p.null for p in a):
        return True
    if not b:
        return False
    return all(any(pa.covers(pb) for pa in a) for pb in b)


def _action(verdict: str, value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in ACTIONS:
        raise ConfigError(f"{where}: {verdict} = {value!r}: the action must be one of "
                          f"{', '.join(ALLOWED[verdict])}"
                          f"{_suggest(value, ACTIONS) if isinstance(value, str) else ''}")
    if value not in ALLOWED[verdict]:
        raise ConfigError(f"{where}: {verdict} = {value!r}: {_WHY_NOT[value]}; use one of "
                          f"{', '.join(ALLOWED[verdict])}")
    return value


@dataclass(frozen=True)
class Rule:
    number: int             # 1-based, in file order
    name: str
    senders: tuple[Pattern, ...]        # empty: any sender
    recipients: tuple[Pattern, ...]     # empty: any recipient
    actions: dict[str, str] = field(hash=False)

    @property
    def label(self) -> str:
        return f"rule #{self.number}" + (f" ({self.name})" if self.name else "")

    def matches(self, sender: str, recipient: str) -> bool:
        return ((not self.senders or any(p.matches(sender) for p in self.senders)) and
                (not self.recipients or any(p.matches(recipient) for p in self.recipients)))

    def shadowed_by(self, earlier: Rule) -> bool:
        """Whoever this rule matches, `earlier` matches too."""
        return (_covers_all(earlier.senders, self.senders) and
                _covers_all(earlier.recipients, self.recipients))


@dataclass(frozen=True)
class Decision:
    verdict: str
    action: str
    rule: Rule | None       # None: the default

    @property
    def source(self) -> str:
        return self.rule.label if self.rule else "default"


@dataclass
class Group:
    """Recipients of one message that get the same action."""

    action: str
    recipients: list[str]
    sources: list[str]      # which rules decided (for logs)


class Policy:
    def __init__(self, default: dict[str, str], rules: list[Rule]) -> None:
        self.default = default
        self.rules = rules

    @classmethod
    def from_table(cls, table: Any, on_max_attempts: str = "quarantine") -> Policy:
        """Read a [policy] table; raises ConfigError naming the key that is wrong."""
        if not isinstance(table, dict):
            raise ConfigError("[policy] must be a table")
        default = dict(DEFAULTS, error=on_max_attempts)
        for key, value in table.items():
            if key == "rules":
                continue
            if key not in VERDICTS:
                raise ConfigError(f"[policy]: unknown key {key!r}{_suggest(key, VERDICTS)}; "
                                  f"known: {', '.join((*VERDICTS, 'rules'))}")
            default[key] = _action(key, value, "[policy]")
        if "error" in table and on_max_attempts == "hold" and table["error"] != "hold":
            raise ConfigError(f"[policy] error = {table['error']!r} and [dispatcher] "
                              "on_max_attempts = 'hold' disagree; set error in [policy] only")
        raw_rules = table.get("rules", [])
        if isinstance(raw_rules, dict):
            raise ConfigError("[policy] rules: write each rule as its own [[policy.rules]] "
                              "table (two brackets)")
        if not isinstance(raw_rules, list):
            raise ConfigError("[policy] rules must be a list of [[policy.rules]] tables")
        rules = [cls._rule(i, r) for i, r in enumerate(raw_rules, 1)]
        return cls(default, rules)

    @staticmethod
    def _rule(number: int, raw: Any) -> Rule:
        where = f"[[policy.rules]] #{number}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table")
        name = raw.get("name", "")
        if not isinstance(name, str):
            raise ConfigError(f"{where}: name must be a string")
        if name:
            where += f" ({name})"
        for key in raw:
            if key not in _RULE_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r}{_suggest(key, _RULE_KEYS)}; "
                                  f"known: {', '.join(_RULE_KEYS)}")
        if "senders" not in raw and "recipients" not in raw:
            raise ConfigError(f"{where} names no senders and no recipients; to change what "
                              "happens to everyone, set the action in [policy] itself")
        senders = _patterns(raw["senders"], f"{where} senders") if "senders" in raw else ()
        recipients = (_patterns(raw["recipients"], f"{where} recipients")
                      if "recipients" in raw else ())
        actions = {v: _action(v, raw[v], where) for v in VERDICTS if v in raw}
        if not actions:
            raise ConfigError(f"{where} sets no action; give at least one of "
                              f"{', '.join(VERDICTS)}")
        return Rule(number, name, senders, recipients, actions)

    @classmethod
    def from_config(cls, cfg: Config) -> Policy:
        return cls.from_table(cfg.policy, cfg.dispatcher.on_max_attempts)

    # -- deciding ---------------------------------------------------------------------
    def decide(self, sender: str, recipient: str, verdict: str) -> Decision:
        if verdict not in VERDICTS:
            return Decision(verdict, "deliver", None)       # clean: not a policy matter
        for rule in self.rules:
            if verdict in rule.actions and rule.matches(sender, recipient):
                return Decision(verdict, rule.actions[verdict], rule)
        if verdict not in self.default:         # spam_high set nowhere: as spam
            d = self.decide(sender, recipient, "spam")
            return Decision(verdict, d.action, d.rule)
        return Decision(verdict, self.default[verdict], None)

    def groups(self, sender: str, recipients: list[str], verdict: str) -> list[Group]:
        """The recipients by action, in the order the actions first appear."""
        by_action: dict[str, Group] = {}
        for r in recipients:
            d = self.decide(sender, r, verdict)
            g = by_action.setdefault(d.action, Group(d.action, [], []))
            g.recipients.append(r)
            if d.source not in g.sources:
                g.sources.append(d.source)
        return list(by_action.values())

    # -- explaining ---------------------------------------------------------------------
    def explain(self, sender: str, recipient: str) -> list[Decision]:
        return [self.decide(sender, recipient, v) for v in VERDICTS]

    def matching_rules(self, sender: str, recipient: str) -> list[Rule]:
        return [r for r in self.rules if r.matches(sender, recipient)]

    def dead_settings(self) -> list[str]:
        """Rule settings that can never apply: an earlier rule that sets the same verdict
        matches everyone the later one matches. Each one is a mistake in the file."""
        out = []
        for i, later in enumerate(self.rules):
            for verdict in later.actions:
                for earlier in self.rules[:i]:
                    if verdict in earlier.actions and later.shadowed_by(earlier):
                        out.append(f"{later.label}: {verdict} never applies, because "
                                   f"{earlier.label} sets {verdict} for everyone it matches; "
                                   "move the narrower rule first")
                        break
        return out

    def describe(self) -> str:
        d = ", ".join(f"{v} {self.default[v]}" for v in VERDICTS if v in self.default)
        return f"{len(self.rules)} rule(s); default: {d}"


def policy_verdict(v: Verdict) -> str:
    """The policy's key for a verdict: the verdict, or spam_high for high-scoring spam."""
    return "spam_high" if v.verdict == "spam" and v.spam_high else v.verdict


def subject_tag(subject_tags: dict[str, str], verdict: str) -> str:
    """The Subject prefix deliver-tagged adds: [headers] subject_tags, else the built-in one."""
    for key in (verdict, "spam") if verdict == "spam_high" else (verdict,):
        if key in subject_tags:
            return subject_tags[key]
    return DEFAULT_SUBJECT_TAGS.get(verdict, "")
