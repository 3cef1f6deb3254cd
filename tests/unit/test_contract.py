"""The task contract (shared/contract.py): what each side accepts, and what it refuses."""

from __future__ import annotations

import pytest

from shared.contract import (
    CONTRACT_VERSION,
    ContractError,
    Finding,
    ScanRequest,
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
    with pytest.raises(ContractError, match=r"version 2, this side speaks 4.*same holdscan "
                                            r"version on the dispatcher and the workers"):
        Verdict.from_dict(old)
    assert CONTRACT_VERSION == 4


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


def request(**kw: object) -> ScanRequest:
    fields: dict = {"queue_id": "4XyZ1", "attempt": 1, "sender": "a@example.com",
                    "recipients": ["b@example.com"], "content_key": "holdscan:msg:mx1:4XyZ1",
                    "size": 10, "reply_to": "holdscan:verdicts:mx1", "submitted_at": 1.0,
                    "sha256": SHA}
    fields.update(kw)
    return ScanRequest(**fields)


def test_a_request_names_its_content_store_and_empty_means_the_default() -> None:
    assert ScanRequest.from_dict(request(store="mx1.example").to_dict()).store == "mx1.example"
    assert ScanRequest.from_dict(request().to_dict()).store == ""


def test_a_request_of_contract_3_is_refused_as_it_would_be_fetched_from_the_wrong_store() -> None:
    old = request().to_dict() | {"v": 3}
    del old["store"]
    with pytest.raises(ContractError, match=r"version 3, this side speaks 4"):
        ScanRequest.from_dict(old)


@pytest.mark.parametrize("store", ["redis://:secret@10.0.0.1:6379/0", "mx1 ", "-mx", "a" * 65])
def test_a_store_that_is_not_a_name_is_refused(store: str) -> None:
    with pytest.raises(ContractError, match="is not a content store name"):
        ScanRequest.from_dict(request().to_dict() | {"store": store})
