"""What a file is, from its first bytes, whatever its name says.

Names lie ("report.pdf" that is a Windows program); the first bytes rarely do,
because the program that opens the file needs them. Only the types that the
filetype rules and the archive scanner care about are recognised; everything
else is None ("nothing we need to know about").

`SNIFF_BYTES` is how much of a file `sniff` ever looks at, so callers that
stream (archive members) read only that much to decide.
"""

from __future__ import annotations

import struct

SNIFF_BYTES = 64 * 1024     # enough for the volume descriptors of ISO 9660 and UDF (0x8000+)

DESCRIPTIONS = {
    "pe": "Windows executable (PE)",
    "msdos": "MS-DOS executable",
    "elf": "ELF executable",
    "mach-o": "Mach-O executable",
    "java-class": "Java class file",
    "script": "script with #! line",
    "lnk": "Windows shortcut",
    "registry": "Windows registry file",
    "hta": "HTML application",
    "iso": "ISO 9660 disk image",
    "udf": "UDF disk image",
    "vhd": "virtual hard disk (VHD)",
    "vhdx": "virtual hard disk (VHDX)",
    "onenote": "OneNote document",
    "msi": "Windows Installer package",
    "ole": "OLE compound file (Office 97-2003 document and others)",
    "rtf": "RTF document",
    "cab": "Windows cabinet",
    "zip": "zip archive",
    "gzip": "gzip data",
    "bzip2": "bzip2 data",
    "xz": "xz data",
    "tar": "tar archive",
    "7z": "7-Zip archive",
    "rar": "RAR archive",
}

# The ones we can list (the archives scanner walks their members).
# (Documents that carry files too: OLE compound files and RTF, for their embedded
# objects and Outlook attachments.)
ARCHIVE_TYPES = frozenset({"zip", "gzip", "bzip2", "xz", "tar", "iso", "udf", "cab", "7z",
                           "onenote", "ole", "rtf"})

_MACHO_MAGICS = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
_LNK_MAGIC = b"L\x00\x00\x00\x01\x14\x02\x00"
_UTF16_REGEDIT = "Windows Registry Editor".encode("utf-16-le")
# After "BZh1".."BZh9": a block (digits of pi) or the end of the stream (of
# sqrt(pi)); without them a text that starts "BZh1" would pass for bzip2.
_BZIP2_BLOCKS = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# The root storage's class of a Windows Installer database, patch and transform
# ({000C1084-...}, {000C1086-...}, {000C1082-...}, stored little-endian).
_MSI_CLASSES = tuple(bytes([b, 0x10, 0x0C, 0]) + bytes(4) + b"\xc0" + bytes(6) + b"\x46"
                     for b in (0x84, 0x86, 0x82))
# The file type GUID that starts a OneNote section ({7B5C52E4-D88C-4DA7-AEB1-5378D02996D3}).
_ONENOTE_MAGIC = bytes.fromhex("e4525c7b8cd8a74daeb15378d02996d3")
_SECTOR = 2048          # ISO 9660 and UDF volume descriptors: one per 2 KiB sector from 32 KiB


def _disc(head: bytes) -> str | None:
    """ISO 9660 or UDF, from the volume descriptors at 32 KiB (a bridge disc has both)."""
    ids = [head[at + 1:at + 6] for at in range(16 * _SECTOR, min(len(head), 24 * _SECTOR),
                                                _SECTOR)]
    if b"CD001" in ids:
        return "iso"
    if b"BEA01" in ids and (b"NSR02" in ids or b"NSR03" in ids):
        return "udf"
    return None


def _ole(data: bytes) -> str:
    """An MSI is an OLE compound file whose root storage has the Installer's class."""
    sector_shift, = struct.unpack_from("<H", data, 0x1E)
    first_dir, = struct.unpack_from("<I", data, 0x30)
    if not 9 <= sector_shift <= 12:
        return "ole"
    root = (first_dir + 1) << sector_shift     # the header fills sector -1
    if data[root + 0x50:root + 0x60] in _MSI_CLASSES:
        return "msi"
    return "ole"


def _mz(data: bytes) -> str | None:
    if len(data) < 64:
        return None
    e_lfanew = struct.unpack_from("<I", data, 60)[0]
    if data[e_lfanew:e_lfanew + 4] == b"PE\0\0":
        return "pe"
    # Without the PE header in view (a truncated head, or a real DOS program),
    # believe "MZ" only if the DOS header is plausible, so that a text that
    # happens to start with "MZ" is not called a program.
    pages, header_paragraphs = struct.unpack_from("<HxxH", data, 4)   # e_cp, e_cparhdr
    if 1 <= pages <= 0x1000 and 2 <= header_paragraphs <= 0x100:
        return "msdos"
    return None


def sniff(data: bytes) -> str | None:
    """A short type name (a key of DESCRIPTIONS) for `data`, or None."""
    head = data[:SNIFF_BYTES]
    if head[:2] == b"MZ":
        kind = _mz(head)
        if kind:
            return kind
    if head[:4] == b"\x7fELF":
        return "elf"
    if head[:4] in _MACHO_MAGICS:
        return "mach-o"
    if head[:4] == b"\xca\xfe\xba\xbe" and len(head) >= 8:
        # Shared by fat Mach-O binaries (a small count of architectures follows)
        # and Java classes (a class-file version of 45 or more follows).
        return "mach-o" if struct.unpack_from(">I", head, 4)[0] < 45 else "java-class"
    if head[:8] == _LNK_MAGIC:
        return "lnk"
    if head[:2] == b"PK" and head[2:4] in (b"\x03\x04", b"\x05\x06", b"\x07\x08"):
        return "zip"
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in _BZIP2_BLOCKS:
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[257:262] == b"ustar":
        return "tar"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if head[:7] == b"Rar!\x1a\x07":
        return "rar"
    if head[:4] == b"MSCF":
        return "cab"
    if head[:8] == _OLE_MAGIC and len(head) >= 512:
        # The directory may lie past the head in a large file: look in all of it.
        return _ole(data)
    if head[:16] == _ONENOTE_MAGIC:
        return "onenote"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    # A dynamic VHD starts with a copy of its footer; a fixed one has it only at its end.
    if head[:8] == b"conectix" or data[-512:-504] == b"conectix":
        return "vhd"
    disc = _disc(head)
    if disc:
        return disc
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped[:2] == b"#!":
        return "script"
    if stripped[:8] == b"REGEDIT4" or _UTF16_REGEDIT in head[:64]:
        return "registry"
    if stripped[:4] == b"{\\rt":      # all Word needs to take a file for RTF
        return "rtf"
    if b"<hta:application" in head[:4096].lower():
        return "hta"
    return None
