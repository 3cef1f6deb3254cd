"""Every other source of HOLD in Postfix's configuration, for `holdscan check`.

holdscan releases every message in hold that it scans, except mail that carries
Postfix's per-message logs (defer/, bounce/, trace/), which was queued before
and parked on purpose. Mail that another HOLD rule parks as it arrives has no
such logs: it is new mail, and holdscan scans and releases it like any other,
so that rule no longer keeps anything in hold. This module finds those rules,
so that `holdscan check` can warn about each one:

* HOLD actions in cleanup's content checks (header_checks, mime_header_checks,
  nested_header_checks, body_checks), in main.cf and in master.cf `-o`
  overrides of cleanup services;
* access tables (check_*_access type:table) in smtpd restriction lists and
  restriction classes, main.cf and `-o` overrides of smtpd services, whose
  results include HOLD; policy services, which may answer HOLD;
* milter_default_action = quarantine (also a milter's own default_action), and
  milters, which may quarantine a message.

Tables are read as text where Postfix keeps them as text (regexp:, pcre:,
cidr:, texthash:, inline:, static:, and the source file next to a hash:,
btree:, lmdb:, cdb:, dbm: or sdbm: database); a table it cannot read is
reported as such. holdscan's own rule (`/^Received:/ HOLD`, see
deploy/postfix/holdscan_hold_checks) is not another source.

Everything here is pure: it gets Postfix's parameters as dictionaries and a
function that reads a file, so the parsing is tested without a Postfix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

__all__ = ["Finding", "find_hold_sources", "hold_lines", "split_list", "table_rules",
           "is_holdscan_rule", "CONTENT_CHECKS", "RESTRICTION_LISTS"]

CONTENT_CHECKS = ("header_checks", "mime_header_checks", "nested_header_checks", "body_checks")
RESTRICTION_LISTS = ("smtpd_client_restrictions", "smtpd_helo_restrictions",
                     "smtpd_sender_restrictions", "smtpd_relay_restrictions",
                     "smtpd_recipient_restrictions", "smtpd_data_restrictions",
                     "smtpd_end_of_data_restrictions")
MILTER_LISTS = ("smtpd_milters", "non_smtpd_milters")

PARK_INSTEAD = 'to park mail for a human while holdscan runs, use "holdscan park ID" instead'
RELEASED = "holdscan will scan and release it like new mail"

# Table types whose database is built from a text file of the same name.
_INDEXED = frozenset({"hash", "btree", "lmdb", "cdb", "dbm", "sdbm"})
# Table types that are a text file as they stand: patterns, or "key value" lines.
_PATTERN = frozenset({"regexp", "pcre"})
_KEYED_TEXT = frozenset({"texthash", "cidr"})
# Tables made of other tables, or of values.
_COMPOSITE = frozenset({"unionmap", "pipemap"})

_ACCESS_RE = re.compile(r"check_[a-z_]+_access")
_HOLD_RE = re.compile(r"hold(\s|$)", re.IGNORECASE)
# holdscan's own rule: /^Received:/ HOLD (any delimiter-free flags, any text after HOLD).
_HOLDSCAN_PATTERN = "^Received:"


@dataclass(frozen=True)
class Finding:
    """One other source of HOLD: what it is (message) and what holdscan does (fix)."""

    message: str
    fix: str


# -- Postfix's syntax -----------------------------------------------------------------------

def split_list(value: str) -> list[str]:
    """A Postfix list (restrictions, tables, milters): items separated by blanks or
    commas, where a { ... } group is one item (braces kept)."""
    items: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        if depth == 0 and (ch.isspace() or ch == ","):
            if cur:
                items.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        items.append("".join(cur))
    return items


def _unbrace(text: str) -> str:
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        return text[1:-1].strip()
    return text


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, logical line) of a Postfix table file, as Postfix reads one:
    a line that starts with a blank continues the one before; empty lines and lines
    whose first non-blank character is # are skipped."""
    current: tuple[int, str] | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[:1].isspace() and current is not None:
            current = (current[0], current[1] + " " + stripped)
            continue
        if current is not None:
            yield current
        current = (n, stripped)
    if current is not None:
        yield current


def _pattern_rule(line: str) -> tuple[str, str] | None:
    """Split "/pattern/flags result" (or !/pattern/) into (pattern, result); None for
    if/endif lines and for what is no rule."""
    s = line.lstrip()
    word = s.split(None, 1)[0].lower() if s else ""
    if word == "endif":
        return None
    if word == "if":
        return None
    if s.startswith("!"):
        s = s[1:].lstrip()
    if not s:
        return None
    delim = s[0]
    i = 1
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        if s[i] == delim:
            break
        i += 1
    if i >= len(s):
        return None
    pattern = s[1:i]
    rest = s[i + 1:]
    rest = rest.lstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return pattern, rest.strip()


def is_holdscan_rule(kind: str, line: str) -> bool:
    """Is this holdscan's own `/^Received:/ HOLD` (deploy/postfix/holdscan_hold_checks)?"""
    if kind not in _PATTERN:
        return False
    rule = _pattern_rule(line)
    return rule is not None and rule[0] == _HOLDSCAN_PATTERN and bool(_HOLD_RE.match(rule[1]))


def _results(kind: str, text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, rule, result) of every rule in a table file."""
    for n, line in logical_lines(text):
        if kind in _PATTERN:
            rule = _pattern_rule(line)
            if rule is None:
                continue
            result = rule[1]
        else:
            parts = line.split(None, 1)
            result = parts[1] if len(parts) > 1 else ""
        yield n, line, result


def hold_lines(kind: str, text: str) -> list[tuple[int, str]]:
    """(line number, rule) of every rule in a table file whose result is HOLD.

    kind: a table type, "regexp"/"pcre" for pattern tables; any other means
    "key value" lines.
    """
    return [(n, line) for n, line, result in _results(kind, text) if _HOLD_RE.match(result)]


def _inline_values(spec: str) -> list[str]:
    """The values of inline:{ key=value, { key = value } }."""
    values = []
    for item in split_list(_unbrace(spec)):
        item = _unbrace(item)
        _, sep, value = item.partition("=")
        if sep:
            values.append(value.strip())
    return values


@dataclass(frozen=True)
class TableRules:
    """What one table holds: rules that answer HOLD, and what could not be read."""

    holds: list[tuple[str, int | None, str]]   # (table, line number or None, rule)
    unreadable: list[tuple[str, str]]          # (table, why)
    results: list[str]                         # every result read (for nested lists)


def table_rules(table: str, read: Callable[[str], str],
                dump: Callable[[str], str | None] = lambda _t: None,
                skip_holdscan: bool = False) -> TableRules:
    """Read one type:name table and find its HOLD results.

    read(path) returns a file's text or raises OSError; dump(table) returns
    "key value" lines for an indexed table (postmap -s), or None. Line numbers
    are those of the table's file (for hash: and the like, its source file).
    """
    out = TableRules([], [], [])
    spec = table.strip()
    while spec.startswith("proxy:"):
        spec = spec[len("proxy:"):]
    kind, sep, name = spec.partition(":")
    kind = kind.lower()

    def value(v: str) -> None:
        out.results.append(v)
        if _HOLD_RE.match(v):
            out.holds.append((spec, None, v))

    if not sep:
        out.unreadable.append((table, "not a type:name table"))
    elif kind == "static":
        value(_unbrace(name))
    elif kind == "inline":
        for v in _inline_values(name):
            value(v)
    elif kind == "randmap":
        for v in split_list(_unbrace(name)):
            value(v)
    elif kind in _COMPOSITE:
        for inner in split_list(_unbrace(name)):
            sub = table_rules(inner, read, dump, skip_holdscan)
            out.holds.extend(sub.holds)
            out.unreadable.extend(sub.unreadable)
            out.results.extend(sub.results)
    elif kind in _PATTERN or kind in _KEYED_TEXT or kind in _INDEXED:
        numbered = True
        try:
            text = read(name)
        except OSError as e:
            dumped = dump(spec) if kind in _INDEXED else None
            if dumped is None:
                out.unreadable.append((spec, f"{name}: {e.strerror or e}"))
                return out
            text, numbered = dumped, False
        for n, line, result in _results(kind, text):
            out.results.append(result)
            if _HOLD_RE.match(result) and not (skip_holdscan and is_holdscan_rule(kind, line)):
                out.holds.append((spec, n if numbered else None, line))
    else:
        out.unreadable.append((spec, f"holdscan cannot read {kind}: tables"))
    return out


# -- the sources ------------------------------------------------------------------------------

def _rule_text(table: str, n: int | None, rule: str) -> str:
    shown = rule if len(rule) <= 120 else rule[:117] + "..."
    return f'{table}{f" line {n}" if n else ""} "{shown}"'


@dataclass
class _Search:
    read: Callable[[str], str]
    dump: Callable[[str], str | None]
    findings: list[Finding]
    seen: set[tuple[str, ...]]

    def add(self, key: tuple[str, ...], finding: Finding) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.findings.append(finding)

    def content_checks(self, where: str, params: Mapping[str, str]) -> None:
        for param in CONTENT_CHECKS:
            for table in split_list(params.get(param, "")):
                self.report(f"{where}{param}",
                            table_rules(table, self.read, self.dump, skip_holdscan=True))

    def report(self, source: str, rules: TableRules) -> None:
        """One finding per HOLD rule of a table, and one per table that cannot be read."""
        for t, n, rule in rules.holds:
            self.add(("rule", t, str(n), rule), Finding(
                f"{source} {_rule_text(t, n, rule)} also parks mail in hold",
                f"{RELEASED}; {PARK_INSTEAD}"))
        for t, why in rules.unreadable:
            self.add(("table", t), Finding(
                f"cannot read {source} {t} to see whether it answers HOLD ({why})",
                f"if it does, {RELEASED}; {PARK_INSTEAD}"))

    def restrictions(self, where: str, param: str, value: str, depth: int = 0) -> None:
        items = split_list(value)
        for i, item in enumerate(items):
            if _ACCESS_RE.fullmatch(item) and i + 1 < len(items):
                self.access_table(where, param, item, items[i + 1], depth)
            elif item == "check_policy_service" and i + 1 < len(items):
                service = items[i + 1]
                self.add(("policy", service), Finding(
                    f"{where}{param} check_policy_service {service} may answer HOLD, which "
                    "parks mail in hold; holdscan cannot see whether it does",
                    f"if it does, {RELEASED}; {PARK_INSTEAD}"))

    def access_table(self, where: str, param: str, check: str, table: str, depth: int) -> None:
        rules = table_rules(table, self.read, self.dump)
        self.report(f"{where}{param} {check}", rules)
        if depth < 3:
            # A result may itself be a restriction list with more access tables.
            for result in rules.results:
                if "check_" in result:
                    self.restrictions(where, param, result, depth + 1)

    def milters(self, where: str, params: Mapping[str, str]) -> None:
        if params.get("milter_default_action", "").strip().lower() == "quarantine":
            self.add(("milter_default_action", where), Finding(
                f"{where}milter_default_action = quarantine parks mail in hold when a milter "
                "fails", f"{RELEASED}, as if the milter had accepted it; set "
                "milter_default_action = tempfail to have mail wait for the milter instead"))
        for param in MILTER_LISTS:
            for milter in split_list(params.get(param, "")):
                inner = _unbrace(milter)
                name = split_list(inner)[0] if split_list(inner) else inner
                if re.search(r"default_action\s*=\s*quarantine", inner, re.IGNORECASE):
                    self.add(("milter_default_action", where, name), Finding(
                        f"{where}{param} {name} has default_action = quarantine, which parks "
                        "mail in hold when that milter fails",
                        f"{RELEASED}, as if the milter had accepted it; use "
                        "default_action = tempfail instead"))
                self.add(("milter", name), Finding(
                    f"{where}{param} {name} can quarantine mail, which parks it in hold",
                    f"{RELEASED}, whatever the milter wanted; have the milter reject or "
                    "discard such mail instead"))


def find_hold_sources(main: Mapping[str, str],
                      services: Mapping[tuple[str, str], str],
                      overrides: Mapping[tuple[str, str], Mapping[str, str]],
                      read: Callable[[str], str],
                      dump: Callable[[str], str | None] = lambda _t: None) -> list[Finding]:
    """Every other source of HOLD.

    main: `postconf -x` (every parameter, $names expanded); services: master.cf's
    (name, type) -> command; overrides: its `-o` settings per service (`postconf
    -P -x`); read(path): a file's text (raises OSError); dump(table): an indexed
    table's "key value" lines (postmap -s), or None.
    """
    s = _Search(read, dump, [], set())
    s.content_checks("", main)
    classes = split_list(main.get("smtpd_restriction_classes", ""))
    for param in (*RESTRICTION_LISTS, *classes):
        s.restrictions("", param, main.get(param, ""))
    s.milters("", main)
    for (name, type_), ov in sorted(overrides.items()):
        command = services.get((name, type_), "")
        where = f"master.cf {name}/{type_} -o "
        if command == "cleanup":
            s.content_checks(where, {k: v for k, v in ov.items() if k in CONTENT_CHECKS})
        elif command == "smtpd":
            for param in (*RESTRICTION_LISTS, *classes):
                if param in ov:
                    s.restrictions(where, param, ov[param])
            s.milters(where, {k: v for k, v in ov.items()
                              if k in ("milter_default_action", *MILTER_LISTS)})
    return s.findings
