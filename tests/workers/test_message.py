"""ParsedMessage: the two readings, filenames, decoding, and bounded work."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.mail import HEADERS, PE, b64, multipart, part, simple
from workers.message import STRICT, TOLERANT, ParsedMessage, ParseLimits, decode_words


def names(raw: bytes) -> set[str]:
    return {n for p in ParsedMessage.from_bytes(raw).parts for n in p.filenames}


def attachment_with(disposition: str, ctype: str = "application/octet-stream") -> bytes:
    return multipart((f"Content-Type: {ctype}\r\nContent-Disposition: {disposition}\r\n"
                      "Content-Transfer-Encoding: base64\r\n\r\n").encode() + b64(b"data"))


def test_ordinary_message_reads_the_same_both_ways() -> None:
    msg = ParsedMessage.from_bytes(multipart(part(b"hello\r\n", "text/plain", encoding="7bit"),
                                             part(b"%PDF-1.4 x", "application/pdf", "a.pdf")))
    assert [p.payload for p in msg.parts] == [b"hello\r\n", b"%PDF-1.4 x"]
    assert all(p.readings == {STRICT, TOLERANT} for p in msg.parts)
    assert msg.parts[1].filenames == ("a.pdf",)
    assert msg.parts[1].content_type == "application/pdf"
    assert msg.undecidable == () and msg.suspect_parts == ()


def test_message_without_mime_is_one_text_part() -> None:
    msg = ParsedMessage.from_bytes(HEADERS + b"\r\nJust text.\r\n")
    assert [(p.content_type, p.payload) for p in msg.parts] == [("text/plain", b"Just text.\r\n")]


def test_rfc2231_continuations_and_charsets() -> None:
    assert "invoice.pdf.exe" in names(attachment_with(
        'attachment; filename*0="invoice.pd"; filename*1="f.exe"'))
    assert "Über.exe" in names(attachment_with("attachment; filename*=utf-8''%C3%9Cber.exe"))
    assert "Über.exe" in names(attachment_with("attachment; filename*=iso-8859-1'de'%DCber.exe"))
    # Mixed encoded and plain sections, and an unknown charset (falls back, no crash).
    assert "invoice.exe" in names(attachment_with(
        "attachment; filename*0*=utf-8''%69nv; filename*1=oice.exe"))
    assert "x.exe" in names(attachment_with("attachment; filename*=no-such-charset''x.exe"))


def test_rfc2047_encoded_words_in_filenames_are_decoded() -> None:
    assert "invoice.exe" in names(attachment_with(
        'attachment; filename="=?utf-8?B?aW52b2ljZS5leGU=?="'))
    assert "résumé.exe" in names(attachment_with(
        'attachment; filename="=?iso-8859-1?Q?r=E9sum=E9?= =?utf-8?Q?=2Eexe?="'))


def test_every_name_a_client_might_show_is_kept() -> None:
    raw = multipart(b'Content-Type: application/pdf; name="a.exe"\r\n'
                    b'Content-Disposition: attachment; filename="a.pdf"; filename="b.scr"\r\n'
                    b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(b"x"))
    assert {"a.exe", "a.pdf", "b.scr"} <= names(raw)
    # No ";" before the parameter: still a filename to some clients.
    assert "c.exe" in names(attachment_with("attachment filename=c.exe"))


def test_junk_in_base64_makes_the_part_suspect() -> None:
    encoded = b64(PE).replace(b"\r\n", b"")
    junky = b"*".join(encoded[i:i + 8] for i in range(0, len(encoded), 8))
    msg = ParsedMessage.from_bytes(multipart(
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + junky + b"\r\n"))
    assert PE in [p.payload for p in msg.parts]
    assert any(p.payload == PE for p in msg.suspect_parts)


def test_base64_padding_mid_stream_gives_both_readings() -> None:
    first, second = b"A" * 31, b"B" * 30     # 31 bytes: the first half ends in "=="
    body = b64(first).strip() + b64(second)
    msg = ParsedMessage.from_bytes(multipart(
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + body))
    payloads = {p.payload for p in msg.parts}
    assert first + second in payloads            # the decoder that skips "="
    assert first in payloads                     # the one that stops at it


def test_conflicting_content_type_headers_are_both_read_not_undecidable() -> None:
    raw = (HEADERS + b"Content-Type: text/plain\r\n"
           b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
           b"--b\r\n" + part(PE, "application/octet-stream", "x.bin") + b"\r\n--b--\r\n")
    msg = ParsedMessage.from_bytes(raw)
    assert any("2 Content-Type headers" in r for r in msg.problems)
    assert msg.undecidable == ()
    assert PE in [p.payload for p in msg.parts]


def test_parts_only_a_prefix_match_reveals_are_tolerant_only() -> None:
    raw = (HEADERS + b'Content-Type: multipart/mixed; boundary="abc"\r\n\r\n'
           b"--abc\r\nContent-Type: text/plain\r\n\r\nhi\r\n--abcdef\r\n"
           + part(PE, "application/octet-stream", "x.bin") + b"\r\n--abc--\r\n")
    msg = ParsedMessage.from_bytes(raw)
    hidden = [p for p in msg.parts if p.payload == PE]
    assert hidden and hidden[0].readings == {TOLERANT}
    assert any("read both ways" in r for r in msg.problems)
    assert msg.undecidable == ()


def test_missing_closing_boundary_is_only_a_problem_not_undecidable() -> None:
    raw = multipart(part(b"hi\r\n", "text/plain", encoding="7bit")).rsplit(b"--=_b0und4ry--", 1)[0]
    msg = ParsedMessage.from_bytes(raw)
    assert msg.undecidable == ()
    assert any("no closing boundary" in p for p in msg.problems)


def test_uuencoded_file_in_a_text_body_is_a_part_with_its_name() -> None:
    import binascii
    uu = b"".join(binascii.b2a_uu(PE[i:i + 45]) for i in range(0, len(PE), 45))
    msg = ParsedMessage.from_bytes(simple(b"see below\r\nbegin 644 setup.exe\r\n" + uu
                                          + b"`\r\nend\r\n"))
    found = [p for p in msg.parts if "setup.exe" in p.filenames]
    assert found and found[0].payload == PE


def test_decode_words_tolerates_garbage() -> None:
    assert decode_words("=?utf-8?B?@@@?=") == ""
    assert decode_words("plain") == "plain"
    assert decode_words("=?x-unknown?Q?a=2Eb?=") == "a.b"


# --- bounded work ---------------------------------------------------------------------

def timed(raw: bytes, limits: ParseLimits | None = None) -> tuple[ParsedMessage, float]:
    # CPU time of this process: what the parser costs, whatever else runs on the machine.
    started = time.process_time()
    msg = ParsedMessage.from_bytes(raw, limits)
    return msg, time.process_time() - started


def test_ten_thousand_parts_finish_quickly_and_are_undecidable() -> None:
    parts = b"".join(b"--B\r\nContent-Type: text/plain\r\n\r\nhello %d\r\n" % i
                     for i in range(10_000))
    msg, seconds = timed(HEADERS + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
                         + parts + b"--B--\r\n")
    assert seconds < 1.0
    assert msg.undecidable[0] == "more than 1000 MIME parts"
    assert len(msg.parts) == 1000


def test_absurd_nesting_finishes_quickly_and_is_undecidable() -> None:
    depth = 5000
    raw = HEADERS + b"".join(b'Content-Type: multipart/mixed; boundary="L%05d"\r\n\r\n--L%05d\r\n'
                             % (i, i) for i in range(depth)) + b"Content-Type: text/plain\r\n\r\nx"
    msg, seconds = timed(raw)
    assert seconds < 2.0
    assert msg.undecidable[0] == "MIME nesting deeper than 30 levels"


def test_many_boundary_candidates_cannot_multiply_the_work() -> None:
    # Every level declares four boundaries that all occur: the readings could
    # multiply; the work budget stops them.
    body = b"".join(b"--b%d\r\nContent-Type: text/plain\r\n\r\nx\r\n" % i for i in range(4)) * 2000
    ct = b"Content-Type: multipart/mixed; " + b"; ".join(b"boundary=b%d" % i for i in range(4))
    msg, seconds = timed(HEADERS + ct + b"\r\n\r\n" + body)
    assert seconds < 2.0
    assert b"x" in [p.payload for p in msg.parts]


def test_decoded_bytes_are_capped() -> None:
    big = part(bytes(3_000_000), "application/octet-stream", "a.bin")
    other = part(b"\x01" * 3_000_000, "application/octet-stream", "b.bin")
    msg, _ = timed(multipart(big, other + b"\r\n"),
                   ParseLimits(max_decoded_bytes=4_000_000))
    assert "decode to more than" in msg.undecidable[0]


def test_missing_boundary_and_bad_base64_still_give_parts() -> None:
    raw = (HEADERS + b"Content-Type: multipart/mixed\r\n\r\n--x\r\nContent-Type: text/plain\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n@@@not base64@@@\r\n--x\r\n"
           b"Content-Type: text/plain\r\n\r\nsecond\r\n--x--\r\n")
    msg, seconds = timed(raw)
    assert seconds < 0.5
    assert any("without a boundary" in r for r in msg.problems)
    assert b"second" in [p.payload for p in msg.parts]


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([
    b"--b\r\n", b"--b--\r\n", b"--bb\r\n", b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: message/rfc822\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Disposition: attachment; filename*0*=utf-8''%41; filename*1=.exe\r\n",
    b"\r\n", b"QUJD\r\n", b"=?utf-8?B?eA==?=\r\n", b"begin 644 x\r\n", b"end\r\n",
    b"Content-Type: text/plain; name=\"a\r\n", b"\xff\xfe\x00", b"=\r\n",
]), max_size=60))
def test_any_arrangement_of_mime_fragments_parses_without_error(pieces: list[bytes]) -> None:
    raw = HEADERS + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"".join(pieces)
    msg = ParsedMessage.from_bytes(raw)
    assert all(isinstance(p.payload, bytes) for p in msg.parts)


@settings(max_examples=100, deadline=2000)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_parse_without_error(raw: bytes) -> None:
    ParsedMessage.from_bytes(raw)
