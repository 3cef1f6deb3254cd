"""One message per content class the scanners go beyond MIME for, each with its innocent
twin: what the end-to-end test sends through Postfix (the scan-engine tests in
tests/workers/ cover each class with more cases).

    content_cases() -> {name: (message bytes, expected verdict)}

Every "stopped" case would have passed before the scanner it shows (clamd alone finds
nothing in it); every twin is the same shape without the harm, and must be delivered.
"""

from __future__ import annotations

import base64

from tests.support.discs import iso_image
from tests.support.encrypted import aes_zip
from tests.support.mail import EICAR, HEADERS, PE, multipart, part, zip_bytes
from tests.support.vba import docm, docx

PASSWORD = "Herbst-2024!"
DROPPER = ('Sub AutoOpen()\r\n  Set sh = CreateObject("WScript.Shell")\r\n'
           '  sh.Run "powershell -enc SQBFAFgA", 0\r\nEnd Sub\r\n')


def _mail(payload: bytes, name: str, text: str = "See the attachment.",
          ctype: str = "application/octet-stream", subject: str = "Documents") -> bytes:
    headers = HEADERS.replace(b"Subject: test", f"Subject: {subject}".encode())
    return multipart(part(text.encode(), "text/plain", encoding="8bit"),
                     part(payload, ctype, name), headers=headers)


def _smuggling_page(data: bytes, name: str) -> bytes:
    blob = base64.b64encode(data).decode()
    return (f'<html><body><script>var d = atob("{blob}"); var u = new Uint8Array(d.length);'
            "for (var i = 0; i < d.length; i++) u[i] = d.charCodeAt(i);"
            "var a = document.createElement('a'); a.href = URL.createObjectURL(new Blob([u]));"
            f"a.download = '{name}'; a.click();</script></body></html>").encode()


def content_cases() -> dict[str, tuple[bytes, str]]:
    harmless = zip_bytes({"readme.txt": b"nothing to see"})
    with_password = f"The archive is encrypted. Password: {PASSWORD}"
    return {
        "concatenated zips, EICAR in the first": (
            _mail(zip_bytes({"eicar.txt": EICAR}) + harmless, "invoice.zip"), "infected"),
        "twin: a zip after a picture": (
            _mail(b"\xff\xd8\xff\xe0 photo " * 20 + harmless, "photo.jpg"), "clean"),
        "disc image called a PDF": (
            _mail(iso_image({"/README.TXT;1": b"hello"}), "statement.pdf"), "blocked"),
        "twin: a PDF": (_mail(b"%PDF-1.4\n" + bytes(3000), "statement.pdf"), "clean"),
        "auto-executing dropper macro": (_mail(docm(DROPPER), "minutes.docm"), "blocked"),
        "twin: a document without macros": (_mail(docx(), "minutes.docx"), "clean"),
        "HTML smuggling an EICAR zip": (
            _mail(_smuggling_page(zip_bytes({"invoice.txt": EICAR}), "invoice.zip"),
                  "invoice.html", ctype="text/html"), "infected"),
        "twin: HTML building a harmless file": (
            _mail(_smuggling_page(b"date,amount\n2024-01-01,100\n" * 5, "report.csv"),
                  "report.html", ctype="text/html"), "clean"),
        "AES zip of a program, password in the mail": (
            _mail(aes_zip({"invoice.pdf": PE}, PASSWORD), "invoice.zip", with_password),
            "blocked"),
        "twin: AES zip of a document, password in the mail": (
            _mail(aes_zip({"invoice.pdf": b"%PDF-1.4 ..."}, PASSWORD), "invoice.zip",
                  with_password), "clean"),
    }
