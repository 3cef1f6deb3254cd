"""Files embedded in documents are judged like archive members: OLE packages in Office
97-2003 and Office Open XML documents and in RTF, and the attachments of Outlook
messages (.msg)."""

from __future__ import annotations

import io
import random
import zipfile

from shared.contract import Verdict
from tests.support.mail import EICAR, PE, multipart, part, zip_bytes
from tests.support.ole import compound_file, outlook_message, package
from tests.support.scanning import Scan
from tests.support.vba import docx, rtf_with_object
from workers.message import ParsedMessage
from workers.scanners.archives import ArchivesScanner


def mail(payload: bytes, name: str) -> bytes:
    return multipart(part(b"see the attachment\r\n", "text/plain", encoding="7bit"),
                     part(payload, "application/octet-stream", name))


def details(v: Verdict) -> list[str]:
    return [f.detail for f in v.findings]


def word_with_package(filename: str, data: bytes) -> bytes:
    return compound_file({"WordDocument": b"\xec\xa5" + bytes(5000),
                          "ObjectPool/_1234/\x01Ole10Native": package(filename, data),
                          "ObjectPool/_1234/\x01CompObj": bytes(32)})


def docx_with_object(ole: bytes) -> bytes:
    buf = io.BytesIO(docx())
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/embeddings/oleObject1.bin", ole)
    return buf.getvalue()


def test_a_program_packaged_in_a_document_is_blocked(scan: Scan) -> None:
    for payload, name, expected in (
            (word_with_package("invoice.exe", b"x"), "minutes.doc",
             'denied extension .exe: "invoice.exe"'),
            (word_with_package("invoice.pdf", PE), "minutes.doc", "denied file type pe"),
            (docx_with_object(compound_file({"\x01Ole10Native": package("run.js", b"x")})),
             "minutes.docx", 'denied extension .js: "run.js"'),
            (rtf_with_object(package("update.vbs", b"x", with_size=False), "Package"),
             "minutes.rtf", 'denied extension .vbs: "update.vbs"'),
            (rtf_with_object(word_with_package("setup.scr", b"x")), "minutes.rtf",
             'denied extension .scr: "setup.scr"')):
        v = scan(mail(payload, name))
        assert v.verdict == "blocked", (name, details(v))
        assert any(expected in d for d in details(v)), details(v)


def test_outlook_message_attachments_are_judged(scan: Scan) -> None:
    bad = scan(mail(outlook_message({"notes.txt": b"hi", "invoice.pdf.exe": b"x"}), "fw.msg"))
    assert bad.verdict == "blocked"
    assert any('double extension .pdf.exe: "invoice.pdf.exe"' in d for d in details(bad))
    assert scan(mail(outlook_message({"notes.txt": b"hi", "e.com": EICAR}), "fw.msg")
                ).verdict == "infected"


def test_innocent_twins_are_clean(scan: Scan) -> None:
    for payload, name in ((word_with_package("figures.csv", b"a,b\n1,2\n"), "minutes.doc"),
                          (docx_with_object(compound_file({"Workbook": bytes(5000)})),
                           "minutes.docx"),
                          (rtf_with_object(package("notes.txt", b"hi", with_size=False),
                                           "Package"), "minutes.rtf"),
                          (outlook_message({"notes.txt": b"hi", "photo.jpg": b"\xff\xd8\xff"}),
                           "fw.msg")):
        v = scan(mail(payload, name))
        assert v.verdict == "clean", (name, details(v))


def test_a_large_document_in_an_archive_is_noted_not_unscannable() -> None:
    big = compound_file({"Workbook": random.Random(1).randbytes(3 << 20)})
    msg = ParsedMessage.from_bytes(mail(zip_bytes({"figures.xls": big}), "figures.zip"))
    found = ArchivesScanner({"max_nested_size": 1 << 20}).scan(msg)
    assert [(f.verdict, f.detail) for f in found] == [
        ("clean", 'document larger than 1 MiB not searched for embedded files or macros: '
                  '"figures.zip" > "figures.xls"')]
