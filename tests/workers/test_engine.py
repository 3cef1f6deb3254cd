"""Whole verdicts: every default scanner and a real clamd, through scan_message."""

from __future__ import annotations

import binascii
import random
import resource
import time
import tracemalloc
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import pytest

from holdscan.lab.clamd import DETECTED_AS, ClamdServer
from shared.config import Config, ConfigError, HeadersConfig
from shared.contract import Finding, Verdict
from tests.support.mail import (
    EICAR,
    HEADERS,
    PE,
    b64,
    encrypted_flag,
    multipart,
    nested_bomb,
    overlapping_bomb,
    part,
    simple,
    tar_bytes,
    zip_bytes,
)
from tests.support.scanning import REQUEST, Scan, make_config
from workers.engine import scan_message, status_text
from workers.message import ParsedMessage
from workers.scanners import build_scanners
from workers.scanners.base import Scanner

pytestmark = pytest.mark.clamd


def comparable(v: Verdict) -> dict[str, Any]:
    d = v.to_dict()
    del d["scan_times"], d["worker"]
    return d


# --- blocked ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, rule", [
    (multipart(part(b"hello", "application/pdf", "report.pdf.exe")),
     'double extension .pdf.exe: "report.pdf.exe"'),
    (multipart(part(PE, "application/pdf", "report.pdf")),
     'denied file type pe (Windows executable (PE)): "report.pdf"'),
    (multipart(part(zip_bytes({"setup.exe": b"x"}), "application/zip", "files.zip")),
     'denied extension .exe: "setup.exe" in "files.zip"'),
    (multipart(part(b"hello", "application/octet-stream", "invoice\u202efdp.exe")),
     'invisible or bidi character U+202E in filename: "invoice\\u202efdp.exe"'),
], ids=["double extension", "PE named .pdf", "exe in zip", "RTL override"])
def test_blocked_with_the_rule_that_matched(scan: Scan, raw: bytes, rule: str) -> None:
    verdict = scan(raw)
    assert verdict.verdict == "blocked"
    assert rule in [f.detail for f in verdict.findings if f.verdict == "blocked"]
    assert verdict.header_edits[0].value.startswith("blocked (")


# --- bombs, encryption, size ------------------------------------------------------------

def _measured(scan: Scan, raw: bytes, scanners: list[Scanner] | None = None
              ) -> tuple[Verdict, float, int, int]:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    try:
        verdict = scan(raw, scanners) if scanners else scan(raw)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    return verdict, seconds, peak, rss_growth_kib


@pytest.mark.parametrize("bomb", ["nested", "overlapping"])
def test_zip_bomb_gets_the_configured_outcome_quickly_in_bounded_memory(
        scan: Scan, clamd: ClamdServer, bomb: str) -> None:
    data = nested_bomb(3, 10, 20 << 20) if bomb == "nested" else overlapping_bomb()
    raw = multipart(part(data, "application/zip", "invoice.zip"))
    verdict, seconds, peak, rss_growth = _measured(scan, raw)
    assert verdict.verdict == "unscannable"
    assert [f.scanner for f in verdict.findings] == ["archives"]
    assert seconds < 5.0
    assert peak < 32 << 20, f"peak Python memory {peak} bytes"
    assert rss_growth < 64 << 10, f"max RSS grew by {rss_growth} KiB"

    blocking = build_scanners(make_config(clamd.addresses, archives={"on_limits": "blocked"}))
    assert scan(raw, blocking).verdict == "blocked"


@pytest.mark.parametrize("outcome", ["blocked", "unscannable", "clean"])
def test_encrypted_zip_gets_the_configured_outcome(scan: Scan, clamd: ClamdServer,
                                                   outcome: str) -> None:
    scanners = build_scanners(make_config(clamd.addresses, archives={"on_encrypted": outcome}))
    raw = multipart(part(encrypted_flag(zip_bytes({"payroll.xlsx": b"x" * 500})),
                         "application/zip", "payroll.zip"))
    verdict, seconds, _, _ = _measured(scan, raw, scanners)
    assert verdict.verdict == outcome
    assert seconds < 2.0


def test_message_over_stream_max_length_is_unscannable_with_reason(scan: Scan) -> None:
    verdict = scan(multipart(part(random.Random(3).randbytes(2_200_000), "image/jpeg", "a.jpg")))
    assert verdict.verdict == "unscannable"
    assert verdict.reasons == ["clamav: too large for clamd (StreamMaxLength)"]


# --- malformed MIME: always a verdict, in bounded time ------------------------------------

def _malformed() -> dict[str, bytes]:
    return {
        "missing boundary parameter": HEADERS + b"Content-Type: multipart/mixed\r\n\r\n--x\r\n"
        + part(b"a", "text/plain", encoding="7bit") + b"\r\n--x--\r\n",
        "boundary never used": HEADERS + b'Content-Type: multipart/mixed; boundary="q"\r\n\r\n'
        + b"just text\r\n" * 100,
        "bad base64": multipart(b"Content-Type: application/pdf\r\n"
                                b"Content-Transfer-Encoding: base64\r\n\r\n"
                                + b"@#$%^&*\r\n" * 500),
        "absurd nesting": HEADERS + b"".join(
            b'Content-Type: multipart/mixed; boundary="n%05d"\r\n\r\n--n%05d\r\n' % (i, i)
            for i in range(5000)),
        "10,000 parts": multipart(*[part(b"p%d" % i, "text/plain", encoding="7bit")
                                    for i in range(10_000)]),
        "headers only": HEADERS,
        "empty": b"",
        "binary junk": random.Random(7).randbytes(200_000),
        "endless header line": HEADERS + b"X-Long: " + b"a" * 500_000 + b"\r\n\r\nbody",
    }


@pytest.mark.parametrize("name", list(_malformed()))
def test_malformed_mime_gets_a_verdict_in_bounded_time(scan: Scan, name: str) -> None:
    started = time.perf_counter()
    verdict = scan(_malformed()[name])
    assert time.perf_counter() - started < 3.0
    assert verdict.verdict in ("clean", "unscannable", "blocked")


def test_ten_thousand_parts_are_unscannable(scan: Scan) -> None:
    verdict = scan(_malformed()["10,000 parts"])
    assert verdict.verdict == "unscannable"
    assert verdict.reasons == ["mime: MIME structure undecidable: more than 1000 MIME parts"]


# --- determinism --------------------------------------------------------------------------

def test_same_request_twice_gives_the_same_verdict(scan: Scan) -> None:
    messages = [*_adversarial().values(), *_clean_corpus().values(), *_malformed().values()]
    for raw in messages:
        first, second = scan(raw), scan(raw)
        assert comparable(first) == comparable(second)


# --- adversarial MIME: never clean --------------------------------------------------------

def _att(headers: str, body: bytes) -> bytes:
    return headers.encode() + b"\r\n\r\n" + body


def _adversarial() -> dict[str, bytes]:
    enc = b64(EICAR).replace(b"\r\n", b"")
    top = b"Received: by mx\r\nFrom: a@example.test\r\nMIME-Version: 1.0\r\n"
    pe_part = part(PE, "application/octet-stream", "invoice.pdf")
    uu = b"".join(binascii.b2a_uu(PE[i:i + 45]) for i in range(0, len(PE), 45))
    return {
        "duplicate Content-Type": top + b"Content-Type: text/plain\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n' + pe_part + b"\r\n--b--\r\n",
        "conflicting boundaries in two headers": top
        + b'Content-Type: multipart/mixed; boundary="one"\r\n'
        b'Content-Type: multipart/mixed; boundary="two"\r\n\r\n'
        b"--one\r\nContent-Type: text/plain\r\n\r\nhello\r\n--one--\r\n"
        b"--two\r\n" + _att("Content-Type: application/octet-stream\r\n"
                            "Content-Transfer-Encoding: base64", enc) + b"\r\n--two--\r\n",
        "second boundary parameter": top
        + b'Content-Type: multipart/mixed; boundary="abc"; boundary="xyz"\r\n\r\n'
        b"--abc\r\nContent-Type: text/plain\r\n\r\nhi\r\n--abc--\r\n--xyz\r\n"
        + _att("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64", enc)
        + b"\r\n--xyz--\r\n",
        "boundary prefix": top + b'Content-Type: multipart/mixed; boundary="abc"\r\n\r\n'
        b"--abc\r\nContent-Type: text/plain\r\n\r\nhi\r\n--abcdef\r\n"
        + _att("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64", enc)
        + b"\r\n--abc--\r\n",
        "parts after the closing delimiter": top
        + b'Content-Type: multipart/mixed; boundary="c"\r\n\r\n--c\r\n'
        b"Content-Type: text/plain\r\n\r\nhi\r\n--c--\r\n--c\r\n" + pe_part + b"\r\n--c--\r\n",
        "base64 padding mid-stream": multipart(_att(
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64",
            enc[:20] + b"=" + enc[20:])),
        "junk in base64": multipart(_att(
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64",
            b"\x00!".join(b64(PE).split(b"\r\n")))),
        "RFC 2231 continuation hides .exe": multipart(_att(
            'Content-Type: application/pdf; name="invoice.pdf"\r\n'
            'Content-Disposition: attachment; filename*0="invoice.pd"; filename*1="f.exe"\r\n'
            "Content-Transfer-Encoding: base64", b64(b"%PDF-1.4 fake"))),
        "RFC 2231 percent-encoded dot": multipart(_att(
            "Content-Type: application/pdf\r\n"
            "Content-Disposition: attachment; filename*=utf-8''invoice%2Eexe\r\n"
            "Content-Transfer-Encoding: base64", b64(b"%PDF-1.4 fake"))),
        "encoded word hides .exe": multipart(_att(
            'Content-Type: application/pdf\r\n'
            'Content-Disposition: attachment; filename="=?utf-8?B?aW52b2ljZS5leGU=?="\r\n'
            "Content-Transfer-Encoding: base64", b64(b"%PDF-1.4 fake"))),
        "name only in Content-Type": multipart(_att(
            'Content-Type: image/png; name="holiday.scr"\r\nContent-Disposition: inline\r\n'
            "Content-Transfer-Encoding: base64", b64(b"\x89PNG fake"))),
        "right-to-left override": multipart(part(b"x", "application/pdf", "report\u202excod.scr")),
        "full-width extension": multipart(part(b"x", "application/pdf", "report．ｅｘｅ")),
        "white space before a colon": top + b'Content-Type : multipart/mixed; boundary="w"\r\n\r\n'
        b"--w\r\n" + pe_part + b"\r\n--w--\r\n",
        "multipart without boundary parameter": top + b"Content-Type: multipart/mixed\r\n\r\n"
        b"--m\r\n" + pe_part + b"\r\n--m--\r\n",
        "base64-encoded multipart": top + b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
        b"--o\r\n" + _att('Content-Type: multipart/mixed; boundary="i"\r\n'
                          "Content-Transfer-Encoding: base64",
                          b64(b"--i\r\n" + pe_part + b"\r\n--i--\r\n")) + b"\r\n--o--\r\n",
        "conflicting transfer encodings": multipart(_att(
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: 7bit\r\n"
            "Content-Transfer-Encoding: base64", b64(PE))),
        "uuencoded program in a text body": simple(b"see below\r\nbegin 644 setup.exe\r\n" + uu
                                                   + b"`\r\nend\r\n"),
        "program in an attached message": multipart(_att(
            "Content-Type: message/rfc822",
            multipart(pe_part, boundary="inner", headers=b"Subject: fwd\r\n"))),
        "first header unknown to clamd": multipart(
            part(zip_bytes({"e.txt": EICAR}), "application/zip", "a.zip"),
            headers=b"X-Mailer: x\r\nMIME-Version: 1.0\r\n"),
        "CLSID extension": multipart(part(b"x", "application/pdf",
                                          "doc.pdf.{3050F4D8-98B5-11CF-BB82-00AA00BDCE0B}")),
    }


@pytest.mark.parametrize("name", list(_adversarial()))
def test_adversarial_mime_is_never_clean(scan: Scan, name: str) -> None:
    verdict = scan(_adversarial()[name])
    assert verdict.verdict in ("infected", "blocked", "unscannable"), verdict.reasons


def test_eicar_hidden_by_mime_tricks_is_found_as_infected(scan: Scan) -> None:
    cases = _adversarial()
    for name in ("conflicting boundaries in two headers", "second boundary parameter",
                 "boundary prefix", "base64 padding mid-stream", "first header unknown to clamd"):
        verdict = scan(cases[name])
        assert verdict.verdict == "infected", name
        assert DETECTED_AS in [f.detail for f in verdict.findings], name


# --- clean corpus: no false positives ------------------------------------------------------

def _email(**fields: str) -> EmailMessage:
    m = EmailMessage(policy=SMTP)
    m["From"] = fields.get("sender", "Alice <alice@example.test>")
    m["To"] = "Bob <bob@example.test>"
    m["Subject"] = fields.get("subject", "Quarterly numbers")
    m["Date"] = "Mon, 01 Jan 2024 10:00:00 +0000"
    m["Message-ID"] = "<c0rpus@example.test>"
    return m


def _docx() -> bytes:
    return zip_bytes({
        "[Content_Types].xml": b'<?xml version="1.0"?><Types xmlns="..."/>',
        "_rels/.rels": b"<Relationships/>",
        "word/document.xml": b"<w:document><w:body><w:p>Hello</w:p></w:body></w:document>" * 20,
        "docProps/core.xml": b"<cp:coreProperties/>",
    })


def _clean_corpus() -> dict[str, bytes]:
    rnd = random.Random(42)
    received = b"Received: from mx.example.test by hold.example.test; Mon, 1 Jan 2024\r\n"
    out: dict[str, EmailMessage] = {}

    m = _email()
    m.set_content("Hi Bob,\n\nthe numbers are attached.\n\n-- \nAlice\n")
    out["plain text"] = m

    m = _email(subject="Grüße aus Köln")
    m.set_content("Grüße, naïve café — 日本語のテキスト\nbegin the meeting at 10\n", cte="8bit")
    out["8-bit text"] = m

    m = _email()
    m.set_content("Déjà vu " * 200, charset="iso-8859-1", cte="quoted-printable")
    out["latin-1 quoted-printable"] = m

    m = _email(subject="Newsletter")
    m.set_content("Plain version")
    m.add_alternative('<html><body><p>Hello</p><img src="cid:logo@x"></body></html>',
                      subtype="html")
    html = next(p for p in m.iter_parts() if p.get_content_type() == "text/html")
    assert isinstance(html, EmailMessage)
    html.add_related(b"\x89PNG\r\n\x1a\n" + rnd.randbytes(30_000), "image", "png",
                     cid="<logo@x>", filename="logo.png")
    out["html with inline image"] = m

    m = _email()
    m.set_content("Report attached.")
    m.add_attachment(b"%PDF-1.7\n" + rnd.randbytes(60_000) + b"\n%%EOF\n", "application",
                     "pdf", filename="Q3 report.pdf")
    m.add_attachment(_docx(), "application",
                     "vnd.openxmlformats-officedocument.wordprocessingml.document",
                     filename="minutes.docx")
    m.add_attachment(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4000), "application",
                     "msword", filename="old.doc")
    m.add_attachment(b"a,b,c\n1,2,3\n" * 100, "text", "csv", filename="data.csv")
    out["office-looking attachments"] = m

    m = _email(subject="Invitation: planning")
    m.set_content("You are invited.")
    ics = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n"
           "UID:1@example.test\r\nDTSTART:20240102T100000Z\r\nSUMMARY:Planning\r\n"
           "END:VEVENT\r\nEND:VCALENDAR\r\n")
    m.add_alternative(ics, subtype="calendar", params={"method": "REQUEST"})
    m.add_attachment(ics.encode(), "text", "calendar", filename="invite.ics")
    out["calendar invite"] = m

    m = _email()
    m.set_content("Logs attached.")
    m.add_attachment(zip_bytes({f"logs/day{i}.txt": b"all fine\n" * 300 for i in range(10)}),
                     "application", "zip", filename="logs.zip")
    m.add_attachment(tar_bytes({"a.csv": b"1,2\n" * 500, "b.txt": b"x"}), "application",
                     "gzip", filename="data.tar.gz")
    out["normal archives"] = m

    m = _email()
    m.set_content("Unterlagen anbei.")
    m.add_attachment(b"%PDF-1.4 benign", "application", "pdf", filename="Übersicht.pdf")
    m.add_attachment(b"%PDF-1.4 benign 2", "application", "pdf", filename="résumé final.pdf")
    m.add_attachment(b"#!/bin/sh\necho deploy\n", "text", "x-sh", filename="deploy.sh")
    out["non-ASCII names and a script"] = m

    inner = _email(subject="Original")
    inner.set_content("Original text.")
    inner.add_attachment(b"%PDF-1.4 inner", "application", "pdf", filename="inner.pdf")
    m = _email(subject="Fwd: Original")
    m.set_content("See below.")
    m.add_attachment(inner)
    out["forwarded message"] = m

    m = _email(subject="Photo")
    m.set_content("Photo.")
    m.add_attachment(b"\xff\xd8\xff\xe0" + rnd.randbytes(100_000), "image", "jpeg",
                     filename="IMG_0001.jpg")
    out["photo"] = m

    corpus = {name: received + msg.as_bytes() for name, msg in out.items()}
    corpus["signed (multipart/signed)"] = received + (
        b"From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; "
        b'protocol="application/pgp-signature"; micalg=pgp-sha256; boundary="s"\r\n\r\n'
        b"--s\r\nContent-Type: text/plain\r\n\r\nSigned text.\r\n--s\r\n"
        b"Content-Type: application/pgp-signature; name=signature.asc\r\n\r\n"
        b"-----BEGIN PGP SIGNATURE-----\r\n\r\niQEzBAEBCAAdFiEE\r\n=abcd\r\n"
        b"-----END PGP SIGNATURE-----\r\n--s--\r\n")
    # Raw 8-bit names, as many mailers send them: UTF-8, and Windows-1252.
    cp1252 = part(b"%PDF-1.4 x", "application/pdf", "X").replace(
        b'"X"', '"Angebot – Müller.pdf"'.encode("cp1252"))
    corpus["raw 8-bit filenames"] = multipart(
        part(b"%PDF-1.4 benign", "application/pdf", "Übersicht – März.pdf"), cp1252)
    corpus["truncated (no closing boundary)"] = multipart(
        part(b"hello\r\n", "text/plain", encoding="7bit"),
        part(b"%PDF-1.4 x", "application/pdf", "a.pdf")).rsplit(b"--=_b0und4ry--", 1)[0]
    return corpus


@pytest.mark.parametrize("name", list(_clean_corpus()))
def test_clean_corpus_is_clean(scan: Scan, name: str) -> None:
    verdict = scan(_clean_corpus()[name])
    assert verdict.verdict == "clean", verdict.reasons
    # Clean mail with nothing to change is released as it came: no edits, no rewrite.
    assert verdict.header_edits == []


def test_clean_corpus_reads_the_same_both_ways() -> None:
    # Ordinary mail must cost one INSTREAM: nothing suspect, nothing undecidable.
    for name, raw in _clean_corpus().items():
        msg = ParsedMessage.from_bytes(raw)
        assert msg.undecidable == (), name
        if name != "truncated (no closing boundary)":
            assert msg.suspect_parts == (), name


# --- the engine itself --------------------------------------------------------------------

class Exploding(Scanner):
    name = "exploding"

    def scan(self, msg: ParsedMessage) -> list[Finding]:
        raise KeyError("bug")


def test_a_scanner_that_raises_gives_an_error_finding_and_the_others_still_run(
        scanners: list[Scanner]) -> None:
    verdict = scan_message(simple(EICAR), REQUEST, [Exploding({}), *scanners], HeadersConfig(),
                           "w1")
    assert verdict.verdict == "error"
    assert ("exploding", "error", "scanner failed: KeyError: 'bug'") in \
        [(f.scanner, f.verdict, f.detail) for f in verdict.findings]
    assert ("clamav", "infected", DETECTED_AS) in \
        [(f.scanner, f.verdict, f.detail) for f in verdict.findings]
    assert set(verdict.scan_times) == {"parse", "exploding", *(s.name for s in scanners)}


def test_a_parser_failure_is_an_error_and_clamd_still_scans_the_raw_message(
        scanners: list[Scanner], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(raw: bytes, limits: object = None) -> ParsedMessage:
        raise IndexError("parser bug")
    monkeypatch.setattr(ParsedMessage, "from_bytes", broken)
    verdict = scan_message(simple(EICAR), REQUEST, scanners, HeadersConfig(), "w1")
    assert verdict.verdict == "error"
    found = [(f.scanner, f.verdict, f.detail) for f in verdict.findings]
    assert ("parse", "error", "MIME parsing failed: IndexError: parser bug") in found
    assert ("clamav", "infected", DETECTED_AS) in found


def test_header_edits_replace_the_status_and_tag_the_subject(scanners: list[Scanner]) -> None:
    headers = HeadersConfig(prefix="X-Scan", subject_tags={"infected": "[VIRUS]"})
    verdict = scan_message(simple(EICAR), REQUEST, scanners, headers, "w1")
    assert [(e.op, e.name, e.value) for e in verdict.header_edits] == [
        ("replace", "X-Scan-Status", f"infected ({DETECTED_AS})"),
        ("subject_tag", "Subject", "[VIRUS]")]
    assert Verdict.from_dict(verdict.to_dict()) == verdict     # it passes the contract
    quiet = HeadersConfig(add_status_header=False)
    assert scan_message(simple(b"hi"), REQUEST, scanners, quiet, "w1").header_edits == []


def test_clean_status_header_only_when_asked_or_forged(scanners: list[Scanner]) -> None:
    plain = scan_message(simple(b"hi"), REQUEST, scanners, HeadersConfig(), "w1")
    assert plain.verdict == "clean" and plain.header_edits == []
    loud = HeadersConfig(status_header_on_clean=True)
    assert [(e.op, e.value) for e in
            scan_message(simple(b"hi"), REQUEST, scanners, loud, "w1").header_edits] == [
        ("replace", "clean")]
    forged = b"X-Holdscan-Status: clean\r\n" + simple(b"hi")
    edits = scan_message(forged, REQUEST, scanners, HeadersConfig(), "w1").header_edits
    assert [(e.op, e.name, e.value) for e in edits] == [
        ("replace", "X-Holdscan-Status", "clean")]


def test_status_text_is_one_safe_ascii_line() -> None:
    findings = [Finding("attachments", "blocked", 'bad name: "a\u202eb\r\nX-Evil: 1"'),
                Finding("x", "blocked", "y" * 1000)]
    text = status_text("blocked", findings)
    assert text.isascii() and "\r" not in text and "\n" not in text
    assert len(text) <= 300


def test_registry_defaults_and_configuration() -> None:
    cfg = Config()
    assert [s.name for s in build_scanners(cfg)] == ["mime", "smuggling", "attachments",
                                                     "archives", "macros", "clamav"]
    cfg.scanners = {"smuggling": {"enabled": False}, "archives": {"enabled": False},
                    "macros": {"enabled": False}, "clamav": {"enabled": False}}
    assert [s.name for s in build_scanners(cfg)] == ["mime", "attachments"]
    cfg.scanners = {"clamvа": {}}
    with pytest.raises(ConfigError, match="no such scanner"):
        build_scanners(cfg)
    cfg.scanners = {"attachments": {"deny_extension": ["exe"]}}
    with pytest.raises(ConfigError, match="'deny_extension'"):
        build_scanners(cfg)
    cfg.scanners = {"mime": {"enabled": "yes"}}
    with pytest.raises(ConfigError, match="enabled must be true or false"):
        build_scanners(cfg)


def test_mime_limits_come_from_the_mime_scanner(clamd: ClamdServer) -> None:
    scanners = build_scanners(make_config(clamd.addresses, mime={"max_parts": 5}))
    raw = multipart(*[part(b"p%d" % i, "text/plain", encoding="7bit") for i in range(10)])
    verdict = scan_message(raw, REQUEST, scanners, HeadersConfig(), "w1")
    assert verdict.reasons == ["mime: MIME structure undecidable: more than 5 MIME parts"]
    lenient = build_scanners(make_config(clamd.addresses, mime={"on_undecidable": "clean"}))
    assert scan_message(_adversarial()["duplicate Content-Type"], REQUEST, lenient,
                        HeadersConfig(), "w1").verdict == "blocked"
