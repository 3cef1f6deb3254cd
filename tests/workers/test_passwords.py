"""Encrypted archives with the password in the mail: opened with the words of the Subject
and the text, and scanned like any archive; without a password that opens them,
on_encrypted applies as before."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from holdscan.lab.clamd import ClamdServer
from shared.contract import Verdict
from tests.support import encrypted
from tests.support.mail import EICAR, HEADERS, PE, multipart, part
from tests.support.scanning import Scan, make_config
from workers.message import ParsedMessage
from workers.passwords import candidates
from workers.scanners import build_scanners
from workers.scanners.archives import ArchivesScanner

PASSWORD = "Sommer-2024!"


def zipcrypto(tmp_path: Path, members: dict[str, bytes]) -> bytes:
    return encrypted.zipcrypto(tmp_path, members, PASSWORD)


def aes_zip(members: dict[str, bytes]) -> bytes:
    return encrypted.aes_zip(members, PASSWORD)


def seven_zip(members: dict[str, bytes], hide_names: bool = False) -> bytes:
    return encrypted.seven_zip(members, PASSWORD, hide_names)


def mail(archive: bytes, name: str, text: str = "", subject: str = "Invoice",
         html: bool = False) -> bytes:
    headers = HEADERS.replace(b"Subject: test", f"Subject: {subject}".encode())
    body = part(text.encode(), "text/html" if html else "text/plain", encoding="8bit")
    return multipart(body, part(archive, "application/octet-stream", name), headers=headers)


def details(v: Verdict) -> list[str]:
    return [f.detail for f in v.findings]


def test_zipcrypto_with_the_password_in_the_text_is_opened_and_scanned(
        scan: Scan, tmp_path: Path) -> None:
    text = f"Hello,\r\nthe invoice is attached. Password: {PASSWORD}\r\nRegards\r\n"
    infected = scan(mail(zipcrypto(tmp_path, {"invoice.txt": EICAR}), "invoice.zip", text))
    assert infected.verdict == "infected", details(infected)
    innocent = scan(mail(zipcrypto(tmp_path, {"invoice.txt": b"Amount due: 100 EUR"}),
                         "invoice.zip", text))
    assert innocent.verdict == "clean", details(innocent)
    assert any("opened with a password from the message" in d for d in details(innocent))


def test_aes_zip_with_the_password_in_the_subject(scan: Scan) -> None:
    subject = f"Invoice 4711 (pw {PASSWORD})"
    # A program called invoice.pdf: only its decrypted bytes tell.
    program = scan(mail(aes_zip({"invoice.pdf": PE}), "invoice.zip", "See attached.",
                        subject))
    assert program.verdict == "blocked"
    assert any("denied file type pe" in d and "invoice.pdf" in d for d in details(program))
    assert scan(mail(aes_zip({"e.txt": EICAR}), "invoice.zip", "", subject)).verdict \
        == "infected"
    assert scan(mail(aes_zip({"invoice.pdf": b"%PDF-1.4"}), "invoice.zip", "", subject)
                ).verdict == "clean"


def test_7z_with_the_password_in_an_html_body(scan: Scan) -> None:
    html = f"<p>Your documents.</p><p>Passwort: <b>{PASSWORD}</b></p>"
    assert scan(mail(seven_zip({"e.txt": EICAR}), "docs.7z", html, html=True)).verdict \
        == "infected"
    hidden = scan(mail(seven_zip({"run.exe": b"x"}, hide_names=True), "docs.7z", html,
                       html=True))
    assert hidden.verdict == "blocked"
    assert any('denied extension .exe: "run.exe"' in d for d in details(hidden))
    assert scan(mail(seven_zip({"a.txt": b"notes"}, hide_names=True), "docs.7z", html,
                     html=True)).verdict == "clean"


@pytest.mark.parametrize("build", ["aes", "7z", "7z-hidden-names"])
def test_without_the_password_on_encrypted_applies(scan: Scan, build: str) -> None:
    archive = {"aes": aes_zip, "7z": seven_zip,
               "7z-hidden-names": lambda m: seven_zip(m, hide_names=True)}[build](
                   {"a.txt": b"notes"})
    v = scan(mail(archive, "docs.bin", "The password follows by phone."))
    assert v.verdict == "blocked"
    assert 'encrypted archive: "docs.bin"' in details(v)


def test_on_encrypted_still_configurable(clamd: ClamdServer, scan: Scan) -> None:
    lenient = build_scanners(make_config(clamd.addresses, archives={"on_encrypted": "clean"}))
    assert scan(mail(aes_zip({"a.txt": b"notes"}), "a.zip", "no password here"),
                lenient).verdict == "clean"


def test_candidates_put_cued_words_first_and_are_bounded() -> None:
    filler = " ".join(f"word{i}" for i in range(5000))
    raw = mail(b"PK\x05\x06" + bytes(18), "a.zip",
               f"{filler}\r\nDas Passwort ist: Geheim#1.\r\n", "Re: Rechnung")
    words = candidates(ParsedMessage.from_bytes(raw), 50)
    assert words[:2] == ["Geheim#1.", "Geheim#1"]
    assert len(words) == 50 and "Re:" in words


def test_trying_passwords_is_bounded(tmp_path: Path) -> None:
    text = " ".join(f"guess{i}" for i in range(20_000))
    for archive in (aes_zip({"a.txt": b"x" * 1000}), zipcrypto(tmp_path, {"a.txt": b"x"}),
                    seven_zip({"a.txt": b"x" * 1000})):
        msg = ParsedMessage.from_bytes(mail(archive, "a.bin", text))
        started = time.process_time()
        found = ArchivesScanner({}).scan(msg)
        seconds = time.process_time() - started
        assert [f.verdict for f in found] == ["blocked"]     # not opened: on_encrypted
        # 50 tries on zip, 10 on 7z (each about 55 ms): CPU seconds, which a busy machine
        # does not inflate.
        assert seconds < 3.0, seconds


def test_the_password_budget_is_for_the_whole_message() -> None:
    text = " ".join(f"guess{i}" for i in range(100))
    archives = [part(seven_zip({f"{i}.txt": b"x" * 100}), "application/octet-stream",
                     f"{i}.7z") for i in range(8)]
    msg = ParsedMessage.from_bytes(multipart(part(text.encode(), "text/plain",
                                                  encoding="7bit"), *archives))
    started = time.process_time()
    found = ArchivesScanner({}).scan(msg)
    seconds = time.process_time() - started
    assert [f.verdict for f in found] == ["blocked"] * 8
    # Ten 7z tries in all (about 55 ms of CPU each), not ten per archive.
    assert seconds < 3.0, seconds


def test_a_large_unencrypted_7z_is_listed_and_left_to_clamd() -> None:
    archive = encrypted.seven_zip({"big.bin": bytes(3 << 20), "run.exe": b"x"})
    msg = ParsedMessage.from_bytes(mail(archive, "a.7z"))
    found = ArchivesScanner({"max_nested_size": 1 << 20, "max_ratio": 100_000}).scan(msg)
    assert sorted((f.verdict, f.detail) for f in found) == [
        ("blocked", 'denied extension .exe: "run.exe" in "a.7z"'),
        ("clean", '7z content over 1 MiB left to clamd (names judged): "a.7z"')]


def test_a_large_zipcrypto_archive_is_not_decrypted(tmp_path: Path) -> None:
    archive = zipcrypto(tmp_path, {"video.bin": random.Random(2).randbytes(300_000)})
    msg = ParsedMessage.from_bytes(mail(archive, "a.zip", f"Password: {PASSWORD}"))
    found = ArchivesScanner({"max_zipcrypto_size": 100_000}).scan(msg)
    assert sorted((f.verdict, f.detail) for f in found) == [
        ("blocked", 'encrypted archive: "a.zip"'),
        ("clean", 'ZipCrypto archive over 97 KiB not decrypted: "a.zip"')]
