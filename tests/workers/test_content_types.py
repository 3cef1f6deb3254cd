"""Types by content, not by name: disc images, virtual disks, OneNote, shortcuts,
installers and cabinets are recognised by their first bytes whatever they are called,
and the files on disc images and in cabinets are judged like archive members."""

from __future__ import annotations

import struct

import pytest

from holdscan.lab.clamd import ClamdServer
from shared.contract import Verdict
from tests.support.discs import cab_bytes, iso_image
from tests.support.mail import EICAR, PE, multipart, part, zip_bytes
from tests.support.ole import compound_file
from tests.support.scanning import Scan, make_config
from workers.filetype import sniff
from workers.scanners import build_scanners

MSI_CLASS = bytes([0x84, 0x10, 0x0C, 0]) + bytes(4) + b"\xc0" + bytes(6) + b"\x46"
LNK = (b"L\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"
       + bytes(56))
ONENOTE = bytes.fromhex("e4525c7b8cd8a74daeb15378d02996d3") + bytes(1000)


def vhd_fixed() -> bytes:
    # A fixed VHD is the disk's sectors, then a 512-byte footer that starts "conectix".
    footer = b"conectix" + struct.pack(">II", 2, 0x10000) + bytes(496)
    return bytes(4096) + footer


def udf_only() -> bytes:
    image = bytearray(64 * 1024)
    for sector, ident in ((16, b"BEA01"), (17, b"NSR02"), (18, b"TEA01")):
        image[sector * 2048 + 1:sector * 2048 + 6] = ident
    return bytes(image)


def mail(payload: bytes, name: str) -> bytes:
    return multipart(part(b"see the attachment\r\n", "text/plain", encoding="7bit"),
                     part(payload, "application/octet-stream", name))


def details(v: Verdict) -> list[str]:
    return [f.detail for f in v.findings]


TYPES = {
    "iso": iso_image({"/README.TXT;1": b"hello"}),
    "udf": udf_only(),
    "vhd": vhd_fixed(),
    "vhdx": b"vhdxfile" + bytes(1000),
    "onenote": ONENOTE,
    "lnk": LNK,
    "msi": compound_file({"\u4840\u3f3f": b"x" * 100}, MSI_CLASS),
    "ole": compound_file({"WordDocument": b"x" * 100}),
    "cab": cab_bytes({"a.txt": b"a"}),
}


@pytest.mark.parametrize("kind", list(TYPES))
def test_type_is_known_by_its_bytes(kind: str) -> None:
    assert sniff(TYPES[kind]) == kind


@pytest.mark.parametrize("kind", ["iso", "udf", "vhd", "vhdx", "lnk", "msi"])
def test_images_shortcuts_and_installers_are_blocked_whatever_their_name(
        scan: Scan, kind: str) -> None:
    v = scan(mail(TYPES[kind], "quarterly-report.pdf"))
    assert v.verdict == "blocked", details(v)
    assert any(f"denied file type {kind} " in d for d in details(v))


def test_innocent_twins_of_the_types_are_clean(scan: Scan) -> None:
    # An Office 97 document is an OLE file too, but not an installer; a OneNote
    # section and a cabinet of text are allowed (their members are judged).
    for payload, name in ((TYPES["ole"], "minutes.doc"), (ONENOTE, "notes.one"),
                          (cab_bytes({"readme.txt": b"hello " * 5000}), "drivers.cab"),
                          (b"%PDF-1.4\n" + bytes(3000), "quarterly-report.pdf")):
        v = scan(mail(payload, name))
        assert v.verdict == "clean", (name, details(v))


# --- disc images: every tree's names, each file's content --------------------------------

def scanners_allowing_iso(clamd: ClamdServer) -> list:
    # With disc images themselves allowed, only what is on them decides.
    types = ["pe", "msdos", "elf", "mach-o", "lnk", "registry", "hta"]
    return build_scanners(make_config(clamd.addresses, attachments={"deny_types": types},
                                      archives={"deny_types": types}))


def test_a_program_name_in_any_tree_of_a_disc_image_is_blocked(clamd: ClamdServer,
                                                               scan: Scan) -> None:
    scanners = scanners_allowing_iso(clamd)
    # ISO 9660 says INVOICE.PDF; Joliet, which Windows shows, says invoice.exe.
    joliet = iso_image({"/INVOICE.PDF;1": b"%PDF-1.4"}, joliet={"/INVOICE.PDF;1": "/invoice.exe"})
    udf = iso_image({"/INVOICE.PDF;1": b"%PDF-1.4"}, udf={"/INVOICE.PDF;1": "/invoice.lnk"})
    renamed = iso_image({"/INVOICE.PDF;1": PE})
    nested = iso_image({"/DOCS.ZIP;1": zip_bytes({"run.scr": b"x"})})
    for image, expected in ((joliet, 'denied extension .exe: "/invoice.exe"'),
                            (udf, 'denied extension .lnk: "/invoice.lnk"'),
                            (renamed, "denied file type pe"),
                            (nested, 'denied extension .scr: "run.scr"')):
        v = scan(mail(image, "disc.bin"), scanners)
        assert v.verdict == "blocked"
        assert any(expected in d for d in details(v)), details(v)
    clean = iso_image({"/INVOICE.PDF;1": b"%PDF-1.4", "/NOTES.TXT;1": b"notes"})
    assert scan(mail(clean, "disc.bin"), scanners).verdict == "clean"
    assert scan(mail(iso_image({"/EICAR.TXT;1": EICAR}), "disc.bin"), scanners).verdict \
        == "infected"


def test_a_damaged_disc_image_is_unscannable(clamd: ClamdServer, scan: Scan) -> None:
    image = bytearray(iso_image({"/A.TXT;1": b"a"}, with_udf=False))
    image[16 * 2048 + 156:16 * 2048 + 190] = b"\xff" * 34      # the root directory record
    v = scan(mail(bytes(image), "disc.bin"), scanners_allowing_iso(clamd))
    assert v.verdict == "unscannable"
    assert any("damaged archive" in d for d in details(v))


# --- cabinets -----------------------------------------------------------------------------

@pytest.mark.parametrize("method", [0, 1], ids=["stored", "mszip"])
def test_cabinet_members_are_judged_by_name_and_content(scan: Scan, method: int) -> None:
    text = b"driver notes\r\n" * 4000          # several MSZIP blocks before the program
    v = scan(mail(cab_bytes({"notes.txt": text, "setup.exe": b"x", "doc.pdf": PE}, method),
                  "update.cab"))
    assert v.verdict == "blocked"
    assert any('denied extension .exe: "setup.exe" in "update.cab"' in d for d in details(v))
    assert any('denied file type pe' in d and '"doc.pdf"' in d for d in details(v))
    assert scan(mail(cab_bytes({"notes.txt": text, "b.txt": b"b"}, method), "update.cab")
                ).verdict == "clean"


def test_eicar_in_a_cabinet_is_infected(scan: Scan) -> None:
    assert scan(mail(cab_bytes({"notes.txt": b"n" * 40_000, "e.com": EICAR}), "a.cab")
                ).verdict == "infected"


# --- OneNote: the files embedded in a section --------------------------------------------

def onenote(*files: bytes) -> bytes:
    """A OneNote section's magic, then each file as a FileDataStoreObject (MS-ONESTORE)."""
    out = ONENOTE
    for data in files:
        pad = bytes(-len(data) % 8)
        out += (bytes.fromhex("e716e3bd65261145a4c48d4d0b7a9eac")
                + struct.pack("<QIQ", len(data), 0, 0) + data + pad
                + bytes.fromhex("22a7fb71790f0b4abb13899256426b24") + bytes(64))
    return out


def test_files_embedded_in_onenote_are_judged_and_scanned(scan: Scan) -> None:
    hta = b'<html><head><hta:application id="x"/></head><script>run()</script></html>'
    png = b"\x89PNG\r\n\x1a\n" + bytes(500)
    for embedded, expected in ((PE, "denied file type pe"), (hta, "denied file type hta"),
                               (LNK, "denied file type lnk")):
        v = scan(mail(onenote(png, embedded), "minutes.one"))
        assert v.verdict == "blocked", details(v)
        assert any(expected in d and "(embedded file 2)" in d for d in details(v))
    assert scan(mail(onenote(png, EICAR), "minutes.one")).verdict == "infected"
    assert scan(mail(onenote(png, b"plain notes " * 100), "minutes.one")).verdict == "clean"
