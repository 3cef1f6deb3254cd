"""The archives scanner: members, rules, encryption and bombs, with bounded cost."""

from __future__ import annotations

import gzip
import random
import subprocess
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from shared.config import ConfigError
from shared.contract import Finding
from tests.support.mail import (
    PE,
    encrypted_flag,
    multipart,
    nested_bomb,
    overlapping_bomb,
    part,
    tar_bytes,
    zeros_gzip,
    zeros_zip,
    zip_bytes,
)
from tests.support.tools import require_program
from workers.message import ParsedMessage
from workers.scanners.archives import ArchivesScanner


def scan(payload: bytes, name: str = "a.zip", **options: Any) -> list[Finding]:
    msg = ParsedMessage.from_bytes(multipart(part(payload, "application/octet-stream", name)))
    return ArchivesScanner(options).scan(msg)


def actions(found: list[Finding]) -> list[tuple[str, str]]:
    return [(f.verdict, f.detail) for f in found]


def bounded(payload: bytes, name: str = "bomb.zip", **options: Any
            ) -> tuple[list[Finding], float, int]:
    """Scan, returning findings, seconds and peak Python memory in bytes."""
    msg = ParsedMessage.from_bytes(multipart(part(payload, "application/zip", name)))
    scanner = ArchivesScanner(options)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        found = scanner.scan(msg)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return found, seconds, peak


def test_exe_inside_a_zip_is_blocked_with_the_rule() -> None:
    found = scan(zip_bytes({"docs/readme.txt": b"hi", "docs/setup.exe": b"x"}))
    assert actions(found) == [("blocked", 'denied extension .exe: "docs/setup.exe" in "a.zip"')]


def test_program_renamed_inside_a_nested_zip_is_blocked_by_its_content() -> None:
    inner = zip_bytes({"invoice.pdf": PE})
    found = scan(zip_bytes({"inner.zip": inner}), "outer.zip")
    assert actions(found) == [("blocked", 'denied file type pe (Windows executable (PE)): '
                                          '"invoice.pdf" in "outer.zip" > "inner.zip"')]


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_members_get_the_rules(mode: str) -> None:
    found = scan(tar_bytes({"ok.txt": b"fine", "run.scr": b"x", "doc.pdf": PE}, mode), "a.tar")
    details = [f.detail for f in found]
    assert any("denied extension .scr" in d for d in details)
    assert any("denied file type pe" in d and '"doc.pdf"' in d for d in details)


def test_gzip_inner_name_and_content() -> None:
    found = scan(gzip.compress(PE), "setup.exe.gz")
    details = [f.detail for f in found]
    assert any('denied extension .exe: "setup.exe"' in d for d in details)
    assert any("denied file type pe" in d for d in details)


def test_zip_appended_to_another_file_is_still_listed() -> None:
    found = scan(b"\xff\xd8\xff\xe0 a jpeg " + zip_bytes({"x.exe": b"x"}), "photo.jpg")
    assert actions(found) == [
        ("blocked", 'denied extension .exe: "x.exe" in "photo.jpg"'),
        ("clean", '12 bytes before the first zip entry: "photo.jpg"')]


def test_binary_file_that_merely_contains_a_zip_signature_is_not_an_archive() -> None:
    rnd = random.Random(9)
    jpeg = b"\xff\xd8\xff\xe0" + rnd.randbytes(5000) + b"PK\x05\x06" + rnd.randbytes(40)
    assert scan(jpeg, "photo.jpg") == []
    assert scan(b"BZh91 is not bzip2, just text\r\n", "notes.txt") == []


def test_local_header_name_that_differs_from_the_directory_is_checked() -> None:
    data = zip_bytes({"readme.txt": b"hi"})
    local_name_at = data.index(b"readme.txt")         # the local header's copy comes first
    data = data[:local_name_at] + b"readme.exe" + data[local_name_at + 10:]
    details = [f.detail for f in scan(data)]
    assert any('denied extension .exe: "readme.exe"' in d for d in details)


def test_ordinary_archives_are_clean() -> None:
    assert scan(zip_bytes({f"notes/{i}.txt": b"text " * 200 for i in range(20)})) == []
    assert scan(tar_bytes({"a.txt": b"a", "b/c.csv": b"1,2\n" * 1000}), "a.tar.gz") == []
    assert scan(gzip.compress(b"log line\n" * 1000), "app.log.gz") == []


# --- encryption -------------------------------------------------------------------------

@pytest.mark.parametrize("outcome", ["blocked", "unscannable", "clean"])
def test_encrypted_zip_gets_the_configured_outcome(outcome: str) -> None:
    data = encrypted_flag(zip_bytes({"secret.docx": b"x" * 100}))
    found = scan(data, "secret.zip", on_encrypted=outcome)
    expected = [] if outcome == "clean" else [(outcome, 'encrypted archive: "secret.zip"')]
    assert actions(found) == expected


def test_zip_encrypted_by_the_zip_program_is_blocked(tmp_path: Path) -> None:
    require_program("zip")
    (tmp_path / "a.txt").write_text("secret")
    subprocess.run(["zip", "-q", "-P", "password", "e.zip", "a.txt"], cwd=tmp_path, check=True)
    found = scan((tmp_path / "e.zip").read_bytes(), "e.zip")
    assert actions(found) == [("blocked", 'encrypted archive: "e.zip"')]


def test_encrypted_members_still_have_their_names_checked() -> None:
    found = scan(encrypted_flag(zip_bytes({"run.exe": b"x"})), "p.zip", on_encrypted="clean")
    assert actions(found) == [("blocked", 'denied extension .exe: "run.exe" in "p.zip"')]


# --- bombs --------------------------------------------------------------------------------

def test_nested_bomb_is_stopped_quickly_in_little_memory() -> None:
    bomb = nested_bomb(layers=3, copies=10, bottom=20 << 20)   # 20 GB if unpacked
    found, seconds, peak = bounded(bomb)
    assert [f.verdict for f in found] == ["unscannable"]
    assert "compression ratio above 200:1" in found[0].detail
    assert seconds < 2.0
    assert peak < 16 << 20, f"peak Python memory {peak} bytes"


def test_nested_bomb_outcome_is_configurable() -> None:
    found = scan(nested_bomb(layers=2, copies=4, bottom=4 << 20), on_limits="blocked")
    assert [f.verdict for f in found] == ["blocked"]


def test_overlapping_entries_bomb_is_stopped() -> None:
    found, seconds, peak = bounded(overlapping_bomb(entries=1000, size=100 * 1024))
    assert actions(found) == [("unscannable", 'overlapping zip entries (zip bomb): "bomb.zip"')]
    assert seconds < 1.0
    assert peak < 16 << 20


def test_gzip_bomb_is_stopped_by_its_ratio_while_inflating() -> None:
    # gzip has no trustworthy size field: the ratio is watched as it inflates.
    compressed = zeros_gzip(128 << 20)      # 128 MiB of zeros in about 130 KB
    found, seconds, peak = bounded(compressed, "data.bin.gz")
    assert [f.verdict for f in found] == ["unscannable"]
    assert "compression ratio" in found[0].detail
    assert seconds < 2.0
    assert peak < 16 << 20


def test_too_many_members_and_too_deep_nesting() -> None:
    many = zip_bytes({f"{i}.txt": b"" for i in range(300)})
    assert "more than 100 archive members" in scan(many, max_members=100)[0].detail
    deep = b"x"
    for i in range(5):
        deep = zip_bytes({f"{i}.zip" if i else "x.txt": deep})
    assert scan(deep, max_depth=5) == []
    assert "nested deeper than 4 levels" in scan(deep, max_depth=4)[0].detail


def test_total_expansion_limit() -> None:
    data = zeros_zip("big.bin", 30 << 20)
    found = scan(data, max_expanded_size=10 << 20, max_ratio=100_000)
    assert "expands to more than 10 MiB" in found[0].detail


def test_damaged_zip_is_unscannable() -> None:
    data = zip_bytes({"a.txt": b"hello " * 1000})
    found = scan(data[:40] + b"\0" * 60 + data[100:])
    assert [f.verdict for f in found] == ["unscannable"]
    assert "damaged" in found[0].detail


def test_unknown_option_and_bad_outcome_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="'max_dept'"):
        ArchivesScanner({"max_dept": 3})
    with pytest.raises(ConfigError, match="on_encrypted must be one of"):
        ArchivesScanner({"on_encrypted": "reject"})
