"""Files embedded in documents: what a double-click on an icon in the document opens.

- OLE Package objects: a file (any file: invoice.exe, run.js) wrapped in an
  `\\x01Ole10Native` stream (MS-OLEDS 2.3.6), inside an Office 97-2003 document,
  inside word/embeddings/*.bin of an Office Open XML one, or in an RTF document's
  \\object (rtfobj hands out the package's name and bytes);
- other OLE objects in RTF (an embedded Word document, with its own objects);
- the attachments of an Outlook message (.msg): each `__attach_version1.0_#...`
  storage's data stream and its long or short filename.

Read with olefile and oletools' parsers. A document they cannot read yields
nothing here (clamd still scans it): a slightly odd document is no reason to
stop mail. At most `max_items` files, each cut at `limit` bytes.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

log = logging.getLogger("holdscan.embedded")

_NATIVE = "\x01Ole10Native"
_ATTACH_DATA = "__substg1.0_37010102"
# Long filename, short filename; Unicode (001F) and 8-bit (001E) forms.
_ATTACH_NAMES = ("__substg1.0_3707001F", "__substg1.0_3704001F",
                 "__substg1.0_3707001E", "__substg1.0_3704001E")


@dataclass(frozen=True)
class Embedded:
    name: str
    data: bytes
    how: str


def _stream(ole: object, path: list[str], limit: int) -> bytes:
    with ole.openstream(path) as f:     # type: ignore[attr-defined]
        return bytes(f.read(limit))


def _name(raw: bytes, entry: str) -> str:
    if entry.endswith("001F"):
        return raw.decode("utf-16-le", "replace").rstrip("\0")
    return raw.decode("cp1252", "replace").rstrip("\0")


def in_compound_file(data: bytes, max_items: int, limit: int) -> list[Embedded]:
    import olefile
    from oletools import oleobj
    out: list[Embedded] = []
    try:
        ole = olefile.OleFileIO(io.BytesIO(data))
    # olefile and oletools fail on hostile bytes in many ways of their own.
    except Exception as e:  # noqa: BLE001
        log.info("compound file not read: %s: %s", type(e).__name__, e)
        return out
    try:
        for path in ole.listdir(streams=True, storages=False):
            if len(out) >= max_items:
                break
            if path[-1] == _NATIVE:
                native = oleobj.OleNativeStream(_stream(ole, path, limit + 4096))
                if native.data:
                    out.append(Embedded(native.filename or "(package)", bytes(native.data)[:limit],
                                        f"OLE package in {'/'.join(path[:-1]) or 'the document'}"))
            elif path[-1] == _ATTACH_DATA and path[0].startswith("__attach_version1.0_#"):
                name = ""
                for entry in _ATTACH_NAMES:
                    if ole.exists([*path[:-1], entry]):
                        name = _name(_stream(ole, [*path[:-1], entry], 2048), entry)
                        break
                out.append(Embedded(name or "(attachment)", _stream(ole, path, limit),
                                    "attachment of an Outlook message"))
    except Exception as e:  # noqa: BLE001   (as above)
        log.info("compound file not fully read: %s: %s", type(e).__name__, e)
    finally:
        ole.close()
    return out


def in_rtf(data: bytes, max_items: int, limit: int) -> list[Embedded]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from oletools import rtfobj
    out: list[Embedded] = []
    try:
        parser = rtfobj.RtfObjParser(data)
        parser.parse()
    except Exception as e:  # noqa: BLE001   (as in in_compound_file)
        log.info("RTF not read: %s: %s", type(e).__name__, e)
        return out
    for n, obj in enumerate(parser.objects, 1):
        if len(out) >= max_items:
            break
        if obj.is_package and obj.olepkgdata:
            out.append(Embedded(obj.filename or f"(package {n})", bytes(obj.olepkgdata)[:limit],
                                "OLE package in RTF"))
        elif obj.is_ole and obj.oledata:
            cls = (obj.class_name or b"").decode("latin-1", "replace")
            out.append(Embedded(f"(embedded object {n}: {cls})", bytes(obj.oledata)[:limit],
                                "OLE object in RTF"))
        elif obj.rawdata:
            out.append(Embedded(f"(embedded object {n})", bytes(obj.rawdata)[:limit],
                                "object in RTF"))
    return out
