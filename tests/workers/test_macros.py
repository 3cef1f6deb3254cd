"""VBA macros in Office documents: auto-executing macros that write files or run programs
are stopped; harmless macros and documents without any are delivered.

The documents are real formats built in code (tests/support/vba.py): compound files with
a VBA project whose dir stream and modules are compressed per MS-OVBA, Office Open XML
with word/vbaProject.bin, and RTF with an embedded OLE object.
"""

from __future__ import annotations

import pytest

from holdscan.lab.clamd import ClamdServer
from shared.contract import Verdict
from tests.support.mail import multipart, part, zip_bytes
from tests.support.scanning import Scan, make_config
from tests.support.vba import docm, docx, excel97, rtf_with_object, word97
from workers.scanners import build_scanners

DROPPER = ('Sub AutoOpen()\r\n'
           '  Set sh = CreateObject("WScript.Shell")\r\n'
           '  sh.Run "powershell -enc SQBFAFgA", 0\r\n'
           'End Sub\r\n')
WRITER = ('Private Sub Document_Open()\r\n'
          '  Open Environ("TEMP") & "\\u.exe" For Binary As #1\r\n'
          '  Put #1, , payload\r\n  Close #1\r\n'
          'End Sub\r\n')
WORKBOOK = ('Private Sub Workbook_Open()\r\n'
            '  Shell "cmd.exe /c start update.exe", vbHide\r\n'
            'End Sub\r\n')
HARMLESS = ('Sub FormatTable()\r\n'
            '  Selection.Tables(1).Style = "Grid Table 4"\r\n'
            'End Sub\r\n')
GREETING = ('Sub AutoOpen()\r\n'
            '  MsgBox "Please enable editing to see the minutes."\r\n'
            'End Sub\r\n')


def mail(payload: bytes, name: str, ctype: str = "application/octet-stream") -> bytes:
    return multipart(part(b"see the attachment\r\n", "text/plain", encoding="7bit"),
                     part(payload, ctype, name))


def macro_findings(v: Verdict) -> list[tuple[str, str]]:
    return [(f.verdict, f.detail) for f in v.findings if f.scanner == "macros"]


CASES = {
    "word 97 runs a program": (word97(DROPPER), "minutes.doc", "runs programs",
                               "Macros/VBA/ThisDocument"),
    "word 97 writes a file": (word97(WRITER), "minutes.doc", "writes files",
                              "Macros/VBA/ThisDocument"),
    "excel 97": (excel97(WORKBOOK), "figures.xls", "runs programs",
                 "_VBA_PROJECT_CUR/VBA/ThisWorkbook"),
    "office open xml": (docm(DROPPER), "minutes.docm", "runs programs", "VBA/ThisDocument"),
    "renamed to docx": (docm(WRITER), "minutes.docx", "writes files", "VBA/ThisDocument"),
    "rtf with an embedded document": (rtf_with_object(word97(DROPPER)), "minutes.rtf",
                                      "runs programs", "Macros/VBA/ThisDocument"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_auto_executing_macro_that_writes_or_runs_is_blocked(scan: Scan, case: str) -> None:
    payload, name, does, stream = CASES[case]
    v = scan(mail(payload, name))
    assert v.verdict == "blocked"
    found = macro_findings(v)
    assert len(found) == 1 and found[0][0] == "blocked"
    detail = found[0][1]
    # The finding names the document, the module and the keywords that gave it away.
    assert detail.startswith(f"auto-executing macro that {does}")
    assert f'"{name}"' in detail and stream in detail
    assert "Open" in detail     # AutoOpen, Document_Open, Workbook_Open


def test_a_macro_document_inside_a_zip_is_blocked(scan: Scan) -> None:
    v = scan(mail(zip_bytes({"q3/minutes.docm": docm(DROPPER)}), "minutes.zip"))
    assert v.verdict == "blocked"
    assert any("auto-executing macro that runs programs" in d and "minutes.docm" in d
               for _, d in macro_findings(v))


def test_innocent_twins_are_delivered(scan: Scan) -> None:
    # A macro that formats a table, one that greets on opening (auto-executing, but it
    # neither writes nor runs anything), and a document without macros.
    for payload, name in ((word97(HARMLESS), "report.doc"), (docm(GREETING), "minutes.docm"),
                          (excel97(HARMLESS, "Module1"), "figures.xls"),
                          (docx(), "minutes.docx"), (rtf_with_object(word97(HARMLESS)), "a.rtf")):
        v = scan(mail(payload, name))
        assert v.verdict == "clean", (name, v.findings)
    noted = macro_findings(scan(mail(word97(HARMLESS), "report.doc")))
    assert noted == [("clean", 'VBA macros: "report.doc" Macros/VBA/ThisDocument')]
    assert macro_findings(scan(mail(docx(), "minutes.docx"))) == []


def test_outcomes_are_configurable(clamd: ClamdServer, scan: Scan) -> None:
    lenient = build_scanners(make_config(clamd.addresses, macros={"on_auto_exec": "clean"}))
    assert scan(mail(word97(DROPPER), "minutes.doc"), lenient).verdict == "clean"
    strict = build_scanners(make_config(clamd.addresses, macros={"on_macros": "blocked"}))
    assert scan(mail(word97(HARMLESS), "report.doc"), strict).verdict == "blocked"


def test_a_damaged_document_is_left_to_clamd(scan: Scan) -> None:
    data = bytearray(word97(DROPPER))
    data[0x30:0x34] = b"\xff\xff\xff\x7f"       # the directory's first sector: nowhere
    assert macro_findings(scan(mail(bytes(data), "minutes.doc"))) == []


def test_decoys_past_the_document_limit_do_not_hide_the_dropper(clamd: ClamdServer,
                                                                scan: Scan) -> None:
    small = build_scanners(make_config(clamd.addresses, macros={"max_documents": 2}))
    parts = [part(docx() + bytes([i]), "application/octet-stream", f"{i}.docx")
             for i in range(3)]
    raw = multipart(*parts, part(docm(DROPPER), "application/octet-stream", "minutes.docm"))
    v = scan(raw, small)
    assert v.verdict == "unscannable"
    assert any("more than 2 Office documents" in d for _, d in macro_findings(v))
    assert scan(raw).verdict == "blocked"
