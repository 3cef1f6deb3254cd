"""OLE compound files (MS-CFB, version 3), written in code for the tests.

    compound_file({"Macros/VBA/dir": b"...", "WordDocument": b"..."}, root_class=...)

Paths name streams; the storages on the way are made as needed. Streams under
4096 bytes go to the mini stream, as the format requires (readers insist). The
result is a real compound file: olefile, oletools and Windows read it.
"""

from __future__ import annotations

import struct

SECTOR = 512
MINI = 64
CUTOFF = 4096
FREE, END, FATSECT, NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
STORAGE, STREAM, ROOT = 1, 2, 5


class _Node:
    def __init__(self, name: str, kind: int, data: bytes = b"") -> None:
        self.name, self.kind, self.data = name, kind, data
        self.kids: dict[str, _Node] = {}
        self.id = 0
        self.start = END
        self.right = NOSTREAM
        self.child = NOSTREAM


def _order(node: _Node) -> list[_Node]:
    # Siblings sorted as the format compares names (length first, then upper case),
    # chained through right siblings: a valid, if unbalanced, tree.
    return sorted(node.kids.values(), key=lambda n: (len(n.name), n.name.upper()))


def _sectors(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size].ljust(size, b"\0") for i in range(0, len(data), size)]


def compound_file(streams: dict[str, bytes], root_class: bytes = bytes(16)) -> bytes:
    root = _Node("Root Entry", ROOT)
    for path, data in streams.items():
        node = root
        *dirs, leaf = path.split("/")
        for d in dirs:
            node = node.kids.setdefault(d, _Node(d, STORAGE))
        node.kids[leaf] = _Node(leaf, STREAM, data)

    entries = [root]

    def number(node: _Node) -> None:
        kids = _order(node)
        for kid in kids:
            kid.id = len(entries)
            entries.append(kid)
        for a, b in zip(kids, kids[1:], strict=False):
            a.right = b.id
        if kids:
            node.child = kids[0].id
        for kid in kids:
            number(kid)

    number(root)

    # The mini stream: small streams in 64-byte mini sectors, chained in the mini FAT.
    mini = b""
    minifat: list[int] = []
    for e in entries:
        if e.kind == STREAM and len(e.data) < CUTOFF and e.data:
            e.start = len(minifat)
            count = -(-len(e.data) // MINI)
            minifat += [e.start + i + 1 for i in range(count - 1)] + [END]
            mini += e.data.ljust(count * MINI, b"\0")

    big = [e for e in entries if e.kind == STREAM and len(e.data) >= CUTOFF]
    dir_count = -(-len(entries) * 128 // SECTOR)
    minifat_count = -(-len(minifat) * 4 // SECTOR)
    ministream_count = -(-len(mini) // SECTOR)
    big_counts = [-(-len(e.data) // SECTOR) for e in big]
    body = dir_count + minifat_count + ministream_count + sum(big_counts)
    fat_count = 1
    while fat_count * (SECTOR // 4) < body + fat_count:
        fat_count += 1

    fat: list[int] = [FATSECT] * fat_count
    sectors: list[bytes] = []

    def chain(data: bytes, count: int) -> int:
        first = len(fat)
        fat.extend(first + i + 1 for i in range(count - 1))
        fat.append(END)
        sectors.extend(_sectors(data, SECTOR) or [bytes(SECTOR)])
        return first

    dir_start = len(fat)
    fat.extend(dir_start + i + 1 for i in range(dir_count - 1))
    fat.append(END)
    minifat_start = END
    if minifat:
        minifat_start = dir_start + dir_count
    # Directory sectors are written last (they need every start sector); reserve them.
    if minifat:
        chain(b"".join(struct.pack("<I", v) for v in minifat), minifat_count)
    if mini:
        root.start = chain(mini, ministream_count)
    for e, count in zip(big, big_counts, strict=True):
        e.start = chain(e.data, count)

    directory = b""
    for e in entries:
        name = e.name.encode("utf-16-le") + b"\0\0"
        size = len(mini) if e.kind == ROOT else len(e.data)
        start = e.start if (e.kind == ROOT and mini) or (e.kind == STREAM and e.data) else END
        if e.kind == STORAGE:
            start, size = 0, 0
        directory += struct.pack(
            "<64sHBBIII16sIQQIQ", name.ljust(64, b"\0"), len(name), e.kind, 1,
            NOSTREAM, e.right, e.child, root_class if e.kind == ROOT else bytes(16),
            0, 0, 0, start, size)
    directory = directory.ljust(dir_count * SECTOR, b"\0")
    # Unused directory slots must read as empty entries, not as storages.
    fat += [FREE] * (fat_count * (SECTOR // 4) - len(fat))
    difat = list(range(fat_count)) + [FREE] * (109 - fat_count)
    header = struct.pack("<8s16sHHHHH6sIIIIIIIII", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
                         bytes(16), 0x3E, 3, 0xFFFE, 9, 6, bytes(6), 0, fat_count, dir_start,
                         0, CUTOFF, minifat_start, minifat_count, END, 0)
    header += b"".join(struct.pack("<I", v) for v in difat)
    fat_bytes = b"".join(struct.pack("<I", v) for v in fat)
    return header + fat_bytes + directory + b"".join(sectors)


def package(filename: str, data: bytes, with_size: bool = True) -> bytes:
    """An OLE Package (MS-OLEDS 2.3.6 OLENativeStream): a file as Packager wraps it.

    `with_size` True: as stored in an `\\x01Ole10Native` stream (a total size first);
    False: as the native data of an RTF \\object of class Package."""
    name = filename.encode("cp1252") + b"\0"
    path = b"C:\\Users\\user\\Desktop\\" + name
    body = (struct.pack("<H", 2) + name + path + struct.pack("<II", 0x00030000, len(path))
            + path + struct.pack("<I", len(data)) + data)
    return struct.pack("<I", len(body)) + body if with_size else body


def outlook_message(attachments: dict[str, bytes]) -> bytes:
    """An Outlook .msg file with its attachments (data and long filename streams)."""
    streams = {"__substg1.0_0037001F": "Minutes".encode("utf-16-le"),
               "__properties_version1.0": bytes(32)}
    for n, (name, data) in enumerate(attachments.items()):
        storage = f"__attach_version1.0_#{n:08X}"
        streams[f"{storage}/__substg1.0_37010102"] = data
        streams[f"{storage}/__substg1.0_3707001F"] = name.encode("utf-16-le")
        streams[f"{storage}/__properties_version1.0"] = bytes(8)
    return compound_file(streams)
