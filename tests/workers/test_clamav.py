"""The clamav scanner against a real clamd (started by the tests, no mocks)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from holdscan.lab.clamd import DETECTED_AS, ClamdServer, available
from shared.config import ConfigError
from tests.support.mail import EICAR, b64, eicar_variants, multipart, part, simple, zip_bytes
from tests.support.scanning import Scan, make_config
from tests.support.tools import require
from workers.clamdclient import Address
from workers.message import ParsedMessage
from workers.scanners import build_scanners
from workers.scanners.clamav import TOO_LARGE, ClamavScanner

pytestmark = pytest.mark.clamd


def clamav(addresses: list[str], **options: object) -> ClamavScanner:
    return ClamavScanner({"addresses": addresses, **options})


@pytest.mark.parametrize("how", list(eicar_variants()))
def test_eicar_is_infected_with_its_signature_name(scan: Scan, how: str) -> None:
    verdict = scan(eicar_variants()[how])
    assert verdict.verdict == "infected"
    assert [f.detail for f in verdict.findings if f.verdict == "infected"] == [DETECTED_AS]
    assert verdict.header_edits[0].value == f"infected ({DETECTED_AS})"


@pytest.mark.parametrize("which", [0, 1], ids=["unix", "tcp"])
def test_each_socket_kind_finds_eicar(clamd: ClamdServer, which: int) -> None:
    scanner = clamav([clamd.addresses[which]])
    msg = ParsedMessage.from_bytes(simple(EICAR))
    assert [(f.verdict, f.detail) for f in scanner.scan(msg)] == [("infected", DETECTED_AS)]
    assert scanner.scan(ParsedMessage.from_bytes(simple(b"hello\r\n"))) == []


def test_clean_message_needs_one_instream_only(clamd: ClamdServer) -> None:
    msg = ParsedMessage.from_bytes(multipart(part(b"hi\r\n", "text/plain", encoding="7bit"),
                                             part(b"%PDF-1.4\n" + bytes(5000), "application/pdf",
                                                  "a.pdf")))
    assert msg.suspect_parts == ()


def _hidden_from_clamd() -> dict[str, bytes]:
    """EICAR in shapes that clamd 1.4's MIME decoder does not reach (checked in
    the test itself) but other decoders, and so some mail clients, do."""
    enc = b64(EICAR).replace(b"\r\n", b"")
    attachment = (b'Content-Type: application/octet-stream; name="data.bin"\r\n'
                  b"Content-Transfer-Encoding: base64\r\n\r\n")
    top = b"Received: by mx\r\nMIME-Version: 1.0\r\n"
    return {
        # Python's base64 decoder and others skip a stray "="; clamd stops there.
        "base64 with padding mid-stream": multipart(attachment + enc[:20] + b"=" + enc[20:]),
        # RFC 2046 lets a delimiter line be matched by its prefix; clamd does not.
        "delimiter matched by prefix": top + (
            b'Content-Type: multipart/mixed; boundary="abc"\r\n\r\n--abc\r\n'
            b"Content-Type: text/plain\r\n\r\nhi\r\n--abcdef\r\n" + attachment + enc
            + b"\r\n--abc--\r\n"),
        # Two boundary parameters: clamd takes the first, others the last.
        "second boundary parameter": top + (
            b'Content-Type: multipart/mixed; boundary="abc"; boundary="xyz"\r\n\r\n'
            b"--abc\r\nContent-Type: text/plain\r\n\r\nhi\r\n--abc--\r\n--xyz\r\n"
            + attachment + enc + b"\r\n--xyz--\r\n"),
    }


@pytest.mark.parametrize("how", list(_hidden_from_clamd()))
def test_eicar_that_clamd_cannot_decode_is_found_by_the_part_scan(clamd: ClamdServer,
                                                                   how: str) -> None:
    msg = ParsedMessage.from_bytes(_hidden_from_clamd()[how])
    whole_only = clamav(clamd.addresses, scan_parts=False)
    assert whole_only.scan(msg) == [], "clamd alone should miss this (else the test proves nothing)"
    assert [f.detail for f in clamav(clamd.addresses).scan(msg)] == [DETECTED_AS]


def test_message_whose_first_header_clamd_does_not_know_is_still_read_as_mail(
        clamd: ClamdServer) -> None:
    # clamd decodes MIME only when the stream starts like mail; "X-..." does not.
    raw = multipart(part(zip_bytes({"e.txt": EICAR}), "application/zip", "a.zip"),
                    headers=b"X-Spam: no\r\nSubject: hi\r\nMIME-Version: 1.0\r\n")
    scanner = clamav(clamd.addresses)
    assert [f.detail for f in scanner.scan(ParsedMessage.from_bytes(raw))] == [DETECTED_AS]


def test_message_larger_than_stream_max_length_is_unscannable(clamd: ClamdServer) -> None:
    raw = simple(b"x" * 3_000_000)        # clamd here has StreamMaxLength 2M
    for reuse in (True, False):
        scanner = clamav(clamd.addresses, reuse_connections=reuse)
        for _ in range(2):    # and the session survives it (clamd ends the old one)
            found = scanner.scan(ParsedMessage.from_bytes(raw))
            assert [(f.verdict, f.detail) for f in found] == [("unscannable", TOO_LARGE)]
        assert scanner.scan(ParsedMessage.from_bytes(simple(EICAR)))[0].detail == DETECTED_AS


def test_failover_skips_dead_addresses(clamd: ClamdServer, tmp_path: os.PathLike[str]) -> None:
    dead = [f"unix:{tmp_path}/nothing.sock", "tcp:127.0.0.1:1"]
    scanner = clamav(dead + clamd.addresses, connect_timeout=1.0)
    for _ in range(6):      # every starting point of the round robin
        found = scanner.scan(ParsedMessage.from_bytes(simple(EICAR)))
        assert [(f.verdict, f.detail) for f in found] == [("infected", DETECTED_AS)]


def test_all_addresses_down_is_an_error(tmp_path: os.PathLike[str]) -> None:
    scanner = clamav([f"unix:{tmp_path}/nothing.sock", "tcp:127.0.0.1:1"], connect_timeout=1.0)
    found = scanner.scan(ParsedMessage.from_bytes(simple(b"hello\r\n")))
    assert [f.verdict for f in found] == ["error"]
    assert "clamd unavailable" in found[0].detail


@pytest.fixture
def own_clamd() -> Iterator[ClamdServer]:
    """A clamd this test may stop and start without disturbing the others."""
    require(available(), "clamd", "clamav-daemon")
    with ClamdServer(stream_max_length="2M") as server:
        yield server


@pytest.mark.parametrize("reuse", [True, False], ids=["session", "per-scan"])
def test_clamd_down_is_error_and_scanning_resumes_when_it_is_back(
        own_clamd: ClamdServer, scan: Scan, reuse: bool) -> None:
    scanners = build_scanners(make_config(own_clamd.addresses,
                                          clamav={"reuse_connections": reuse}))
    clean = simple(b"hello\r\n")
    assert scan(clean, scanners).verdict == "clean"     # opens a session when reuse is on

    own_clamd.stop()
    down = scan(clean, scanners)
    assert down.verdict == "error"
    assert any(f.scanner == "clamav" and f.verdict == "error" for f in down.findings)

    own_clamd.start()
    assert scan(clean, scanners).verdict == "clean"
    assert scan(simple(EICAR), scanners).verdict == "infected"


def test_stale_session_after_a_restart_costs_no_verdict(own_clamd: ClamdServer) -> None:
    scanner = clamav(own_clamd.addresses[:1])
    assert scanner.scan(ParsedMessage.from_bytes(simple(b"a\r\n"))) == []
    own_clamd.stop()
    own_clamd.start()
    # The kept session is dead; the scanner notices and opens a new one.
    assert scanner.scan(ParsedMessage.from_bytes(simple(b"a\r\n"))) == []


def test_clamd_that_stops_answering_times_out_as_error(own_clamd: ClamdServer) -> None:
    assert own_clamd.proc is not None
    scanner = clamav(own_clamd.addresses, timeout=0.5, connect_timeout=0.5)
    os.kill(own_clamd.proc.pid, signal.SIGSTOP)    # connections queue, nothing answers
    try:
        started = time.monotonic()
        found = scanner.scan(ParsedMessage.from_bytes(simple(b"hello\r\n")))
        assert [f.verdict for f in found] == ["error"]
        assert time.monotonic() - started < 5
    finally:
        os.kill(own_clamd.proc.pid, signal.SIGCONT)
    assert scanner.scan(ParsedMessage.from_bytes(simple(EICAR)))[0].detail == DETECTED_AS


@pytest.mark.parametrize("which", [0, 1], ids=["unix", "tcp"])
def test_the_url_forms_reach_the_same_clamd(clamd: ClamdServer, which: int) -> None:
    # unix:/path -> unix:///path, tcp:HOST:PORT -> tcp://HOST:PORT, as people write URLs.
    kind, rest = clamd.addresses[which].split(":", 1)
    scanner = clamav([f"{kind}://{rest}"])
    msg = ParsedMessage.from_bytes(simple(EICAR))
    assert [(f.verdict, f.detail) for f in scanner.scan(msg)] == [("infected", DETECTED_AS)]


@pytest.mark.parametrize("text, target", [
    ("unix:/run/clamav/clamd.ctl", "/run/clamav/clamd.ctl"),
    ("unix:///run/clamav/clamd.ctl", "/run/clamav/clamd.ctl"),
    ("tcp:127.0.0.1:3310", ("127.0.0.1", 3310)),
    ("tcp://127.0.0.1:3310", ("127.0.0.1", 3310)),
    ("tcp://clamd:3310", ("clamd", 3310)),
    ("TCP://clamd:3310", ("clamd", 3310)),
    ("tcp:[::1]:3310", ("::1", 3310)),
    ("tcp://[::1]:3310", ("::1", 3310)),
])
def test_address_forms(text: str, target: object) -> None:
    assert Address.parse(text).target == target


@pytest.mark.parametrize("text", [
    "localhost:3310", "127.0.0.1", "tcp://127.0.0.1", "tcp://127.0.0.1:0",
    "tcp://127.0.0.1:3310/", "tcp//127.0.0.1:3310", "tcp:127.0.0.1:99999", "tcp://:3310",
    "unix://run/clamd.ctl", "unix:relative.ctl", "unix:////x", "http://127.0.0.1:3310",
    "/run/clamav/clamd.ctl", "",
])
def test_addresses_that_cannot_work_are_refused_naming_the_forms(text: str) -> None:
    with pytest.raises(ValueError) as e:
        Address.parse(text)
    assert "tcp://host:port" in str(e.value) and "unix:///path" in str(e.value)


def test_sessions_carry_many_scans(clamd: ClamdServer) -> None:
    scanner = clamav(clamd.addresses[:1])
    for i in range(50):
        raw = simple(EICAR) if i % 7 == 0 else simple(f"message {i}\r\n".encode())
        found = scanner.scan(ParsedMessage.from_bytes(raw))
        assert [f.detail for f in found] == ([DETECTED_AS] if i % 7 == 0 else [])


def test_bad_addresses_and_unknown_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="tcp:host:port"):
        clamav(["localhost:3310"])
    with pytest.raises(ConfigError, match="'adresses'"):
        ClamavScanner({"adresses": ["unix:/x"]})
    with pytest.raises(ConfigError, match="timeout must be a number"):
        clamav(["unix:/x"], timeout="soon")
    # One address as a plain string is accepted, as `holdscan check` accepts it.
    assert ClamavScanner({"addresses": "unix:/run/clamd.ctl"}).pool.addresses[0].text \
        == "unix:/run/clamd.ctl"

