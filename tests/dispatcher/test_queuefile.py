"""The queue-file codec against hand-built queue files.

The builder below writes records by hand, independently of the code under
test, so that a bug shared by reader and writer cannot hide in a round trip.
"""

from __future__ import annotations

import pickle
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.queuefile import (
    QueueFile,
    QueueFileError,
    Recipient,
    Record,
    parse,
    read,
    serialize,
)
from tests.support.records import rec

C_LEN = 97          # 'C', one length byte, 6 x "%15ld" and 5 blanks


# -- a tiny, independent queue-file builder -------------------------------------------------------

def ptr(target: int) -> bytes:
    return rec(b"p", b"%15d" % target)


def size_record(data_size: int, data_offset: int, rcpt: int = 1, flags: int = 0,
                cont_length: int | None = None, sendopts: int = 0, nfields: int = 6) -> bytes:
    fields = [data_size, data_offset, rcpt, flags,
              data_size if cont_length is None else cont_length, sendopts][:nfields]
    return rec(b"C", " ".join(f"{v:15d}" for v in fields).encode())


def lines_to_records(lines: list[bytes], limit: int = 2048) -> list[bytes]:
    out = []
    for line in lines:
        while len(line) > limit:
            out.append(rec(b"L", line[:limit]))
            line = line[limit:]
        out.append(rec(b"N", line))
    return out


ENVELOPE = [rec(b"T", b"1700000000 123456"), rec(b"A", b"create_time=1700000001"),
            rec(b"A", b"rewrite_context=local"), rec(b"S", b"sender@example.test"),
            rec(b"A", b"log_client_name=localhost"),
            rec(b"A", b"dsn_orig_rcpt=rfc822;rcpt@example.test"),
            rec(b"O", b"rcpt@example.test"), rec(b"R", b"rcpt@example.test")]
LINES = [b"Received: from localhost", b"\tby mx.example.test; Tue, 14 Nov 2023",
         b"From: sender@example.test", b"To: rcpt@example.test", b"Subject: hello",
         b"", b"body line 1", b"body line 2"]


def build(envelope: list[bytes] | None = None, lines: list[bytes] | None = None,
          extracted: list[bytes] = (), *, content: list[bytes] | None = None,
          rcpt: int = 1, flags: int = 0, sendopts: int = 0, nfields: int = 6,
          tail: bytes = b"") -> bytes:
    """A straight queue file as cleanup writes one (tail: bytes after E)."""
    env = b"".join(ENVELOPE if envelope is None else envelope)
    body = b"".join(content if content is not None
                    else lines_to_records(LINES if lines is None else lines))
    c_len = 2 + 16 * nfields - 1
    data_offset = c_len + len(env) + 2
    c = size_record(len(body), data_offset, rcpt, flags, None, sendopts, nfields)
    assert len(c) == c_len
    return c + env + rec(b"M") + body + rec(b"X") + b"".join(extracted) + rec(b"E") + tail


def records_of(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(offset, type, data) of every record of a straight file, up to E."""
    out, pos = [], 0
    while pos < len(data):
        t = data[pos:pos + 1]
        n = shift = 0
        i = pos + 1
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        out.append((pos, t, data[i:i + n]))
        pos = i + n
        if t == b"E":
            break
    return out


def size_fields(data: bytes) -> list[int]:
    return [int(x) for x in records_of(data)[0][2].split()]


def assert_c_points_at_x(data: bytes) -> None:
    """What qmgr and postcat rely on: M ends at field 2, X sits at field 2 + field 1."""
    f = size_fields(data)
    assert data[f[1] - 2:f[1]] == b"M\x00"
    assert data[f[1] + f[0]:f[1] + f[0] + 2] == b"X\x00"
    assert f[4] == f[0]


# -- reading --------------------------------------------------------------------------------------

def test_parse_reads_envelope_content_and_extracted():
    data = build(extracted=[rec(b"A", b"encoding=8bit")])
    qf = parse(data)
    assert qf.size_fields == size_fields(data)
    assert [(r.type, r.data) for r in qf.envelope] == [
        (chr(e[0]), e[2:]) for e in ENVELOPE]
    assert qf.content == LINES
    assert qf.extracted == [Record("A", b"encoding=8bit")]
    assert qf.sender == "sender@example.test"
    assert qf.arrival_time == pytest.approx(1700000000.123456)
    assert qf.create_time == 1700000001.0
    assert qf.recipients == [Recipient("rcpt@example.test", "rcpt@example.test",
                                       "rfc822;rcpt@example.test", None, False)]


def test_straight_file_round_trips_byte_for_byte():
    env = [rec(b"T", b"1700000000 1"), rec(b"F", b"Full \xc3\xa9 Name"),
           rec(b"A", b"create_time=1700000000"), rec(b"i", b"envid-1"), rec(b"<", b"2"),
           rec(b"S", b"s@example.test"), rec(b"W", b"%15d" % 1700003600),
           rec(b"L", b"smtp:[127.0.0.1]:10025"), rec(b"I", b"inspector"),
           rec(b"V", b"+="), rec(b">", b"redirect@example.test"),
           rec(b"A", b"odd=\x00\xff binary"), rec(b"K", b"killed"),
           rec(b"n", b"6"), rec(b"o", b"rfc822;x@example.test"), rec(b"O", b"x@example.test"),
           rec(b"D", b"x@example.test"), rec(b"/", b"gone@example.test"),
           rec(b"R", b"y@example.test"), rec(b"c", b"1700000000")]
    ext = [rec(b"P", b"250"), rec(b"r", b"receipt@example.test"), rec(b"e", b"err@example.test"),
           rec(b"O", b"z@example.test"), rec(b"R", b"z@example.test"), rec(b"A", b"a=b")]
    data = build(env, extracted=ext, rcpt=4, flags=13, sendopts=1)
    assert serialize(parse(data)) == data


def test_unknown_envelope_records_come_back_in_order():
    mine = [rec(b"A", b"x-one=1"), rec(b"L", b"filter:next"), rec(b"A", b"x-two=\xfe\x00"),
            rec(b"D", b"done@example.test")]
    env = ENVELOPE[:4] + mine + ENVELOPE[4:]
    data = build(env)
    qf = parse(data)
    out = serialize(qf.with_headers(add=[("X-Scanned", "yes")]))
    # Everything between C and M is the envelope, byte for byte.
    assert out[C_LEN:out.index(b"M\x00", C_LEN)] == b"".join(env)


def test_filter_record_in_envelope_is_not_a_content_line():
    env = ENVELOPE[:4] + [rec(b"L", b"smtp:[127.0.0.1]:10025")] + ENVELOPE[4:]
    qf = parse(build(env))
    assert Record("L", b"smtp:[127.0.0.1]:10025") in qf.envelope
    assert qf.content == LINES


def test_null_sender():
    env = [rec(b"T", b"1700000000 0"), rec(b"S", b""), rec(b"R", b"r@example.test")]
    qf = parse(build(env))
    assert qf.sender == ""
    assert qf.create_time is None
    assert qf.arrival_time == 1700000000.0


def test_empty_body_keeps_the_separator_line():
    lines = [b"Subject: empty", b""]
    qf = parse(build(lines=lines))
    assert qf.content == lines
    assert qf.message_bytes() == b"Subject: empty\r\n\r\n"
    assert qf.message_bytes(b"\n") == b"Subject: empty\n\n"


def test_message_bytes_of_an_empty_message_is_empty():
    qf = parse(build()).with_message(b"")
    assert qf.content == []
    assert qf.message_bytes() == b""


def test_an_empty_message_is_written_with_a_dummy_pointer():
    # qmgr refuses a content size of 0, so the content is cleanup's placeholder
    # p record (offset 0), which every reader skips.
    out = serialize(parse(build()).with_message(b""))
    recs = [(t, d) for _, t, d in records_of(out)]
    m = recs.index((b"M", b""))
    assert recs[m + 1:m + 3] == [(b"p", b"%15d" % 0), (b"X", b"")]
    assert size_fields(out)[0] == 17
    assert_c_points_at_x(out)
    assert parse(out).content == []
    assert serialize(parse(out)) == out


@pytest.mark.parametrize("envelope,extracted,problem", [
    ([Record("S", b"")], [], "no valid T"),
    ([Record("T", b"soon"), Record("S", b"")], [], "no valid T"),
    ([Record("T", b"1700000000 0")], [], "no S"),
    ([Record("T", b"1700000000 0"), Record("S", b""), Record("N", b"x")], [], "envelope"),
    ([Record("T", b"1700000000 0"), Record("S", b""), Record("RR", b"x")], [], "envelope"),
    ([Record("T", b"1700000000 0"), Record("S", b"")], [Record("T", b"1 2")], "extracted"),
    ([Record("T", b"1700000000 0"), Record("S", b""), Record("A", b"no equals")], [],
     "malformed attribute"),
])
def test_serialize_refuses_what_parse_would_refuse(envelope, extracted, problem):
    with pytest.raises(ValueError, match=problem):
        serialize(QueueFile([1, 1, 1, 0, 1, 0], envelope, [b"Subject: x"], extracted))


def test_read_from_a_path(tmp_path):
    data = build()
    (tmp_path / "ABC123").write_bytes(data)
    assert read(tmp_path / "ABC123") == parse(data)
    assert read(str(tmp_path / "ABC123")).content == LINES


# -- recipients and attributes --------------------------------------------------------------------

def test_recipients_pair_orcpt_and_dsn_records_with_the_next_recipient():
    env = [rec(b"T", b"1700000000 0"), rec(b"S", b"s@example.test"),
           # attribute form
           rec(b"A", b"notify_flags=6"), rec(b"A", b"dsn_orig_rcpt=rfc822;a@orig.test"),
           rec(b"O", b"a-alias@example.test"), rec(b"R", b"a@example.test"),
           # pseudo record form
           rec(b"n", b"1"), rec(b"o", b"rfc822;b@orig.test"), rec(b"R", b"b@example.test"),
           # nothing
           rec(b"R", b"c@example.test"),
           # delivered already
           rec(b"O", b"d-alias@example.test"), rec(b"D", b"d@example.test"),
           # canceled: its O must not leak into the next recipient
           rec(b"O", b"e-alias@example.test"), rec(b"/", b"e@example.test"),
           # malformed notify flags are ignored, as qmgr does
           rec(b"A", b"notify_flags=x"), rec(b"R", b"f@example.test")]
    ext = [rec(b"O", b"g-alias@example.test"), rec(b"R", b"g@example.test")]
    qf = parse(build(env, extracted=ext, rcpt=7))
    assert qf.recipients == [
        Recipient("a@example.test", "a-alias@example.test", "rfc822;a@orig.test", 6, False),
        Recipient("b@example.test", None, "rfc822;b@orig.test", 1, False),
        Recipient("c@example.test", None, None, None, False),
        Recipient("d@example.test", "d-alias@example.test", None, None, True),
        Recipient("f@example.test", None, None, None, False),
        Recipient("g@example.test", "g-alias@example.test", None, None, False),
    ]
    # Per-recipient attributes are not message attributes.
    assert "dsn_orig_rcpt" not in qf.attributes
    assert "notify_flags" not in qf.attributes


def test_recipient_address_keeps_undecodable_bytes():
    env = [rec(b"T", b"1700000000 0"), rec(b"S", b"s\xe9@example.test"),
           rec(b"R", "ü@bücher.test".encode() + b"\xff")]
    qf = parse(build(env))
    assert qf.recipients[0].address.encode("utf-8", "surrogateescape") == \
        "ü@bücher.test".encode() + b"\xff"
    assert qf.sender.encode("utf-8", "surrogateescape") == b"s\xe9@example.test"


def test_attributes_follow_the_queue_manager():
    env = [rec(b"T", b"1700000000 0"), rec(b"c", b"1699999999"), rec(b"i", b"ENVID"),
           rec(b"<", b"2"), rec(b"S", b"s@example.test"),
           rec(b"A", b"create_time=1"), rec(b"A", b"encoding=7bit"),
           rec(b"A", b"log_client_name=first"), rec(b"A", b"client_name=first"),
           rec(b"A", b" spaced = value "), rec(b"A", b"empty="), rec(b"R", b"r@example.test")]
    ext = [rec(b"A", b"encoding=8bit"), rec(b"A", b"log_client_name=second"),
           rec(b"A", b"client_name=second")]
    qf = parse(build(env, extracted=ext))
    a = qf.attributes
    assert a["create_time"] == "1699999999"          # pseudo record first: first wins
    assert qf.create_time == 1699999999.0
    assert a["envelope_id"] == "ENVID"
    assert a["ret_flags"] == "2"
    assert a["encoding"] == "8bit"                   # extracted overrides envelope
    assert a["log_client_name"] == "second"
    assert a["client_name"] == "first"
    assert a["spaced"] == "value"
    assert a["empty"] == ""


# -- pointers -------------------------------------------------------------------------------------

def pointer_file() -> tuple[bytes, list[bytes], list[bytes]]:
    """A file edited the way cleanup edits one before it commits it.

    A recipient was appended (placeholder p before M points to the heap after
    E), a header was appended after the last header, and the heap pointers
    lead back. Returns (file, expected envelope data, expected lines).
    """
    env = [rec(b"T", b"1700000000 0"), rec(b"S", b"s@example.test"), rec(b"R", b"one@example.test")]
    header = lines_to_records(LINES[:5])
    body = lines_to_records(LINES[5:])
    env_b = b"".join(env)
    p_rcpt_at = C_LEN + len(env_b)
    data_offset = p_rcpt_at + 17 + 2
    p_hdr_at = data_offset + len(b"".join(header))
    x_at = p_hdr_at + 17 + len(b"".join(body))
    e_at = x_at + 2
    heap1_at = e_at + 2
    heap1 = rec(b"R", b"two@example.test") + ptr(p_rcpt_at + 17)
    heap2_at = heap1_at + len(heap1)
    heap2 = rec(b"N", b"X-Added: by cleanup") + rec(b"w", b"padding") + ptr(p_hdr_at + 17)
    data = (size_record(x_at - data_offset, data_offset, 2) + env_b + ptr(heap1_at) + rec(b"M")
            + b"".join(header) + ptr(heap2_at) + b"".join(body) + rec(b"X") + rec(b"E")
            + heap1 + heap2)
    assert data[x_at:x_at + 2] == b"X\x00"
    lines = LINES[:5] + [b"X-Added: by cleanup"] + LINES[5:]
    return data, [b"1700000000 0", b"s@example.test", b"one@example.test",
                  b"two@example.test"], lines


def test_pointers_are_followed_and_padding_skipped():
    data, env, lines = pointer_file()
    qf = parse(data)
    assert [r.data for r in qf.envelope] == env
    assert [r.address for r in qf.recipients] == ["one@example.test", "two@example.test"]
    assert qf.content == lines


def test_serialize_writes_pointer_files_straight():
    data, env, lines = pointer_file()
    out = serialize(parse(data))
    types = [t for _, t, _ in records_of(out)]
    assert b"p" not in types and b"w" not in types
    assert_c_points_at_x(out)
    again, orig = parse(out), parse(data)
    assert (again.envelope, again.content, again.extracted) == \
        (orig.envelope, orig.content, orig.extracted)
    # The pointer and the padding are gone from the content, the added header is in.
    assert again.size_fields[0] == orig.size_fields[0] - 17 + len(rec(b"N", b"X-Added: by cleanup"))
    assert len(out) == records_of(out)[-1][0] + 2     # nothing after E


def empty_content_file(content: list[bytes | str], heap: list[bytes | str] = ()) -> bytes:
    """A file whose content section is `content` (records), with `heap` after E.

    An item "->x" or "->heap" is a pointer to the X record or to the heap.
    """
    env_b = b"".join(ENVELOPE)
    data_offset = C_LEN + len(env_b) + 2
    x_at = data_offset + sum(17 if isinstance(r, str) else len(r) for r in content)
    targets = {"->x": x_at, "->heap": x_at + 4}

    def records(items: list[bytes | str]) -> bytes:
        return b"".join(ptr(targets[r]) if isinstance(r, str) else r for r in items)
    return (size_record(x_at - data_offset, data_offset) + env_b + rec(b"M")
            + records(content) + rec(b"X") + rec(b"E") + records(heap))


PTR_TO_X = "->x"
PTR_TO_HEAP = "->heap"


@pytest.mark.parametrize("content,heap", [
    ([PTR_TO_X], []),                                   # M, then a pointer straight to X
    ([rec(b"w", b"padding")], []),                      # only padding
    ([PTR_TO_HEAP], [rec(b"w", b"pad"), PTR_TO_X]),     # through the heap and back to X
    ([ptr(0), rec(b"w", b"x" * 200), PTR_TO_X], []),
], ids=["ptr-to-x", "padding", "via-heap", "mixed"])
def test_file_without_content_lines_parses_and_serializes(content, heap):
    # qmgr accepts such a file (the content size counts the p and w records)
    # and Postfix delivers it as an empty message.
    data = empty_content_file(content, heap)
    qf = parse(data)
    assert qf.content == [] and qf.message_bytes() == b""
    out = serialize(qf)
    assert_c_points_at_x(out)
    assert size_fields(out)[0] > 0
    again = parse(out)
    assert (again.envelope, again.content, again.extracted) == ([
        Record(chr(e[0]), e[2:]) for e in ENVELOPE], [], [])
    # What quarantine release does with it: fewer recipients, a new create_time.
    released = qf.with_recipients(lambda r: True).with_attribute("create_time", "1")
    assert parse(serialize(released)).attributes["create_time"] == "1"
    # A header edit gives it its first line.
    tagged = parse(serialize(qf.with_headers(add=[("X-Scanned", "yes")])))
    assert tagged.content == [b"X-Scanned: yes"]


def test_zero_pointer_is_a_placeholder():
    env = ENVELOPE + [ptr(0)]
    qf = parse(build(env))
    assert len(qf.envelope) == len(ENVELOPE)


def test_bytes_after_end_record_are_ignored():
    assert parse(build(tail=b"\x00garbage that is no record\xff")) == parse(build())


def test_long_forward_pointer_chain_is_fine():
    # 2,000 hops through the heap, each to a new place: legal, and linear.
    env_b = b"".join(ENVELOPE[:4])
    start = C_LEN + len(env_b)
    hops = 2000
    # Layout: C env p(->heap[0]) R M content X E heap[0..n-1]; heap[i] = p(->heap[i+1]),
    # the last one points back to the R record.
    r_at = start + 17
    body = b"".join(lines_to_records(LINES))
    data_offset = r_at + len(ENVELOPE[-1]) + 2
    x_at = data_offset + len(body)
    heap_at = x_at + 4
    heap = b"".join(ptr(heap_at + 17 * (i + 1)) for i in range(hops - 1)) + ptr(r_at)
    data = (size_record(len(body), data_offset) + env_b + ptr(heap_at) + ENVELOPE[-1]
            + rec(b"M") + body + rec(b"X") + rec(b"E") + heap)
    t0 = time.perf_counter()
    qf = parse(data)
    assert time.perf_counter() - t0 < 0.5
    assert qf.recipients[0].address == "rcpt@example.test"


# -- long lines -----------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2047, 2048, 2049, 3000, 4096, 100_000])
def test_long_lines_are_split_like_cleanup_and_rejoined(n):
    line = bytes(ord("a") + i % 26 for i in range(n))
    qf = parse(build()).with_message(b"Subject: long\r\n\r\n" + line + b"\r\nend\r\n")
    out = serialize(qf)
    recs = [(t, d) for _, t, d in records_of(out)]
    start = recs.index((b"N", b"")) + 1
    pieces = []
    for t, d in recs[start:]:
        pieces.append((t, len(d)))
        if t == b"N":
            break
    full, rest = divmod(n, 2048)
    if rest == 0:            # cleanup_out(): the last piece is an N of the full limit
        full, rest = full - 1, 2048
    assert pieces == [(b"L", 2048)] * full + [(b"N", rest)]
    assert parse(out).content == [b"Subject: long", b"", line, b"end"]
    assert_c_points_at_x(out)


def test_line_length_limit_is_honoured():
    qf = parse(build()).with_message(b"x" * 25 + b"\n")
    recs = [(t, len(d)) for _, t, d in records_of(serialize(qf, line_length_limit=10))]
    assert recs[recs.index((b"M", 0)) + 1:][:3] == [(b"L", 10), (b"L", 10), (b"N", 5)]
    with pytest.raises(ValueError):
        serialize(qf, line_length_limit=0)


def test_smtpd_style_split_with_empty_final_piece_round_trips():
    # smtpd ends a line of exactly 2 x 2048 bytes with an empty N record.
    content = [rec(b"N", b"Subject: s"), rec(b"N", b""), rec(b"L", b"y" * 2048),
               rec(b"L", b"y" * 2048), rec(b"N", b""), rec(b"N", b"end")]
    data = build(content=content)
    qf = parse(data)
    assert qf.content == [b"Subject: s", b"", b"y" * 4096, b"end"]
    assert serialize(qf) == data                  # unedited: records as read
    edited = serialize(qf.with_headers(add=[("X-A", "1")]))
    assert parse(edited).content == [b"Subject: s", b"X-A: 1", b"", b"y" * 4096, b"end"]
    assert_c_points_at_x(edited)


def test_unedited_content_with_pieces_over_the_limit_is_resplit():
    data = build(lines=[b"Subject: s", b"", b"z" * 3000])
    out = serialize(parse(data), line_length_limit=1000)
    assert [len(d) for _, t, d in records_of(out) if t == b"L"] == [1000, 1000]
    assert parse(out).content == [b"Subject: s", b"", b"z" * 3000]


# -- the C record after edits ---------------------------------------------------------------------

def test_size_record_is_recomputed_after_a_header_edit():
    data = build(rcpt=1, flags=13, sendopts=9)
    out = serialize(parse(data).with_headers(add=[("X-Scanned", "clean")]))
    c = records_of(out)[0][2]
    assert re.fullmatch(rb"( {0,14}\d{1,15} ){5} {0,14}\d{1,15}", c)
    assert len(c) == 95
    f = size_fields(out)
    old = size_fields(data)
    assert f[0] == old[0] + len(rec(b"N", b"X-Scanned: clean"))
    assert f[1] == old[1]
    assert f[2:4] == [1, 13] and f[5] == 9
    assert_c_points_at_x(out)


def test_size_record_with_five_fields_is_written_with_six():
    data = build(nfields=5)
    qf = parse(data)
    assert len(qf.size_fields) == 5
    out = serialize(qf)
    assert size_fields(out)[5] == 0
    assert_c_points_at_x(out)
    assert parse(out).content == qf.content


def test_size_record_with_three_fields_is_read():
    data = build(nfields=3, rcpt=1)
    out = serialize(parse(data))
    f = size_fields(out)
    assert f[2:4] == [1, 0] and f[5] == 0
    assert_c_points_at_x(out)


# -- header edits ---------------------------------------------------------------------------------

def header_qf(lines: list[bytes]) -> QueueFile:
    return parse(build(lines=lines))


def test_replace_removes_every_folded_instance_and_adds_at_the_end_of_the_header():
    qf = header_qf([b"Received: a", b"\tb", b"X-Spam: old", b"\tcontinued", b"Subject: s",
                    b"x-spam : older", b"", b"body", b"X-Spam: in the body"])
    out = qf.with_headers(add=[("X-Scanned", "yes")], replace=[("X-SPAM", "new")])
    assert out.content == [b"Received: a", b"\tb", b"Subject: s", b"X-Scanned: yes",
                           b"X-SPAM: new", b"", b"body", b"X-Spam: in the body"]
    assert qf.content[2] == b"X-Spam: old"           # the original is untouched
    assert parse(serialize(out)).content == out.content


def test_folded_value_is_written_as_physical_lines():
    out = header_qf(LINES).with_headers(add=[("X-Report", "one\r\n\ttwo\n three")])
    assert out.content[5:8] == [b"X-Report: one", b"\ttwo", b" three"]


@pytest.mark.parametrize("name,value", [("Bad Name", "v"), ("Colon:", "v"), ("", "v"),
                                        ("X-A", "a\r\nB: injected"), ("X-A", "a\rb"),
                                        ("X-A", "a\x00b")])
def test_bad_headers_are_refused(name, value):
    with pytest.raises(ValueError):
        header_qf(LINES).with_headers(add=[(name, value)])


def test_subject_tag_is_added_once():
    qf = header_qf(LINES)
    once = qf.with_headers(subject_tag="[SPAM]")
    twice = once.with_headers(subject_tag="[SPAM]")
    assert once.content[4] == b"Subject: [SPAM] hello"
    assert twice.content == once.content


def test_subject_tag_on_a_folded_or_empty_subject():
    qf = header_qf([b"Subject:", b"\t[SPAM] already", b"", b"b"])
    assert qf.with_headers(subject_tag="[SPAM]").content == qf.content
    qf = header_qf([b"Subject:", b"\tfolded", b"", b"b"])
    assert qf.with_headers(subject_tag="[X]").content[:2] == [b"Subject: [X]", b"\tfolded"]


def test_subject_tag_without_a_subject_adds_one():
    qf = header_qf([b"From: a@b.test", b"", b"b"])
    assert qf.with_headers(subject_tag="[SPAM]").content == [
        b"From: a@b.test", b"Subject: [SPAM]", b"", b"b"]


def test_non_ascii_header_sets_the_smtputf8_header_flag():
    qf = header_qf(LINES)
    assert qf.with_headers(add=[("X-A", "plain")]).size_fields[5] == 0
    out = qf.with_headers(add=[("X-Verdict", "sauber \u00fc")])
    assert out.size_fields[5] & 2
    assert size_fields(serialize(out))[5] == 2


def test_header_section_without_an_empty_line():
    qf = header_qf([b"Subject: only headers", b"From: a@b.test"])
    assert qf.with_headers(add=[("X-A", "1")]).content[-1] == b"X-A: 1"
    qf = header_qf([b"Subject: s", b"no header here", b"body"])
    assert qf.with_headers(add=[("X-A", "1")]).content == [
        b"Subject: s", b"X-A: 1", b"no header here", b"body"]
    qf = header_qf([b"  starts with a blank", b"body"])
    assert qf.with_headers(add=[("X-A", "1")]).content == [
        b"X-A: 1", b"", b"  starts with a blank", b"body"]


def test_with_message_splits_on_crlf_and_lf():
    qf = parse(build())
    m = qf.with_message(b"Subject: a\r\nX: b\n\r\nbody\r\nlast")
    assert m.content == [b"Subject: a", b"X: b", b"", b"body", b"last"]
    crlf = b"Subject: a\r\n\r\nbody\r\n"
    assert qf.with_message(crlf).message_bytes() == crlf
    assert qf.with_message(b"\n").content == [b""]
    assert m.envelope == qf.envelope and m.size_fields == qf.size_fields


# -- recipients -----------------------------------------------------------------------------------

def test_with_recipients_drops_a_recipient_with_its_records():
    env = [rec(b"T", b"1700000000 0"), rec(b"S", b"s@example.test"), rec(b"A", b"keep=1"),
           rec(b"A", b"notify_flags=2"), rec(b"A", b"dsn_orig_rcpt=rfc822;a@x.test"),
           rec(b"O", b"a@x.test"), rec(b"R", b"a@x.test"),
           rec(b"n", b"4"), rec(b"o", b"rfc822;b@x.test"), rec(b"O", b"b@x.test"),
           rec(b"R", b"b@x.test"), rec(b"D", b"c@x.test")]
    ext = [rec(b"O", b"d@x.test"), rec(b"R", b"d@x.test"), rec(b"A", b"x=y")]
    qf = parse(build(env, extracted=ext, rcpt=4))
    only_b = qf.with_recipients(lambda r: r.address == "b@x.test")
    out = serialize(only_b)
    again = parse(out)
    assert [r.address for r in again.recipients] == ["b@x.test"]
    assert again.recipients[0] == Recipient("b@x.test", "b@x.test", "rfc822;b@x.test", 4)
    assert [(r.type, r.data) for r in again.envelope] == [
        ("T", b"1700000000 0"), ("S", b"s@example.test"), ("A", b"keep=1"),
        ("n", b"4"), ("o", b"rfc822;b@x.test"), ("O", b"b@x.test"), ("R", b"b@x.test")]
    assert again.extracted == [Record("A", b"x=y")]
    assert again.size_fields[2] == 1
    assert again.content == qf.content
    assert_c_points_at_x(out)
    # The content records are the ones read: unchanged bytes after M.
    data = build(env, extracted=ext, rcpt=4)
    assert out[out.index(b"M\x00"):out.index(b"X\x00")] in data


# -- errors ---------------------------------------------------------------------------------------

def test_error_names_offset_and_problem():
    e = QueueFileError(42, "something is wrong")
    assert str(e) == "offset 42: something is wrong"
    assert (e.offset, e.problem) == (42, "something is wrong")
    assert isinstance(e, ValueError)
    copy = pickle.loads(pickle.dumps(e))
    assert (copy.offset, copy.problem, str(copy)) == (42, "something is wrong", str(e))


def bad(data: bytes) -> QueueFileError:
    with pytest.raises(QueueFileError) as info:
        parse(data)
    assert str(info.value) == f"offset {info.value.offset}: {info.value.problem}"
    return info.value


def test_empty_file():
    assert bad(b"").offset == 0


@pytest.mark.parametrize("cut", [1, 50, C_LEN + 3, C_LEN + 20, -30, -3, -1])
def test_truncated_file(cut):
    data = build()
    e = bad(data[:cut])
    assert e.offset <= len(data[:cut])
    assert "truncated" in e.problem or "end of file" in e.problem


def test_missing_end_record():
    data = build()
    e = bad(data[:-2])
    assert "E (end of file)" in e.problem
    assert e.offset == len(data) - 2


def test_missing_x_and_m_records():
    data = build()
    x_at = data.index(b"X\x00E\x00")
    assert "X" in bad(data[:x_at]).problem
    m_at = data.index(b"M\x00")
    assert "M" in bad(data[:m_at]).problem


@pytest.mark.parametrize("data_size_delta,offset_delta", [(2, 0), (-2, 0), (0, 2), (0, -2),
                                                          (10_000, 0)])
def test_size_record_that_does_not_point_at_x(data_size_delta, offset_delta):
    data = build()
    f = size_fields(data)
    wrong = size_record(f[0] + data_size_delta, f[1] + offset_delta)
    e = bad(wrong + data[C_LEN:])
    assert e.offset == 0
    assert "size record points at" in e.problem


@pytest.mark.parametrize("c_data,problem", [
    (b"1 2", "fields"), (b"10 abc 1 0 10 0", "not a number"), (b"0 100 1 0 0 0", "positive"),
    (b"10 100 1 32 10 0", "flags"), (b"10 100 1 0 -1 0", "negative"),
    (b"1" * 5000 + b" 100 1 0 10 0", "not a number")])
def test_malformed_size_record(c_data, problem):
    data = build()
    assert problem in bad(rec(b"C", c_data) + data[C_LEN:]).problem


def test_first_record_must_be_the_size_record():
    assert "expected C" in bad(build()[C_LEN:]).problem
    assert "expected C" in bad(b"Hello, this is not a queue file\n").problem


def test_pointer_loop():
    env_b = b"".join(ENVELOPE)
    p_at = C_LEN + len(env_b)
    body = b"".join(lines_to_records(LINES))
    data_offset = p_at + 17 + 2
    data = (size_record(len(body), data_offset) + env_b + ptr(p_at) + rec(b"M") + body
            + rec(b"X") + rec(b"E"))
    e = bad(data)
    assert "pointer loop" in e.problem and e.offset == p_at


def test_two_pointer_cycle():
    env_b = b"".join(ENVELOPE)
    p_at = C_LEN + len(env_b)
    body = b"".join(lines_to_records(LINES))
    data_offset = p_at + 17 + 2
    x_at = data_offset + len(body)
    heap_at = x_at + 4
    data = (size_record(len(body), data_offset) + env_b + ptr(heap_at) + rec(b"M") + body
            + rec(b"X") + rec(b"E") + ptr(heap_at + 17) + ptr(heap_at))
    assert "pointer loop" in bad(data).problem


def test_pointer_beyond_the_end_and_malformed_pointer():
    data = build(ENVELOPE + [ptr(10**9)])
    assert "beyond the end" in bad(data).problem
    data = build(ENVELOPE + [rec(b"p", b"12x")])
    assert "malformed pointer" in bad(data).problem
    data = build(ENVELOPE + [rec(b"p", b"9" * 40)])
    assert "malformed pointer" in bad(data).problem


def test_five_byte_length_is_refused():
    data = build()
    at = C_LEN + len(ENVELOPE[0])
    five = data[:at] + b"A\x81\x80\x80\x80\x00" + data[at:]
    e = bad(five)
    assert e.offset == at and "more than 4 bytes" in e.problem


def test_four_byte_length_reaching_past_the_end_is_truncation():
    data = build()
    at = C_LEN
    e = bad(data[:at] + b"A\xff\xff\xff\x7f" + data[at:])
    assert e.offset == at and "truncated" in e.problem


@pytest.mark.parametrize("where,record,problem", [
    ("envelope", rec(b"N", b"a line"), "in the envelope"),
    ("envelope", rec(b"E"), "in the envelope"),
    ("envelope", rec(b"\x01", b"?"), "in the envelope"),
    ("envelope", size_record(1, 1), "second C"),
    ("envelope", rec(b"A", b"no equals sign"), "malformed attribute"),
    ("envelope", rec(b"A", b""), "malformed attribute"),
    ("extracted", rec(b"T", b"1 2"), "after the X record"),
    ("extracted", rec(b"A", b"a b=c"), "malformed attribute"),
])
def test_unexpected_records(where, record, problem):
    data = build(ENVELOPE + [record]) if where == "envelope" else build(extracted=[record])
    assert problem in bad(data).problem


def test_unexpected_record_in_content():
    data = build(content=[rec(b"N", b"Subject: x"), rec(b"R", b"r@example.test")])
    assert "message content" in bad(data).problem


@pytest.mark.parametrize("env,problem", [
    ([rec(b"S", b"s@x.test"), rec(b"R", b"r@x.test")], "no T"),
    ([rec(b"T", b"1700000000 0"), rec(b"R", b"r@x.test")], "no S"),
    ([rec(b"T", b"yesterday"), rec(b"S", b""), rec(b"R", b"r@x.test")], "malformed T"),
    ([rec(b"T", b"0 0"), rec(b"S", b""), rec(b"R", b"r@x.test")], "malformed T"),
])
def test_required_envelope_records(env, problem):
    assert problem in bad(build(env)).problem


# -- properties: bad input never escapes as another exception, and never hangs --------------------

def _check_parse(data: bytes) -> None:
    t0 = time.perf_counter()
    try:
        qf = parse(data)
    except QueueFileError as e:
        assert 0 <= e.offset <= len(data)
    else:
        # Whatever parses must also write out and read back the same.
        back = parse(serialize(qf))
        assert (back.envelope, back.content, back.extracted) == \
            (qf.envelope, qf.content, qf.extracted)
    assert time.perf_counter() - t0 < 1.0


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_parse_or_raise(data):
    _check_parse(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_after_a_valid_size_record_parse_or_raise(tail):
    _check_parse(size_record(50, C_LEN + 10) + tail)


SAMPLES = [build(), pointer_file()[0],
           build(lines=[b"Subject: s", b"", b"q" * 5000, b""],
                 extracted=[rec(b"O", b"o@x.test"), rec(b"R", b"r@x.test")]),
           empty_content_file([PTR_TO_X]),
           empty_content_file([rec(b"N", b"a"), PTR_TO_HEAP, rec(b"N", b"skipped")],
                              [rec(b"L", b"b"), rec(b"w", b""), PTR_TO_X])]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        i = draw(st.integers(0, len(data) - 1)) if data else 0
        if not data:
            break
        if kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, ord("p"), ord("E"),
                                            ord("X"), ord("M"), ord("L"), ord("N")]))
        elif kind == "cut":
            del data[i:]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=20))
        else:
            del data[i:i + draw(st.integers(1, 40))]
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_valid_files_parse_or_raise(data):
    _check_parse(data)


_ENV_TYPES = "TFILDRO/WVAK><cion"
_EXT_TYPES = "DRO/PreAFIL>K"


def _records(types: str) -> st.SearchStrategy[list[Record]]:
    def fix(r: Record) -> Record:
        if r.type == "A" and b"=" not in r.data.split(b"\0", 1)[0]:
            return Record("A", b"name=" + r.data)
        return r
    return st.lists(st.builds(Record, st.sampled_from(types), st.binary(max_size=300)).map(fix),
                    max_size=12)


@settings(max_examples=200, deadline=None)
@given(env=_records(_ENV_TYPES), ext=_records(_EXT_TYPES),
       lines=st.lists(st.binary(max_size=5000), min_size=1, max_size=8),
       limit=st.integers(1, 3000), fields=st.lists(st.integers(0, 31), min_size=6, max_size=6))
def test_any_model_survives_serialize_and_parse(env, ext, lines, limit, fields):
    envelope = [Record("T", b"1700000000 5"), Record("S", b"s@example.test")] + env
    qf = QueueFile([1, 1] + fields[2:], envelope, lines, ext)
    out = serialize(qf, limit)
    back = parse(out)
    assert back.envelope == qf.envelope
    assert back.extracted == qf.extracted
    assert back.content == qf.content
    assert back.size_fields[2:4] == fields[2:4] and back.size_fields[5] == fields[5]
    assert_c_points_at_x(out)
    start, end = back.size_fields[1], back.size_fields[1] + back.size_fields[0]
    assert all(len(d) <= limit for at, _, d in records_of(out) if start <= at < end)


# The records a content section may hold, as Postfix's readers see them: lines,
# pieces, padding, placeholders, and pointers that skip over dead records.
_CONTENT_PIECES = st.one_of(
    st.builds(lambda d: ("N", d), st.binary(max_size=40)),
    st.builds(lambda d: ("L", d), st.binary(min_size=1, max_size=40)),
    st.builds(lambda d: ("w", d), st.binary(max_size=20)),
    st.just(("p0", b"")),
    st.builds(lambda d: ("skip", d), st.binary(max_size=30)),
)


def _content_section(pieces: list[tuple[str, bytes]], data_offset: int
                     ) -> tuple[bytes, list[bytes]]:
    """Content records for pieces, and the lines a Postfix reader would see."""
    out = b""
    lines: list[bytes] = []
    partial: list[bytes] | None = None
    for kind, d in pieces:
        if kind in ("N", "L", "w"):
            out += rec(kind.encode(), d)
        elif kind == "p0":
            out += ptr(0)
        else:
            # A pointer over a dead N record that no reader must see.
            dead = rec(b"N", b"dead " + d)
            out += ptr(data_offset + len(out) + 17 + len(dead)) + dead
        if kind == "N":
            lines.append(b"".join(partial or []) + d)
            partial = None
        elif kind == "L":
            partial = (partial or []) + [d]
    if partial:
        lines.append(b"".join(partial))
    return out, lines


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(_CONTENT_PIECES, max_size=10), limit=st.integers(1, 3000))
def test_every_content_section_parse_accepts_serializes(pieces, limit):
    env_b = b"".join(ENVELOPE)
    data_offset = C_LEN + len(env_b) + 2
    body, lines = _content_section(pieces, data_offset)
    if not body:
        # A content size of 0 is what qmgr refuses; parse() does too.
        with pytest.raises(QueueFileError):
            parse(size_record(0, data_offset) + env_b + rec(b"M") + rec(b"X") + rec(b"E"))
        return
    data = size_record(len(body), data_offset) + env_b + rec(b"M") + body + rec(b"X") + rec(b"E")
    qf = parse(data)
    assert qf.content == lines
    out = serialize(qf, limit)
    assert_c_points_at_x(out)
    assert parse(out).content == lines
