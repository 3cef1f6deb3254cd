"""Filename and filetype rules, and the sniffer under them."""

from __future__ import annotations

import pytest

from shared.config import ConfigError
from tests.support.mail import PE, tar_bytes, zip_bytes
from workers.filetype import sniff
from workers.scanners.filerules import RULE_DEFAULTS, FileRules

RULES = FileRules.from_options("attachments", RULE_DEFAULTS)


@pytest.mark.parametrize("name, rule", [
    ("setup.exe", "denied extension .exe"),
    ("SETUP.EXE", "denied extension .exe"),
    ("report.pdf.exe", "double extension .pdf.exe"),
    ("invoice.doc   .scr", "double extension .doc.scr"),
    ("evil.exe.", "denied extension .exe"),            # Windows drops trailing dots
    ("evil.exe  ", "denied extension .exe"),           # and spaces
    ("evil．ｅｘｅ", "denied extension .exe"),           # full-width, NFKC-normalised
    ("C:\\Users\\x\\Desktop\\run.bat", "denied extension .bat"),
    ("invoice\u202efdp.exe", "invisible or bidi character U+202E in filename"),
    ("invoice\u200b.pdf", "invisible or bidi character U+200B in filename"),
    ("photo.jpg{20D04FE0-3AEA-1069-A2D8-08002B30309D}",
     "denied name pattern '\\\\{[0-9a-f-]{20,}\\\\}'"),
    ("image.iso", "denied extension .iso"),
])
def test_denied_names(name: str, rule: str) -> None:
    assert RULES.check_name(name) == rule


@pytest.mark.parametrize("name", [
    "report.pdf", "archive.tar.gz", "notes.txt", "v1.2.3-release-notes.md", "Über.docx",
    "résumé.pdf", "invite.ics", "photo.jpeg", "no extension", "executive summary.pdf",
])
def test_ordinary_names_pass(name: str) -> None:
    assert RULES.check_name(name) is None


def test_rules_follow_the_options() -> None:
    rules = FileRules.from_options("x", {**RULE_DEFAULTS, "deny_extensions": ["pdf"],
                                         "block_double_extensions": False,
                                         "block_invisible_characters": False,
                                         "deny_types": []})
    assert rules.check_name("a.pdf") == "denied extension .pdf"
    assert rules.check_name("a.exe") is None
    assert rules.check_name("a\u202e.txt") is None
    assert rules.check_type(PE) is None


def test_bad_rule_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        FileRules.from_options("x", {**RULE_DEFAULTS, "deny_patterns": ["("]})
    with pytest.raises(ConfigError, match="unknown type"):
        FileRules.from_options("x", {**RULE_DEFAULTS, "deny_types": ["exe"]})


ELF = b"\x7fELF\x02\x01\x01" + bytes(60)
MACHO = b"\xcf\xfa\xed\xfe" + bytes(60)
FAT_MACHO = b"\xca\xfe\xba\xbe\x00\x00\x00\x02" + bytes(60)
JAVA = b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + bytes(60)
DOS = b"MZ" + b"\x50\x00\x02\x00\x00\x00\x04\x00" + bytes(60)


@pytest.mark.parametrize("data, kind", [
    (PE, "pe"), (DOS, "msdos"), (ELF, "elf"), (MACHO, "mach-o"), (FAT_MACHO, "mach-o"),
    (JAVA, "java-class"), (b"#!/bin/sh\necho hi\n", "script"),
    (b"L\x00\x00\x00\x01\x14\x02\x00" + bytes(70), "lnk"), (b"REGEDIT4\r\n[HKEY_X]", "registry"),
    (b"<html><HTA:APPLICATION id=x></html>", "hta"),
    (zip_bytes({"a": b"b"}), "zip"), (tar_bytes({"a": b"b"}), "gzip"),
    (tar_bytes({"a": b"b"}, "w"), "tar"), (tar_bytes({"a": b"b"}, "w:bz2"), "bzip2"),
    (tar_bytes({"a": b"b"}, "w:xz"), "xz"),
    (b"MZ is a nice place to live", None), (b"%PDF-1.7\n", None), (b"", None),
])
def test_sniff(data: bytes, kind: str | None) -> None:
    assert sniff(data) == kind


def test_type_rule_names_what_the_content_is() -> None:
    assert RULES.check_type(PE) == "denied file type pe (Windows executable (PE))"
    assert RULES.check_type(b"#!/bin/sh\n") is None      # scripts are not denied by default
    assert RULES.check_type(b"%PDF-1.4") is None
