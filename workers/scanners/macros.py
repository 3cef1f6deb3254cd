"""The macros scanner: VBA macros in Office documents, judged by what they do.

Documents are read with oletools: olevba finds and decompresses the VBA
source in Office 97-2003 files (.doc, .xls, .ppt: OLE compound files), in
Office Open XML (.docm, .xlsm: word/vbaProject.bin and the like) and, through
rtfobj, in compound files embedded as OLE objects in RTF documents. Each
module's source goes to mraptor, which looks for the three things that make a
macro dangerous: it runs by itself when the document opens (AutoOpen,
Workbook_Open, Document_Open...), it writes files (Open ... For Output,
SaveToFile, ADODB.Stream...), it runs programs (Shell, CreateObject,
WScript.Shell...).

An auto-executing macro that writes files or runs programs gets
`on_auto_exec` (blocked by default); any other macro `on_macros` (clean by
default: a note in the verdict, since spreadsheets with harmless macros are
everyday mail). The finding names the document, the module's stream and the
keywords olevba found suspicious.

Bounded: documents over `max_size` bytes and those past `max_documents` per
message (embedded RTF objects count) are not opened, and get `on_limits`
(unscannable by default: twenty harmless decoys must not hide a dropper). A
document oletools cannot parse is logged and left to clamd: a broken document
is no reason to stop mail.
"""

from __future__ import annotations

import io
import logging
import warnings
import zipfile
from typing import Any, ClassVar

from shared.contract import Finding
from workers.derived import is_derived
from workers.filetype import sniff
from workers.message import ParsedMessage
from workers.scanners.base import Scanner, check_fallback, show_name
from workers.strip import locate, pinned

log = logging.getLogger("holdscan.macros")

MiB = 2**20
_KEYWORD_TYPES = ("AutoExec", "Suspicious")
_MAX_KEYWORDS = 8


def _oletools() -> Any:
    # Imported when first needed: oletools pulls in a good deal (pyparsing, msoffcrypto),
    # which a worker that never meets an Office document need not load. Its use of
    # pyparsing's old names warns on import; that is oletools' business, not the log's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from oletools import mraptor, olevba, rtfobj
    return olevba, mraptor, rtfobj


class MacrosScanner(Scanner):
    name = "macros"
    defaults: ClassVar[dict[str, Any]] = {
        "on_auto_exec": "blocked",      # runs on opening and writes files or runs programs
        "on_macros": "clean",           # any other VBA macro
        "max_size": 32 * MiB,           # larger documents are left to clamd
        "max_documents": 20,            # per message, embedded RTF objects included
        "on_limits": "unscannable",     # a document past max_size or max_documents
    }

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        for key in ("on_auto_exec", "on_macros", "on_limits"):
            check_fallback(self.name, key, self.options[key])

    def scan(self, msg: ParsedMessage) -> list[Finding]:
        findings: list[Finding] = []
        budget = [self.options["max_documents"]]
        for part in msg.parts:
            label = show_name(part.filenames[0]) if part.filenames else part.label
            found = []
            try:
                documents = self.documents(part.payload, label, budget)
            except _Unread as e:
                found.append((self.options["on_limits"], str(e)))
                documents = []
            for where, data in documents:
                found += self.judge(where, data)
            if found:
                paths = [] if is_derived(part) else locate(msg.raw, part.payload)
                for verdict, detail in found:
                    findings += pinned(self.finding(verdict, detail), paths)
        return list(dict.fromkeys(findings))

    def documents(self, data: bytes, label: str, budget: list[int]
                  ) -> list[tuple[str, bytes]]:
        """The Office documents in a part: the part itself, or the objects in an RTF.

        Raises _Unread for a document past `max_size` or `max_documents`: a decoy
        must not hide a dropper from the check."""
        if len(data) < 8:
            return []
        kind = sniff(data)
        rtf = data.lstrip()[:4] == b"{\\rt"     # all Word needs to take a file for RTF
        if not (kind == "ole" or rtf or (kind == "zip" and _is_ooxml(data))):
            return []
        if len(data) > self.options["max_size"]:
            raise _Unread(f"Office document larger than {self.options['max_size'] // MiB} "
                          f"MiB not checked for macros: {label}")
        if rtf:
            return self.rtf_objects(data, label, budget)
        self.spend(budget, label)
        return [(label, data)]

    def spend(self, budget: list[int], label: str) -> None:
        if budget[0] <= 0:
            raise _Unread(f"more than {self.options['max_documents']} Office documents, "
                          f"not all checked for macros: {label}")
        budget[0] -= 1

    def rtf_objects(self, data: bytes, label: str, budget: list[int]
                    ) -> list[tuple[str, bytes]]:
        _, _, rtfobj = _oletools()
        out = []
        try:
            parser = rtfobj.RtfObjParser(data)
            parser.parse()
        # oletools' parsers fail on hostile bytes in many ways of their own.
        except Exception as e:  # noqa: BLE001
            log.info("RTF %s not parsed: %s: %s", label, type(e).__name__, e)
            return []
        for n, obj in enumerate(parser.objects, 1):
            if obj.is_ole and obj.oledata and sniff(obj.oledata) == "ole":
                self.spend(budget, label)
                cls = (obj.class_name or b"").decode("latin-1", "replace")
                out.append((f"{label} > embedded object {n} ({cls})", bytes(obj.oledata)))
        return out

    def judge(self, where: str, data: bytes) -> list[tuple[str, str]]:
        olevba, mraptor, _ = _oletools()
        found = []
        try:
            parser = olevba.VBA_Parser(where, data=data, relaxed=True)
        except Exception as e:  # noqa: BLE001   (as in rtf_objects)
            log.info("document %s not parsed: %s: %s", where, type(e).__name__, e)
            return []
        try:
            if not parser.detect_vba_macros():
                return []
            modules = []
            dangerous = []
            for _, stream, _, code in parser.extract_macros():
                raptor = mraptor.MacroRaptor(code)
                raptor.scan()
                modules.append(stream)
                if raptor.suspicious:
                    does = [what for flag, what in ((raptor.write, "writes files"),
                                                    (raptor.execute, "runs programs")) if flag]
                    dangerous.append((stream, " and ".join(does)))
            keywords = list(dict.fromkeys(
                kw for kind, kw, _ in parser.analyze_macros() if kind in _KEYWORD_TYPES))
        except Exception as e:  # noqa: BLE001   (as in rtf_objects)
            log.info("macros of %s not read: %s: %s", where, type(e).__name__, e)
            return []
        finally:
            parser.close()
        shown = ", ".join(keywords[:_MAX_KEYWORDS]) + (", ..." if len(keywords) > _MAX_KEYWORDS
                                                       else "")
        for stream, does in dangerous:
            found.append((self.options["on_auto_exec"],
                          f"auto-executing macro that {does}: {where} {stream} ({shown})"))
        if not dangerous and modules:
            found.append((self.options["on_macros"],
                          f"VBA macros: {where} {', '.join(modules[:4])}"
                          + (f" ({shown})" if shown else "")))
        return found


class _Unread(Exception):
    """A document the limits keep from being checked."""


def _is_ooxml(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError,
            NotImplementedError):
        return False
    return "[Content_Types].xml" in names or any(
        n.lower().endswith("vbaproject.bin") for n in names)
