"""Strip plans: findings pinned to MIME parts, and a plan only when the rest scans clean.

Against the real clamd: the plan's SHA-256 must be that of the bytes the
dispatcher builds with shared.mimeparts, and those bytes must scan clean.
"""

from __future__ import annotations

import pytest

from holdscan.lab.clamd import DETECTED_AS
from shared import mimeparts
from shared.contract import ContractError, Verdict
from tests.support.mail import EICAR, HEADERS, PE, multipart, part, simple, zip_bytes
from tests.support.scanning import Scan

pytestmark = pytest.mark.clamd

TEXT = part(b"Hello, the report is attached.\r\n", "text/plain", encoding="7bit")


def rebuilt(raw: bytes, v: Verdict) -> bytes:
    """What the dispatcher delivers for a strip plan."""
    plan = v.strip
    assert plan is not None
    data = mimeparts.strip(raw, {p.part: p.note for p in plan.parts})
    assert mimeparts.sha256(data) == plan.sha256
    return data


def test_eicar_attachment_is_pinned_and_strippable(scan: Scan) -> None:
    raw = multipart(TEXT, part(EICAR, name="eicar.com.txt"))
    v = scan(raw)
    assert v.verdict == "infected"
    assert [(f.scanner, f.detail, f.part) for f in v.findings if f.verdict != "clean"] == \
        [("clamav", DETECTED_AS, "2")]
    stripped = rebuilt(raw, v)
    assert EICAR not in stripped and b"RUlDQVI" not in stripped      # nor its base64
    assert b"Hello, the report is attached." in stripped
    assert f'"eicar.com.txt" (application/octet-stream): clamav: {DETECTED_AS}'.encode() \
        in stripped
    assert scan(stripped).verdict == "clean"
    assert stripped.startswith(HEADERS)          # the header section is untouched


def test_blocked_exe_and_a_zip_with_one_are_stripped_together(scan: Scan) -> None:
    raw = multipart(TEXT, part(PE, "application/pdf", "report.pdf"),
                    part(zip_bytes({"setup.exe": b"x"}), "application/zip", "files.zip"),
                    part(b"%PDF-1.4 fine\r\n", "application/pdf", "fine.pdf"))
    v = scan(raw)
    assert v.verdict == "blocked"
    assert sorted({f.part for f in v.findings if f.verdict == "blocked"}) == ["2", "3"]
    stripped = rebuilt(raw, v)
    assert scan(stripped).verdict == "clean"
    assert b"fine.pdf" in stripped and b"files.zip" in stripped  # named in the note
    assert b"setup.exe" not in stripped.split(b"holdscan removed")[0]


def test_nested_part_in_a_forwarded_message(scan: Scan) -> None:
    inner = multipart(TEXT, part(EICAR, name="e.com"), boundary="inner")
    raw = multipart(TEXT, b"Content-Type: message/rfc822\r\n\r\n" + inner)
    v = scan(raw)
    assert v.verdict == "infected"
    paths = {f.part for f in v.findings if f.verdict == "infected"}
    assert paths == {"2.1.2"}
    assert scan(rebuilt(raw, v)).verdict == "clean"


@pytest.mark.parametrize("raw", [
    simple(EICAR),                                               # the body itself
    HEADERS + b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64"
    b"\r\n\r\n" + part(EICAR).split(b"\r\n\r\n", 1)[1],          # one part, the message
], ids=["eicar in the body", "single-part attachment"])
def test_no_plan_when_the_bad_part_is_the_whole_message(scan: Scan, raw: bytes) -> None:
    v = scan(raw)
    assert v.verdict == "infected"
    assert v.strip is None


def test_no_plan_when_the_mime_structure_is_undecidable(scan: Scan) -> None:
    # Two Content-Type headers: readers disagree about the parts, so nothing is pinned safely.
    raw = multipart(TEXT, part(EICAR, name="e.com")).replace(
        b"MIME-Version: 1.0\r\n", b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n", 1)
    v = scan(raw)
    assert v.verdict in ("infected", "unscannable")
    assert v.strip is None


def test_no_plan_for_clean_or_spam_mail(scan: Scan) -> None:
    v = scan(multipart(TEXT))
    assert v.verdict == "clean" and v.strip is None


def test_plan_survives_the_contract_and_bad_plans_are_refused(scan: Scan) -> None:
    raw = multipart(TEXT, part(EICAR, name="eicar.com.txt"))
    v = scan(raw)
    again = Verdict.from_dict(v.to_dict())
    assert again.strip == v.strip and again.strip is not None
    assert [f.part for f in again.findings] == [f.part for f in v.findings]
    for bad in ({"parts": [{"part": "0", "note": "x"}], "sha256": "a" * 64},
                {"parts": [{"part": "1/../2", "note": "x"}], "sha256": "a" * 64},
                {"parts": [], "sha256": "a" * 64},
                {"parts": [{"part": "2", "note": "x"}], "sha256": "A" * 64}):
        d = v.to_dict()
        d["strip"] = bad
        with pytest.raises(ContractError):
            Verdict.from_dict(d)
    d = v.to_dict()
    d["findings"][0]["part"] = "2; rm -rf"
    with pytest.raises(ContractError, match="not a MIME part path"):
        Verdict.from_dict(d)


def test_strip_refuses_what_it_cannot_remove() -> None:
    raw = multipart(TEXT, part(b"x", name="a.exe"))
    with pytest.raises(mimeparts.StripError):
        mimeparts.strip(raw, {"": "whole"})
    with pytest.raises(mimeparts.StripError):
        mimeparts.strip(raw, {"3": "no such part"})
    nested = multipart(TEXT, b'Content-Type: multipart/mixed; boundary="in"\r\n\r\n--in\r\n'
                       + TEXT + b"\r\n--in--")
    with pytest.raises(mimeparts.StripError, match="not a leaf"):
        mimeparts.strip(nested, {"2": "container"})
    assert mimeparts.strip(nested, {"2.1": "inner"}).count(b"--in") == 2
