"""The task contract (shared/contract.py): what each side accepts, and what it refuses."""

from __future__ import annotations

import pytest

from shared.contract import (
    CONTRACT_VERSION,
    ContractError,
    Finding,
    StripPart,
    StripPlan,
    Verdict,
    worst_verdict,
)

SHA = "ab" * 32


def spam_verdict(**kw: object) -> Verdict:
    fields: dict = {"queue_id": "4XyZ1", "attempt": 2, "verdict": "spam",
                    "findings": [Finding("spamassassin", "spam", "high score 31.0 >= 15.0")],
                    "sha256": SHA, "spam_high": True, "extra": {"spam_score": 31.0}}
    fields.update(kw)
    return Verdict(**fields)


def test_typed_fields_survive_the_trip() -> None:
    v = spam_verdict()
    again = Verdict.from_dict(v.to_dict())
    assert again == v and again.spam_high is True and again.strip is None
    stripped = Verdict(queue_id="4XyZ1", attempt=1, verdict="infected", sha256=SHA,
                       findings=[Finding("clamav", "infected", "Eicar", part="2")],
                       strip=StripPlan((StripPart("2", "removed: eicar.com"),), SHA))
    assert Verdict.from_dict(stripped.to_dict()).strip == stripped.strip


def test_a_verdict_of_the_previous_contract_is_refused_with_what_to_do() -> None:
    old = {"v": 2, "queue_id": "4XyZ1", "attempt": 1, "action": "clean", "findings": [],
           "header_edits": [], "scan_times": {}, "worker": "w", "extra": {}, "inode": 1,
           "sha256": SHA, "error_kind": ""}
    with pytest.raises(ContractError, match=r"version 2, this side speaks 3.*same holdscan "
                                            r"version on the dispatcher and the workers"):
        Verdict.from_dict(old)
    assert CONTRACT_VERSION == 3


@pytest.mark.parametrize(("change", "error"), [
    ({"spam_high": "yes"}, "'spam_high' must be true or false"),
    ({"verdict": "infected", "spam_high": True}, "only a spam verdict can be spam_high"),
    ({"verdict": "quarantine"}, "unknown verdict 'quarantine'"),
    ({"strip": {"parts": [], "sha256": SHA}}, "'strip.parts' must be a non-empty list"),
    ({"strip": {"parts": [{"part": "2", "note": "x"}], "sha256": "x"}}, "'sha256' must be"),
])
def test_malformed_typed_fields_are_refused(change: dict, error: str) -> None:
    d = spam_verdict().to_dict() | change
    with pytest.raises(ContractError, match=error):
        Verdict.from_dict(d)


def test_a_policy_action_is_not_a_finding_verdict() -> None:
    d = spam_verdict().to_dict()
    d["findings"][0]["verdict"] = "deliver"
    with pytest.raises(ContractError, match="unknown finding verdict 'deliver'"):
        Verdict.from_dict(d)


def test_worst_verdict_wins() -> None:
    assert worst_verdict([]) == "clean"
    assert worst_verdict(["spam", "infected", "clean"]) == "infected"
    assert worst_verdict(["blocked", "error"]) == "error"
