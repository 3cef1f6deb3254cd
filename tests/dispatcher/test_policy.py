"""Policy matching: patterns, rule order, per-verdict fall-through, and errors that name the key."""

from __future__ import annotations

import tomllib

import pytest

from dispatcher.policy import DEFAULTS, Pattern, Policy
from shared.config import ConfigError


def policy(text: str, on_max_attempts: str = "quarantine") -> Policy:
    return Policy.from_table(tomllib.loads(text).get("policy", {}), on_max_attempts)


@pytest.mark.parametrize(("pattern", "yes", "no"), [
    ("user@example.com", ["user@example.com", "USER@Example.COM", "<user@example.com>"],
     ["other@example.com", "user@sub.example.com", "user@example.com.evil", ""]),
    ("*@example.com", ["a@example.com", "b@EXAMPLE.com"],
     ["a@sub.example.com", "a@evilexample.com", "a@example.org", ""]),
    ("example.com", ["a@example.com"], ["a@sub.example.com", "a@xexample.com"]),
    ("@example.com", ["a@example.com"], ["a@sub.example.com"]),
    ("*.example.com", ["a@sub.example.com", "a@x.y.example.com"],
     ["a@example.com", "a@evilexample.com", "a@sub.example.com.evil"]),
    ("*@*.example.com", ["a@sub.example.com"], ["a@example.com"]),
    ("postmaster@*", ["postmaster@a.test", "postmaster@b.test"], ["root@a.test", ""]),
    ("*", ["a@b.c", "", "root"], []),
    ("<>", [""], ["a@b.c"]),
])
def test_pattern_matches_what_it_says_and_nothing_more(pattern: str, yes: list[str],
                                                      no: list[str]) -> None:
    p = Pattern.parse(pattern, "t")
    for a in yes:
        assert p.matches(a), (pattern, a)
    for a in no:
        assert not p.matches(a), (pattern, a)


@pytest.mark.parametrize(("pattern", "message"), [
    ("*example.com", "a * may stand only for"),
    ("us*r@example.com", "only for the whole local part"),
    ("a@ex*ample.com", "not an address pattern"),
    (".example.com", "write *.example.com for its subdomains"),
    ("", "empty address pattern"),
    ("a b@example.com", "white space"),
    ("a@exa mple.com", "white space"),
    ("a@example..com", "not an address pattern"),
])
def test_bad_patterns_are_refused_with_the_reason(pattern: str, message: str) -> None:
    with pytest.raises(ConfigError, match="recipients") as e:
        policy(f'[policy]\n[[policy.rules]]\nrecipients = ["{pattern}"]\ninfected = "strip"\n')
    assert message in str(e.value)
    assert "[[policy.rules]] #1" in str(e.value)


def test_defaults_are_todays_behaviour() -> None:
    p = Policy.from_table({})
    assert p.default == DEFAULTS == {"infected": "quarantine", "blocked": "quarantine",
                                     "spam": "deliver-tagged", "unscannable": "quarantine",
                                     "error": "quarantine"}
    assert p.decide("a@b.c", "d@e.f", "clean").action == "deliver"
    assert Policy.from_table({}, on_max_attempts="hold").default["error"] == "hold"


RULES = """
[policy]
spam = "quarantine"

[[policy.rules]]
name = "the boss"
recipients = "boss@example.com"
spam = "deliver"

[[policy.rules]]
name = "example.com strips"
recipients = ["example.com", "*.example.com"]
infected = "strip"
blocked = "strip"

[[policy.rules]]
name = "bounces"
senders = ["<>"]
recipients = ["*@example.org"]
infected = "discard"
"""


def test_first_rule_that_sets_the_verdict_decides_then_the_default() -> None:
    p = policy(RULES)
    # The boss's rule says nothing about infected: the next matching rule does.
    d = p.decide("x@outside.test", "boss@example.com", "infected")
    assert (d.action, d.source) == ("strip", "rule #2 (example.com strips)")
    d = p.decide("x@outside.test", "boss@example.com", "spam")
    assert (d.action, d.source) == ("deliver", "rule #1 (the boss)")
    d = p.decide("x@outside.test", "someone@example.com", "spam")
    assert (d.action, d.source) == ("quarantine", "default")
    assert p.decide("x@outside.test", "a@mx.example.com", "blocked").action == "strip"
    assert p.decide("x@outside.test", "a@example.net", "infected").action == "quarantine"
    # Sender and recipient must both match.
    assert p.decide("", "a@example.org", "infected").action == "discard"
    assert p.decide("x@outside.test", "a@example.org", "infected").action == "quarantine"


def test_recipients_are_grouped_by_action() -> None:
    p = policy(RULES)
    groups = p.groups("x@outside.test", ["a@example.com", "b@example.net", "c@sub.example.com",
                                         "d@example.net"], "infected")
    assert [(g.action, g.recipients) for g in groups] == [
        ("strip", ["a@example.com", "c@sub.example.com"]),
        ("quarantine", ["b@example.net", "d@example.net"])]
    assert groups[0].sources == ["rule #2 (example.com strips)"]


@pytest.mark.parametrize(("text", "message"), [
    ('[policy]\ninfectd = "strip"', "unknown key 'infectd' (did you mean 'infected'?)"),
    ('[policy]\nspam = "strip"', "spam = 'strip': strip removes the parts"),
    ('[policy]\ninfected = "deliver_tagged"', "(did you mean 'deliver-tagged'?)"),
    ('[policy]\ninfected = "hold"', "hold (leave it in the hold queue for a human) is for error"),
    ('[policy]\nunscannable = "strip"', "unscannable = 'strip'"),
    ('[policy]\ninfected = 1', "infected = 1: the action must be one of"),
    ('[policy.rules]\nrecipients = ["a@b.c"]', "each rule as its own [[policy.rules]]"),
    ('[[policy.rules]]\ninfected = "strip"', "#1 names no senders and no recipients"),
    ('[[policy.rules]]\nrecipients = ["a@b.c"]', "#1 sets no action"),
    ('[[policy.rules]]\nname = "x"\nrecipient = ["a@b.c"]\ninfected = "strip"',
     "#1 (x): unknown key 'recipient' (did you mean 'recipients'?)"),
    ('[[policy.rules]]\nrecipients = []\ninfected = "strip"', "must be a list of address"),
    ('[[policy.rules]]\nrecipients = ["a@b.c"]\nspam = "strip"', "#1: spam = 'strip'"),
])
def test_errors_name_the_key_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        policy(text)
    assert message in str(e.value)


def test_error_policy_and_on_max_attempts_must_agree() -> None:
    with pytest.raises(ConfigError, match="disagree"):
        policy('[policy]\nerror = "quarantine"', on_max_attempts="hold")
    assert policy('[policy]\nerror = "deliver"').default["error"] == "deliver"


def test_a_rule_hidden_behind_a_broader_one_is_reported() -> None:
    p = policy("""
[[policy.rules]]
recipients = ["*@example.com"]
infected = "strip"
[[policy.rules]]
name = "never"
recipients = ["boss@example.com"]
infected = "deliver"
spam = "deliver"
[[policy.rules]]
recipients = ["*.example.com"]
infected = "discard"
[[policy.rules]]
senders = ["*"]
recipients = ["a@x.example.com"]
infected = "deliver"
""")
    dead = p.dead_settings()
    assert dead == ["rule #2 (never): infected never applies, because rule #1 sets infected "
                    "for everyone it matches; move the narrower rule first",
                    "rule #4: infected never applies, because rule #3 sets infected for "
                    "everyone it matches; move the narrower rule first"]


def test_explain_lists_every_verdict_with_its_source() -> None:
    p = policy(RULES)
    got = [(d.verdict, d.action, d.source) for d in p.explain("x@o.test", "boss@example.com")]
    assert got == [("infected", "strip", "rule #2 (example.com strips)"),
                   ("blocked", "strip", "rule #2 (example.com strips)"),
                   ("spam", "deliver", "rule #1 (the boss)"),
                   ("spam_high", "deliver", "rule #1 (the boss)"),
                   ("unscannable", "quarantine", "default"),
                   ("error", "quarantine", "default")]


def test_high_scoring_spam_follows_spam_unless_set() -> None:
    p = policy(RULES + """
[[policy.rules]]
recipients = ["careful@example.net"]
spam_high = "discard"
""")
    assert p.decide("x@o.test", "boss@example.com", "spam_high").action == "deliver"
    assert p.decide("x@o.test", "a@example.net", "spam_high").action == "quarantine"
    assert p.decide("x@o.test", "careful@example.net", "spam_high").action == "discard"
    p = policy('[policy]\nspam_high = "quarantine"\n' + RULES.replace("[policy]\n", ""))
    # Set in the default: that default wins over a rule that only sets spam.
    assert p.decide("x@o.test", "boss@example.com", "spam_high").action == "quarantine"
    assert p.decide("x@o.test", "boss@example.com", "spam").action == "deliver"


def test_holdscan_policy_explain(tmp_path) -> None:  # noqa: ANN001
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cfg = tmp_path / "holdscan.toml"
    cfg.write_text(RULES)

    def explain(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "holdscan.cli", "policy", "explain",
                               "--config", str(cfg), *args], capture_output=True, text=True,
                              cwd=root, timeout=60)

    p = explain("x@outside.test", "boss@example.com")
    assert p.returncode == 0, p.stderr
    assert "matching rules: rule #1 (the boss), rule #2 (example.com strips)" in p.stdout
    assert "  infected     strip           rule #2 (example.com strips)" in p.stdout
    assert "  spam         deliver         rule #1 (the boss)" in p.stdout
    p = explain("--json", "<>", "a@example.org")
    assert json.loads(p.stdout)["actions"]["infected"] == {"action": "discard",
                                                            "from": "rule #3 (bounces)"}
    cfg.write_text('[policy]\nspam = "strip"\n')
    p = explain("a@b.c", "d@e.f")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == ("holdscan: [policy]: spam = 'strip': strip removes the parts that "
                        "made a message infected or blocked; there is no such part for this "
                        "verdict; use one of deliver, deliver-tagged, quarantine, discard\n")
