"""The archives scanner: list zip, tar, gzip, bzip2 and xz archives, disc images
(ISO 9660 / UDF, every directory tree) and cabinets, nested too. Every zip in a
file is found, not only the last (workers/zipfind.py).

Members get the attachments scanner's filename and filetype rules (the same
defaults; this scanner's table takes the same rule keys). Encrypted archives,
whose contents nobody but the recipient can see, get `on_encrypted`; archives
that go past a limit (bombs: too deep, too many members, expanding too far or
too steeply, overlapping zip entries) get `on_limits`; archives that cannot
be read get `on_damaged`.

Nothing is extracted to disk and nothing is decompressed in full without a
cap: a member is sniffed from its first SNIFF_BYTES; only a member that is
itself an archive is read further, and at most `max_nested_size` of it. Zip
sizes are judged from the central directory before anything is inflated;
stream formats count every byte as it comes out. So a bomb costs a few
megabytes of inflating, not gigabytes.

Viruses inside archives are clamd's job: clamd unpacks nested archives itself
(ClamAV's MaxRecursion, 17 levels by default, counts MIME levels too). The
limits here are set inside clamd's, so what clamd would silently skip (it
does not alert on exceeded limits by default) is reported as a limit here
rather than passing as clean.
"""

from __future__ import annotations

import bz2
import functools
import io
import itertools
import lzma
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, ClassVar

import pyzipper

from shared.contract import Finding, ScanRequest
from workers import (
    budget,
    cabinet,
    discimage,
    embedded,
    passwords,
    sevenzip,
    smuggled,
    zipfind,
)
from workers.derived import derived_part, is_derived, is_guess
from workers.filetype import ARCHIVE_TYPES, DESCRIPTIONS, SNIFF_BYTES, sniff
from workers.message import ParsedMessage, Part
from workers.scanners.base import Scanner, ScanResult, check_fallback, show_name
from workers.scanners.filerules import RULE_DEFAULTS, FileRules
from workers.strip import locate, pinned

MiB = 2**20
_RATIO_FLOOR = MiB          # small members may compress steeply (zero padding); ignore them
_STREAM_CHUNK = 16 * 1024   # compressed bytes fed per step: bounds overshoot past a ratio
# Before a zip, these make it two archives in one file, not a zip with a preamble.
_CONTAINERS = ARCHIVE_TYPES | {"7z", "rar", "cab", "iso"}
# The GUID that starts a file embedded in a OneNote section,
# {BDE316E7-2665-4511-A4C4-8D4D0B7A9EAC}, as stored.
_ONENOTE_FILE = bytes.fromhex("e716e3bd65261145a4c48d4d0b7a9eac")
# Office Open XML names that may carry macros (a zip inside is walked anyway).
_OFFICE_MACRO_EXTENSIONS = (".docm", ".dotm", ".xlsm", ".xltm", ".xlam", ".pptm", ".potm",
                            ".ppam", ".ppsm", ".sldm")
# Archive kinds that are documents first: walked for what they embed, never a bomb.
_DOCUMENTS = ("ole", "rtf")
# Compressed streams: a zip signature inside one is noise, one after it is a zip.
# (Not tar: a zip stored in a tar shows its signatures in the tar's bytes.)
_STREAMS = ("gzip", "bzip2", "xz")


class _Stop(Exception):
    """A limit is reached; the current archive is not examined further."""


class _Damaged(Exception):
    """An archive (or a member) that cannot be read."""


def archive_kind(data: bytes) -> str | None:
    kind = sniff(data)
    if kind in ARCHIVE_TYPES:
        return kind
    # A zip is read from its end, so anything may precede it (a JPEG, a PDF):
    # every zip reader, and so the recipient, will still find the members. And
    # anything may follow it, for readers that start from the front.
    if data.find(zipfind.EOCD) >= 0:
        return "zip"
    return None


class ArchivesScanner(Scanner):
    name = "archives"
    defaults: ClassVar[dict[str, Any]] = {
        **RULE_DEFAULTS,
        "max_depth": 5,                     # archives inside archives
        "max_members": 5000,                # over all archives in one message
        "max_expanded_size": 400 * MiB,     # clamd's default MaxScanSize
        "max_nested_size": 32 * MiB,        # an inner archive is held in memory up to this
        "max_ratio": 200,                   # expanded : compressed, per member or stream
        "max_extracted_size": 64 * MiB,     # content scanned apart from its archive
        "max_passwords": 50,                # passwords tried on encrypted zips, per message
        "max_passwords_7z": 10,             # ... on 7z (each try ~55 ms of CPU), per message
        "max_zipcrypto_size": 4 * MiB,      # ZipCrypto bytes decrypted (~2.5 MB/s of CPU)
        "on_encrypted": "blocked",
        "on_concatenated": "blocked",
        "on_limits": "unscannable",
        "on_damaged": "unscannable",
    }

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.rules = FileRules.from_options(self.name, self.options)
        for key in ("on_encrypted", "on_concatenated", "on_limits", "on_damaged"):
            check_fallback(self.name, key, self.options[key])

    def scan(self, msg: ParsedMessage) -> list[Finding]:
        return self.examine(msg).findings

    def run(self, msg: ParsedMessage, request: ScanRequest) -> ScanResult:
        return self.examine(msg)

    def examine(self, msg: ParsedMessage) -> ScanResult:
        """Findings, and content inside the archives that clamd must get by itself."""
        words = functools.cache(
            lambda: passwords.candidates(msg, self.options["max_passwords"]))
        walk = _Walk(self.rules, self.options, words)
        findings: list[Finding] = []
        found: list[Part] = []
        for part in msg.parts:
            if archive_kind(part.payload) is None:
                continue
            label = show_name(part.filenames[0]) if part.filenames else part.label
            before = len(walk.findings)
            notes = len(walk.notes)
            extracted = len(walk.extracted)
            walk.top(part.payload, label, part.filenames[0] if part.filenames else "")
            new = [(a, d) for a, d in walk.findings[before:] if a != "clean"]
            if is_guess(part):
                # One of several guesses at a script's blob: a piece is no archive.
                new = [("clean" if d.startswith("damaged archive") else a, d) for a, d in new]
            if any(d.startswith("damaged archive") for _, d in new) and any(
                    _opens(p.payload) for p in msg.readings_of(part) if p is not part):
                # One decoder's reading of a part that another decoder reads as a
                # sound archive: to a client with that decoder it is a broken file,
                # not a hidden one (its bytes still go to clamd as a stream of their own).
                del walk.findings[before:]
                del walk.extracted[extracted:]
                continue
            new += [("clean", note) for note in walk.notes[notes:]]
            # A derived part is no piece of the raw message: there is nothing to pin.
            paths = [] if is_derived(part) or not new else locate(msg.raw, part.payload)
            for verdict, detail in new:
                # Pinned to the archive's part, so that a `strip` policy can remove it.
                findings += pinned(self.finding(verdict, detail), paths)
            found += [derived_part(part, suffix, data, name, how)
                      for suffix, name, data, how in walk.extracted[extracted:]]
        return ScanResult(list(dict.fromkeys(findings)), derived=found)


def _opens(data: bytes) -> bool:
    """A zip whose directory opens (nothing decompressed: a bomb costs nothing here)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return bool(zf.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError,
            EOFError, OSError, IndexError):
        return False


class _Walk:
    """One message's archives: shared budgets, collected findings."""

    def __init__(self, rules: FileRules, options: dict[str, Any],
                 words: Callable[[], list[str]] = list) -> None:
        self.rules = rules
        self.o = options
        self.words = words      # password candidates from the message, computed when needed
        # Tries left for the whole message (not per archive): fifty encrypted 7z
        # attachments must not cost fifty times the key derivations.
        self.tries = {"zip": options["max_passwords"], "7z": options["max_passwords_7z"]}
        self.members = 0
        self.expanded = 0
        self.findings: list[tuple[str, str]] = []
        self.notes: list[str] = []      # worth saying, not worth stopping the mail for
        # (suffix, name, content, how): for clamd, as derived parts of the top part
        self.extracted: list[tuple[str, str, bytes, str]] = []
        self.extracted_bytes = 0

    def top(self, data: bytes, label: str, name: str) -> None:
        try:
            self.archive(data, label, name, 1)
        except _Stop as e:
            self.findings.append((self.o["on_limits"], str(e)))

    # --- budgets ---

    def count(self, nbytes: int, label: str) -> None:
        self.expanded += nbytes
        if self.expanded > self.o["max_expanded_size"]:
            raise _Stop(f"archive expands to more than {self.o['max_expanded_size'] // MiB} MiB: "
                        f"{label}")

    def ratio(self, expanded: int, compressed: int, label: str) -> None:
        if expanded > _RATIO_FLOOR and expanded > self.o["max_ratio"] * max(compressed, 1):
            raise _Stop(f"archive compression ratio above {self.o['max_ratio']}:1 "
                        f"(zip bomb?): {label}")

    def member(self, name: str, label: str, counted: bool = True) -> None:
        """A member's name; `counted` False for another name of a member already counted."""
        budget.check()      # per member: the walk stops where the message's CPU budget ends
        self.members += counted
        if self.members > self.o["max_members"]:
            raise _Stop(f"more than {self.o['max_members']} archive members: {label}")
        rule = self.rules.check_name(name)
        if rule:
            self.findings.append(("blocked", f"{rule}: {show_name(name)} in {label}"))

    # --- dispatch ---

    def archive(self, data: bytes, label: str, name: str, depth: int,
                zip_after: bool = True) -> None:
        """Walk `data` as what it is; `zip_after` False: do not look for a zip after it."""
        kind = archive_kind(data)
        try:
            if kind == "zip" and zip_after:
                self.zip(data, label, depth)
            elif kind in _STREAMS and zip_after and data.find(zipfind.EOCD) >= 0 \
                    and self.zip(data, label, depth):
                pass    # a zip after the stream: zip() walked both
            elif kind == "tar":
                self.tar(io.BytesIO(data), label, depth, counted=False)
            elif kind in _STREAMS:
                self.compressed(data, kind, label, name, depth)
            elif kind in ("iso", "udf"):
                self.disc(data, label, depth)
            elif kind == "cab":
                self.cabinet(data, label, depth)
            elif kind == "7z":
                self.sevenzip(data, label, depth)
            elif kind == "onenote":
                self.onenote(data, label, depth)
            elif kind in ("ole", "rtf"):
                self.embedded(data, kind, label, depth)
        except _Damaged as e:
            self.findings.append((self.o["on_damaged"], f"damaged archive {label}: {e}"))

    def content(self, head: bytes, read: Callable[[int], bytes], name: str, label: str,
                depth: int, hand_on: bool = True) -> None:
        """A member's first bytes: filetype rules, and a nested archive is walked.

        `hand_on` False: an Office document is not handed on to the macro check
        (objects embedded in documents: charts are workbooks, and many of them)."""
        rule = self.rules.check_type(head)
        if rule:
            self.findings.append(("blocked", f"{rule}: {show_name(name)} in {label}"))
        kind = archive_kind(head)
        nested = kind is not None
        # Documents (OLE, RTF) are walked for their embedded files, but a large one is
        # everyday mail, not a bomb: past the limit it is noted and left to clamd.
        document = kind in _DOCUMENTS
        # Office documents go to the scanners after this one (macros) as parts.
        # (Not the macro project inside an Office Open XML document: that document is one.)
        lower = name.lower()
        office = hand_on and ((sniff(head) == "ole" and not lower.endswith("vbaproject.bin"))
                              or lower.endswith(_OFFICE_MACRO_EXTENSIONS))
        html = not nested and smuggled.looks_like_html(name, head)
        if not nested and not office and not html:
            return
        inner = f"{label} > {show_name(name)}"
        if nested and not document and depth >= self.o["max_depth"]:
            raise _Stop(f"archives nested deeper than {self.o['max_depth']} levels: {inner}")
        limit = self.o["max_nested_size"]
        data = head + read(limit + 1 - len(head))
        if len(data) > limit:
            if document:
                self.notes.append(f"document larger than {limit // MiB} MiB not searched "
                                  f"for embedded files or macros: {inner}")
                return
            raise _Stop(f"nested {'archive' if nested else 'document'} larger than "
                        f"{limit // MiB} MiB: {inner}")
        if office:
            self.extract(data, f"x{len(self.extracted) + 1}", name, inner,
                         f"Office document in {label}")
        if html:
            self.smuggled(data, name, inner, depth + 1)
        if nested and not (document and depth >= self.o["max_depth"]):
            self.archive(data, inner, name, depth + 1)

    def smuggled(self, html: bytes, name: str, label: str, depth: int) -> None:
        """The files a page in an archive would build in script (workers/smuggled.py):
        judged like members, each sent to clamd on its own."""
        blobs, _ = smuggled.find_blobs(html, self.o["max_nested_size"])
        names = smuggled.download_names(html)
        for i, (how, blob) in enumerate(blobs, 1):
            shown = names[0] if names else f"(file {i} built by {name})"
            for n, other in enumerate(names or (shown,)):
                self.member(other, label, counted=n == 0)
            before = len(self.findings)
            self.count(len(blob), label)
            self.content(blob[:SNIFF_BYTES], io.BytesIO(blob[SNIFF_BYTES:]).read, shown,
                         label, depth)
            if len(blobs) > 1:
                # One of several guesses at the script's blob: a piece is no archive.
                for j in range(before, len(self.findings)):
                    verdict, detail = self.findings[j]
                    if detail.startswith("damaged archive"):
                        self.findings[j] = ("clean", detail)
            self.extract(blob, f"h{len(self.extracted) + 1}", shown, label,
                         f"{how} in {label}")

    # --- zip ---

    def zip(self, data: bytes, label: str, depth: int) -> bool:
        """Walk every zip in `data`; False if there is none (and `data` is no zip)."""
        try:
            layout = zipfind.find(data, max_locals=2 * self.o["max_members"] + 100)
        except zipfind.TooMany as e:
            raise _Stop(f"{e}: {label}") from None
        try:
            if not layout.archives:
                if sniff(data) != "zip":
                    # Found only by a signature after other data. Any binary file
                    # has those four bytes now and then; unless a zip reader can
                    # open it, it is no archive, and not a damaged one.
                    return False
                self.orphans(layout.orphans, label, depth)
                raise _Damaged("BadZipFile: no central directory opens")
            self.concatenation(data, layout, label, depth)
            count = len(layout.archives)
            for i, archive in enumerate(layout.archives, 1):
                where = f"{label} (zip {i} of {count})" if count > 1 else label
                self.zip_members(archive, data, where, depth)
                if i < count:
                    # clamd, like Python, reads only the last directory: each
                    # earlier archive goes to it alone.
                    self.extract(archive.piece(data), f"zip{i}", "", where,
                                 f"zip {i} of {count} concatenated in {label}")
            self.orphans(layout.orphans, label, depth)
            return True
        finally:
            layout.close()

    def concatenation(self, data: bytes, layout: zipfind.Layout, label: str,
                      depth: int) -> None:
        """More than one archive in the bytes: readers disagree about what it holds."""
        prefix = layout.prefix
        before = sniff(data[:min(prefix, SNIFF_BYTES)]) if prefix else None
        if layout.concatenated or before in _CONTAINERS:
            what = [f"{len(layout.archives)} zip directories"] if len(layout.archives) > 1 else []
            if layout.orphans:
                what.append(f"{len(layout.orphans)} entries no directory lists")
            if before in _CONTAINERS:
                what.append(f"{DESCRIPTIONS[before]} before the zip")
            self.findings.append((self.o["on_concatenated"],
                                  f"concatenated archives ({', '.join(what)}): {label}"))
            if before in ARCHIVE_TYPES:
                # Only what comes before: the zip after it is being walked already.
                self.archive(data[:prefix], f"{label} (data before the zip)", "", depth,
                             zip_after=False)
        elif prefix:
            self.notes.append(f"{prefix} bytes before the first zip entry: {label}")

    def zip_members(self, archive: zipfind.Archive, data: bytes, label: str,
                    depth: int) -> None:
        zf = archive.zf
        infos = zf.infolist()
        if self.members + len(infos) > self.o["max_members"]:
            raise _Stop(f"more than {self.o['max_members']} archive members: {label}")
        self.zip_sizes(infos, label)
        unlocked = None
        if any(i.flag_bits & 0x1 for i in infos):
            unlocked = self.unlock_zip(archive, data, label)
            if unlocked is None:
                self.findings.append((self.o["on_encrypted"], f"encrypted archive: {label}"))
        try:
            self.zip_entries(zf, unlocked, data, label, depth)
        finally:
            if unlocked is not None:
                unlocked[0].close()

    def zip_entries(self, zf: zipfile.ZipFile, unlocked: tuple[Any, bytes] | None,
                    data: bytes, label: str, depth: int) -> None:
        for index, info in enumerate(zf.infolist()):
            names = _zip_names(info, data)
            # A member without a name is a member too; its other names count once.
            for n, name in enumerate(names or [""]):
                self.member(name, label, counted=n == 0)
            # Not info.is_dir(): it fails on an empty name (IndexError).
            if info.filename.endswith("/"):
                continue
            if info.flag_bits & 0x1:
                if unlocked is not None:
                    self.decrypted_zip_member(unlocked, index, label, depth)
                continue
            try:
                with zf.open(info) as f:
                    self.content(f.read(SNIFF_BYTES), f.read, info.filename, label, depth)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError,
                    EOFError, OSError, lzma.LZMAError, ValueError) as e:
                detail = (f"damaged archive member {show_name(info.filename)} in {label}: "
                          f"{type(e).__name__}")
                self.findings.append((self.o["on_damaged"], detail))

    # --- encrypted archives, opened with a password from the message ---

    def unlock_zip(self, archive: zipfind.Archive, data: bytes, label: str
                   ) -> tuple[Any, bytes] | None:
        """(pyzipper archive, password) if a word of the message opens the archive.

        Tried on its smallest encrypted member, read in full: ZipCrypto's one check
        byte lets 1 wrong password in 256 through, the CRC at the end does not.
        """
        slow = sum(i.compress_size for i in archive.zf.infolist()
                   if i.flag_bits & 0x1 and i.compress_type != _WINZIP_AES)
        if slow > self.o["max_zipcrypto_size"]:
            # ZipCrypto is decrypted in Python, about 2.5 MB/s of CPU: more than this
            # would spend the message's CPU budget. The archive stays encrypted to us.
            self.notes.append(f"ZipCrypto archive over {_size(self.o['max_zipcrypto_size'])} "
                              f"not decrypted: {label}")
            return None
        try:
            zf = pyzipper.AESZipFile(zipfind.Window(data, archive.end))
        except _DECRYPT_ERRORS:
            return None
        infos = zf.infolist()
        locked = [i for i, info in enumerate(infos)
                  if info.flag_bits & 0x1 and not info.filename.endswith("/")]
        if not locked:
            zf.close()
            return None
        probe = min(locked, key=lambda i: infos[i].compress_size)
        limit = self.o["max_nested_size"]
        for word in _encodings(self.words()[:self.o["max_passwords"]]):
            if self.tries["zip"] <= 0:
                break
            self.tries["zip"] -= 1
            try:
                with zf.open(infos[probe], pwd=word) as f:
                    f.read(limit)
            except _DECRYPT_ERRORS:
                continue
            self.notes.append(f"encrypted archive opened with a password from the message: "
                              f"{label}")
            return zf, word
        zf.close()
        return None

    def decrypted_zip_member(self, unlocked: tuple[Any, bytes], index: int, label: str,
                             depth: int) -> None:
        """Judged like any member; and sent to clamd, which cannot decrypt it."""
        zf, word = unlocked
        info = zf.infolist()[index]
        limit = self.o["max_nested_size"]
        try:
            with zf.open(info, pwd=word) as f:
                content = f.read(limit + 1)
        except (RuntimeError, zipfile.BadZipFile, zlib.error, NotImplementedError, ValueError,
                EOFError, OSError, lzma.LZMAError, struct.error) as e:
            # Another password, or damaged: nobody can look inside this member.
            self.findings.append((self.o["on_encrypted"],
                                  f"encrypted member {show_name(info.filename)} in {label} "
                                  f"({type(e).__name__})"))
            return
        self.decrypted(content, info.filename, label, depth)

    def decrypted(self, content: bytes, name: str, label: str, depth: int) -> None:
        limit = self.o["max_nested_size"]
        if len(content) > limit:
            raise _Stop(f"decrypted member larger than {limit // MiB} MiB: "
                        f"{show_name(name)} in {label}")
        self.count(len(content), label)
        self.content(content[:SNIFF_BYTES], io.BytesIO(content[SNIFF_BYTES:]).read, name,
                     label, depth)
        self.extract(content, f"d{len(self.extracted) + 1}", name, label,
                     f"decrypted with a password from the message, from {label}")

    def sevenzip(self, data: bytes, label: str, depth: int) -> None:
        """Names always; content when it is not encrypted or a word of the mail opens it."""
        password = None
        try:
            listing = sevenzip.listing(data)
        except sevenzip.NeedsPassword:
            listing = None
        except sevenzip.SevenZipError as e:
            raise _Damaged(str(e)) from None
        if listing is None or listing.encrypted:
            password, listing = self.unlock_7z(data, listing)
            if password is None:
                self.findings.append((self.o["on_encrypted"], f"encrypted archive: {label}"))
                for m in (listing.members if listing else []):
                    self.member(m.name, label)
                return
            self.notes.append(f"encrypted archive opened with a password from the message: "
                              f"{label}")
        assert listing is not None
        files = [m for m in listing.members if not m.is_dir]
        if self.members + len(listing.members) > self.o["max_members"]:
            raise _Stop(f"more than {self.o['max_members']} archive members: {label}")
        for m in listing.members:
            self.member(m.name, label)
        declared = sum(m.size for m in files)
        self.ratio(declared, len(data), label)
        if password is None and declared > self.o["max_nested_size"]:
            # Solid 7z has no cheap way to a member's first bytes: inflating it all would
            # cost seconds of CPU. clamd unpacks an unencrypted 7z itself.
            self.notes.append(f"7z content over {self.o['max_nested_size'] // MiB} MiB left "
                              f"to clamd (names judged): {label}")
            return
        self.count(declared, label)
        try:
            contents = sevenzip.contents(data, self.o["max_nested_size"] + 1, password)
        except sevenzip.SevenZipError as e:
            raise _Damaged(str(e)) from None
        for m in files:
            content = contents.get(m.name, b"")
            if password is not None:
                self.decrypted(content, m.name, label, depth)
            else:
                # clamd unpacks an unencrypted 7z itself; only the rules are ours.
                self.content(content[:SNIFF_BYTES], io.BytesIO(content[SNIFF_BYTES:]).read,
                             m.name, label, depth)

    def unlock_7z(self, data: bytes, listing: sevenzip.Listing | None
                  ) -> tuple[str | None, sevenzip.Listing | None]:
        # Each try costs a key derivation of 2^19 SHA-256 rounds: fewer tries than for zip.
        for word in self.words()[:self.o["max_passwords_7z"]]:
            if self.tries["7z"] <= 0:
                break
            self.tries["7z"] -= 1
            try:
                # An encrypted header opens only with the password; otherwise any
                # password lists it, and the CRCs of the content decide.
                found = listing or sevenzip.listing(data, word)
                sevenzip.contents(data, 1, word)
            except (sevenzip.SevenZipError, sevenzip.NeedsPassword):
                continue
            return word, found
        return None, listing

    def orphans(self, entries: list[zipfind.LocalEntry], label: str, depth: int) -> None:
        """Local entries that no directory lists: readers that walk local headers show them."""
        where = f"{label} (entries no directory lists)"
        for n, entry in enumerate(entries, 1):
            self.member(entry.name, where)
            content = self.inflate(entry, where)
            if content is None:
                continue
            self.content(content[:SNIFF_BYTES], io.BytesIO(content[SNIFF_BYTES:]).read,
                         entry.name, where, depth)
            self.extract(content, f"entry{n}", entry.name, where,
                         f"zip entry no directory lists in {label}")

    def inflate(self, entry: zipfind.LocalEntry, label: str) -> bytes | None:
        """An unlisted entry's content, if it is stored or deflated and its CRC holds."""
        if entry.compressed is None or entry.flags & 0x1 or entry.method not in (0, 8):
            return None
        limit = self.o["max_nested_size"]
        if entry.method == 0:
            out = entry.compressed[:limit + 1]
        else:
            try:
                out = zlib.decompressobj(-15).decompress(entry.compressed, limit + 1)
            except zlib.error:
                return None
        self.ratio(len(out), len(entry.compressed), f"{show_name(entry.name)} in {label}")
        if len(out) > limit:
            raise _Stop(f"zip entry larger than {limit // MiB} MiB: "
                        f"{show_name(entry.name)} in {label}")
        if zlib.crc32(out) != entry.crc:
            return None     # not an entry after all, or not one any reader would accept
        self.count(len(out), label)
        return out

    def extract(self, data: bytes, suffix: str, name: str, label: str, how: str) -> None:
        """Content clamd would not find in the message by itself: it goes as its own stream."""
        self.extracted_bytes += len(data)
        if self.extracted_bytes > self.o["max_extracted_size"]:
            raise _Stop(f"more than {self.o['max_extracted_size'] // MiB} MiB to scan "
                        f"separately: {label}")
        self.extracted.append((suffix, name, data, how))

    def zip_sizes(self, infos: list[zipfile.ZipInfo], label: str) -> None:
        """Judge a zip by its directory before inflating anything."""
        for info in infos:
            self.ratio(info.file_size, info.compress_size, f"{show_name(info.filename)} in {label}")
        self.count(sum(i.file_size for i in infos), label)
        # Entries that share compressed data (Fifield's non-recursive bomb)
        # multiply the expansion with no nesting and no steep ratio per entry.
        spans = sorted((i.header_offset, i.compress_size) for i in infos)
        for (start, size), (next_start, _) in itertools.pairwise(spans):
            if next_start < start + 30 + size:
                raise _Stop(f"overlapping zip entries (zip bomb): {label}")

    # --- disc images, cabinets ---

    def disc(self, data: bytes, label: str, depth: int) -> None:
        """Every name in every directory tree of the image; each file's content once."""
        try:
            disc = discimage.Disc(data)
        except discimage.DiscError as e:
            raise _Damaged(str(e)) from None
        try:
            seen: set[tuple[str, int]] = set()
            for entry in disc.entries(4 * self.o["max_members"]):
                first = entry.key not in seen
                self.member(entry.name, label, counted=first)
                if not first:
                    continue
                seen.add(entry.key)
                head = disc.read(entry, SNIFF_BYTES)
                self.count(len(head), label)

                def rest(n: int, entry: discimage.Entry = entry) -> bytes:
                    more = disc.read(entry, SNIFF_BYTES + n)[SNIFF_BYTES:]
                    self.count(len(more), label)
                    return more

                self.content(head, rest, entry.name, label, depth)
        except discimage.DiscError as e:
            raise _Damaged(str(e)) from None
        finally:
            disc.close()

    def cabinet(self, data: bytes, label: str, depth: int) -> None:
        try:
            cab = cabinet.read(data, self.o["max_members"])
        except cabinet.CabError as e:
            if "more than" in str(e):
                raise _Stop(f"{e}: {label}") from None
            raise _Damaged(str(e)) from None
        for m in cab.members:
            self.member(m.name, label)
        limit = self.o["max_nested_size"]
        folders: dict[int, bytes | None] = {}
        for index in sorted({m.folder for m in cab.members}):
            want = max(m.offset + m.size for m in cab.members if m.folder == index)
            if want > limit:
                raise _Stop(f"cabinet folder larger than {limit // MiB} MiB: {label}")
            try:
                folders[index] = cabinet.inflate(
                    data, cab, index, want, lambda out, taken: self.ratio(out, taken, label))
            except cabinet.CabError as e:
                raise _Damaged(str(e)) from None
            self.count(len(folders[index] or b""), label)
        for m in cab.members:
            out = folders.get(m.folder)
            if out is None:         # LZX or Quantum: listed, and left to clamd
                continue
            content = out[m.offset:m.offset + m.size]
            self.content(content[:SNIFF_BYTES], io.BytesIO(content[SNIFF_BYTES:]).read,
                         m.name, label, depth)

    def onenote(self, data: bytes, label: str, depth: int) -> None:
        """The files embedded in a OneNote section (FileDataStoreObject, MS-ONESTORE
        2.6.13): judged by content, and each sent to clamd on its own. Their names live
        in property sets this does not read; the content decides."""
        pos = data.find(_ONENOTE_FILE)
        n = 0
        while pos >= 0:
            n += 1
            if n > self.o["max_members"]:
                raise _Stop(f"more than {self.o['max_members']} embedded files: {label}")
            start = pos + 36        # header GUID, cbLength (8), unused (4), reserved (8)
            if start > len(data):
                break
            size, = struct.unpack_from("<Q", data, pos + 16)
            content = data[start:start + min(size, len(data) - start)]
            name = f"(embedded file {n})"
            self.member(name, label)
            self.count(len(content), label)
            self.content(content[:SNIFF_BYTES], io.BytesIO(content[SNIFF_BYTES:]).read, name,
                         label, depth)
            self.extract(content, f"one{n}", "", label, f"file embedded in OneNote {label}")
            pos = data.find(_ONENOTE_FILE, start + len(content))

    def embedded(self, data: bytes, kind: str, label: str, depth: int) -> None:
        """Files embedded in a document (workers/embedded.py): packages, RTF objects,
        Outlook attachments; judged like members. clamd reads these formats itself."""
        room = self.o["max_members"] - self.members + 1
        limit = self.o["max_nested_size"] + 1
        items = (embedded.in_rtf(data, room, limit) if kind == "rtf"
                 else embedded.in_compound_file(data, room, limit))
        for item in items:
            where = f"{label} ({item.how})"
            self.member(item.name, where)
            if len(item.data) > self.o["max_nested_size"]:
                raise _Stop(f"embedded file larger than {self.o['max_nested_size'] // MiB} MiB: "
                            f"{show_name(item.name)} in {label}")
            self.count(len(item.data), label)
            self.content(item.data[:SNIFF_BYTES], io.BytesIO(item.data[SNIFF_BYTES:]).read,
                         item.name, where, depth, hand_on=False)

    # --- tar ---

    def tar(self, fileobj: Any, label: str, depth: int, counted: bool) -> None:
        try:
            with tarfile.open(fileobj=fileobj, mode="r|") as tf:
                for ti in tf:
                    self.member(ti.name, label)
                    if not counted:     # a compressed stream counts its own output
                        self.count(ti.size, label)
                    if not ti.isfile():
                        continue
                    f = tf.extractfile(ti)
                    if f is not None:
                        self.content(f.read(SNIFF_BYTES), f.read, ti.name, label, depth)
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as e:
            raise _Damaged(f"{type(e).__name__}: {e}") from None

    # --- gzip, bzip2, xz ---

    def compressed(self, data: bytes, kind: str, label: str, name: str, depth: int) -> None:
        stream = _Stream(data, kind, self, label)
        inner = _gzip_name(data) if kind == "gzip" else ""
        inner = inner or _strip_suffix(name)
        if inner:
            self.member(inner, label)
        try:
            head = stream.read(SNIFF_BYTES)
            if sniff(head) == "tar":
                self.tar(_Prepended(head, stream), label, depth, counted=True)
            else:
                self.content(head, stream.read, inner or "(compressed data)", label, depth)
            # Read to the end, so that a bomb shows as one whatever it contains.
            while stream.read(MiB):
                pass
        except (zlib.error, lzma.LZMAError, OSError, EOFError) as e:
            raise _Damaged(f"{type(e).__name__}: {e}") from None


def _zip_names(info: zipfile.ZipInfo, data: bytes) -> list[str]:
    """The central directory's name, the local header's, and the Info-ZIP Unicode
    path: different unzip programs show different ones."""
    names = [info.filename]
    extra = info.extra
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        if tag == 0x7075 and size >= 5:
            names.append(extra[pos + 9:pos + 4 + size].decode("utf-8", "replace"))
        pos += 4 + size
    off = info.header_offset
    if data[off:off + 4] == b"PK\x03\x04" and off + 30 <= len(data):
        flags, = struct.unpack_from("<H", data, off + 6)
        length, = struct.unpack_from("<H", data, off + 26)
        raw = data[off + 30:off + 30 + length]
        names.append(raw.decode("utf-8" if flags & 0x800 else "cp437", "replace"))
    return list(dict.fromkeys(n for n in names if n))


def _gzip_name(data: bytes) -> str:
    """The original filename a gzip header may carry (FNAME)."""
    if len(data) < 10 or not data[3] & 0x08:
        return ""
    pos = 10
    if data[3] & 0x04:      # FEXTRA comes first
        if len(data) < 12:
            return ""
        pos += 2 + struct.unpack_from("<H", data, 10)[0]
    end = data.find(b"\0", pos, pos + 1024)
    return data[pos:end].decode("latin-1") if end > pos else ""


def _strip_suffix(name: str) -> str:
    lower = name.lower()
    for suffix, replacement in ((".tgz", ".tar"), (".gz", ""), (".bz2", ""), (".xz", "")):
        if lower.endswith(suffix):
            return name[: -len(suffix)] + replacement
    return ""


class _Stream:
    """The decompressed bytes of a gzip, bzip2 or xz stream, read with caps.

    Every byte that comes out counts against the message's expansion budget,
    and the ratio of bytes out to bytes in is watched as it goes, so a bomb is
    stopped after a few megabytes. Concatenated streams (legal in all three
    formats) are followed, in time linear in their number.
    """

    def __init__(self, data: bytes, kind: str, walk: _Walk, label: str) -> None:
        self.data = memoryview(data)
        self.kind = kind
        self.walk = walk
        self.label = label
        self.pos = 0            # position in the current stream's compressed bytes
        self.fed = 0            # compressed bytes handed to the decompressor, all streams
        self.out = 0
        self.tail = b""         # zlib's unconsumed input
        self.done = False
        self.d = self._decompressor()

    def _decompressor(self) -> Any:
        if self.kind == "gzip":
            return zlib.decompressobj(wbits=31)
        if self.kind == "bzip2":
            return bz2.BZ2Decompressor()
        return lzma.LZMADecompressor()

    def _input(self) -> bytes:
        chunk = bytes(self.data[self.pos:self.pos + _STREAM_CHUNK])
        self.pos += len(chunk)
        self.fed += len(chunk)
        return chunk

    def _step(self, want: int) -> bytes:
        d = self.d
        if self.kind == "gzip":
            given = self.tail or self._input()
            out = d.decompress(given, want)
            self.tail = d.unconsumed_tail
        else:
            given = self._input() if d.needs_input else b""
            out = d.decompress(given, want)
        if d.eof:
            # Where the next stream would start: the input the decompressor did
            # not use is a suffix of what it was given. Only a position moves,
            # so thousands of concatenated streams cost no copying of the rest.
            unused = len(d.unused_data) + len(getattr(d, "unconsumed_tail", b""))
            self.pos -= unused
            self.fed -= unused
            if sniff(bytes(self.data[self.pos:self.pos + 16])) == self.kind:
                self.tail = b""             # another stream follows
                self.d = self._decompressor()
            else:
                self.done = True
        elif not given and not out:
            self.done = True        # truncated: take what there is
        self.out += len(out)
        self.walk.count(len(out), self.label)
        self.walk.ratio(self.out, self.fed, self.label)
        return out

    def read(self, n: int = -1) -> bytes:
        want = n if n is not None and n >= 0 else 1 << 62
        parts = []
        got = 0
        while got < want and not self.done:
            chunk = self._step(min(want - got, MiB))
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)


class _Prepended:
    """A readable that gives `head` first, then the rest of `stream`."""

    def __init__(self, head: bytes, stream: _Stream) -> None:
        self.head = head
        self.stream = stream

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                out, self.head = self.head + self.stream.read(), b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            if len(out) < n:
                out += self.stream.read(n - len(out))
            return out
        return self.stream.read(n)


_WINZIP_AES = 99        # the compression method an AES-encrypted zip member declares
# pyzipper's BadZipFile is its own class, not zipfile's; and on hostile bytes its AES
# code fails with lookup errors too (an unknown key strength is a KeyError).
_DECRYPT_ERRORS = (RuntimeError, zipfile.BadZipFile, pyzipper.BadZipFile, zlib.error,
                   NotImplementedError, ValueError, EOFError, OSError, lzma.LZMAError,
                   struct.error, LookupError, TypeError)


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n // 1024} KiB"


def _encodings(words: list[str]) -> list[bytes]:
    """Each word as UTF-8, and as the code pages Windows' own zip tools use (cp437,
    cp1252) where those differ: zip passwords are bytes."""
    out: list[bytes] = []
    for word in words:
        for codec in ("utf-8", "cp437", "cp1252"):
            try:
                out.append(word.encode(codec))
            except UnicodeEncodeError:
                continue
    return list(dict.fromkeys(out))
