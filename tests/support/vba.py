"""VBA projects (MS-OVBA) written in code, and documents that carry them.

    vba_storage({"ThisDocument": code}, prefix="Macros/")   streams for a compound file
    word97(code)        an Office 97-2003 Word document (.doc) with a VBA project
    excel97(code)       the same for Excel (.xls): _VBA_PROJECT_CUR
    docm(code)          an Office Open XML document with word/vbaProject.bin
    docx()              the same document without macros
    rtf_with_object(ole_bytes)   an RTF document embedding a compound file (OLE 1.0 object)

The dir stream is written record by record as MS-OVBA 2.3.4.2 lays it out, and
every stream is compressed per 2.4.1 (a CompressedContainer whose chunks are
stored raw when full and as literal tokens otherwise: valid, if not small). So
the macro scanner meets the real format, not a shortcut through it.
"""

from __future__ import annotations

import io
import struct
import zipfile

from tests.support.ole import compound_file

CHUNK = 4096


def ovba_compress(data: bytes) -> bytes:
    """A CompressedContainer (MS-OVBA 2.4.1.1.1) holding `data`."""
    out = bytearray(b"\x01")
    for start in range(0, max(len(data), 1), CHUNK):
        chunk = data[start:start + CHUNK]
        if len(chunk) == CHUNK:
            # A raw chunk: flag 0, size 4096 + 2 - 3, signature 0b011.
            out += struct.pack("<H", 0x3000 | (CHUNK - 1)) + chunk
            continue
        body = bytearray()
        for i in range(0, len(chunk), 8):
            body += b"\x00" + chunk[i:i + 8]       # a flag byte: eight literal tokens
        out += struct.pack("<H", 0x8000 | 0x3000 | (len(body) + 2 - 3)) + body
    return bytes(out)


def _rec(ident: int, payload: bytes) -> bytes:
    return struct.pack("<HI", ident, len(payload)) + payload


def dir_stream(modules: list[tuple[str, int]]) -> bytes:
    """The decompressed dir stream for modules [(name, 0x21 procedural | 0x22 document)]."""
    out = _rec(0x01, struct.pack("<I", 1))            # PROJECTSYSKIND: 32-bit Windows
    out += _rec(0x02, struct.pack("<I", 0x409))       # PROJECTLCID
    out += _rec(0x14, struct.pack("<I", 0x409))       # PROJECTLCIDINVOKE
    out += _rec(0x03, struct.pack("<H", 1252))        # PROJECTCODEPAGE
    out += _rec(0x04, b"VBAProject")                  # PROJECTNAME
    out += _rec(0x05, b"") + _rec(0x40, b"")          # PROJECTDOCSTRING (+ Unicode)
    out += _rec(0x06, b"") + _rec(0x3D, b"")          # PROJECTHELPFILEPATH 1, 2
    out += _rec(0x07, struct.pack("<I", 0))           # PROJECTHELPCONTEXT
    out += _rec(0x08, struct.pack("<I", 0))           # PROJECTLIBFLAGS
    out += struct.pack("<HIIH", 0x09, 4, 1, 0)        # PROJECTVERSION
    out += _rec(0x0C, b"") + _rec(0x3C, b"")          # PROJECTCONSTANTS (+ Unicode)
    out += _rec(0x0F, struct.pack("<H", len(modules)))   # PROJECTMODULES
    out += _rec(0x13, struct.pack("<H", 0xFFFF))      # PROJECTCOOKIE
    for name, kind in modules:
        raw, wide = name.encode("cp1252"), name.encode("utf-16-le")
        out += _rec(0x19, raw) + _rec(0x47, wide)                 # MODULENAME (+ Unicode)
        out += _rec(0x1A, raw) + _rec(0x32, wide)                 # MODULESTREAMNAME
        out += _rec(0x1C, b"") + _rec(0x48, b"")                  # MODULEDOCSTRING
        out += _rec(0x31, struct.pack("<I", 0))                   # MODULEOFFSET: source at 0
        out += _rec(0x1E, struct.pack("<I", 0))                   # MODULEHELPCONTEXT
        out += _rec(0x2C, struct.pack("<H", 0xFFFF))              # MODULECOOKIE
        out += struct.pack("<HI", kind, 0)                        # MODULETYPE
        out += struct.pack("<HI", 0x2B, 0)                        # module terminator
    return out + struct.pack("<HI", 0x10, 0)                      # dir terminator


def vba_storage(modules: dict[str, str], prefix: str = "") -> dict[str, bytes]:
    """The PROJECT stream and VBA storage of a project, under `prefix`."""
    kinds = [(name, 0x22 if name in ("ThisDocument", "ThisWorkbook") else 0x21)
             for name in modules]
    project = "ID=\"{00000000-0000-0000-0000-000000000000}\"\r\n"
    for name, kind in kinds:
        project += (f"Document={name}/&H00000000\r\n" if kind == 0x22 else f"Module={name}\r\n")
    project += "Name=\"VBAProject\"\r\n"
    streams = {
        f"{prefix}PROJECT": project.encode("cp1252"),
        # Reserved1 0x61CC; version 0xFFFF: no performance cache, the source decides.
        f"{prefix}VBA/_VBA_PROJECT": struct.pack("<HHBH", 0x61CC, 0xFFFF, 0, 0),
        f"{prefix}VBA/dir": ovba_compress(dir_stream(kinds)),
    }
    for name, code in modules.items():
        source = f'Attribute VB_Name = "{name}"\r\n{code}'.encode("cp1252")
        streams[f"{prefix}VBA/{name}"] = ovba_compress(source)
    return streams


def word97(code: str, module: str = "ThisDocument") -> bytes:
    return compound_file({"WordDocument": b"\xec\xa5" + bytes(4000),
                          **vba_storage({module: code}, "Macros/")})


def excel97(code: str, module: str = "ThisWorkbook") -> bytes:
    return compound_file({"Workbook": bytes(4000),
                          **vba_storage({module: code}, "_VBA_PROJECT_CUR/")})


_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    '<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>'
    '<Override PartName="/word/document.xml" ContentType="application/vnd.ms-word.'
    'document.macroEnabled.main+xml"/></Types>')
_DOCUMENT = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n'
             '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/'
             'main"><w:body><w:p><w:r><w:t>Quarterly figures</w:t></w:r></w:p></w:body>'
             '</w:document>')


def docm(code: str | None) -> bytes:
    """A Word document in Office Open XML; with word/vbaProject.bin unless code is None."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _CONTENT_TYPES)
        z.writestr("word/document.xml", _DOCUMENT)
        if code is not None:
            z.writestr("word/vbaProject.bin",
                       compound_file(vba_storage({"ThisDocument": code})))
    return buf.getvalue()


def docx() -> bytes:
    return docm(None)


def rtf_with_object(ole: bytes, class_name: str = "Word.Document.8") -> bytes:
    """An RTF document with `ole` embedded as an OLE 1.0 object (\\objdata, hex)."""
    name = class_name.encode() + b"\0"
    native = (struct.pack("<II", 0x0501, 2) + struct.pack("<I", len(name)) + name
              + struct.pack("<II", 0, 0) + struct.pack("<I", len(ole)) + ole)
    hexed = native.hex()
    lines = "\r\n".join(hexed[i:i + 128] for i in range(0, len(hexed), 128))
    return ("{\\rtf1\\ansi{\\fonttbl{\\f0 Arial;}}\\f0 Minutes of the meeting\\par\r\n"
            "{\\object\\objemb{\\*\\objclass " + class_name + "}\\objw1000\\objh1000"
            "{\\*\\objdata\r\n" + lines + "\r\n}}}\r\n").encode()
