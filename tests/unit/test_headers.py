"""shared/headers.py: one way to find a header field in a message's head."""

from __future__ import annotations

import pytest

from shared.headers import (
    has_header,
    header_fields,
    header_text,
    header_value,
    header_values,
    line_names,
)

MSG = (b"Received: from a\r\n\tby b\r\n"
       b"Subject: Hello\r\n"
       b"received: from c\r\n"
       b"X-Empty:\r\n"
       b"X-Blank-Before-Colon \t: yes\r\n"
       b"\r\n"
       b"Subject: in the body\r\n")


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_values_in_order_unfolded_any_case(eol: bytes) -> None:
    msg = MSG.replace(b"\r\n", eol)
    assert header_values(msg, "Received") == [b"from a\tby b", b"from c"]
    assert header_values(msg, b"RECEIVED") == [b"from a\tby b", b"from c"]
    assert header_value(msg, "subject") == b"Hello"
    assert header_value(msg, "x-empty") == b""
    assert header_value(msg, "X-Blank-Before-Colon") == b"yes"
    assert header_value(msg, "Date") is None
    assert has_header(msg, "X-EMPTY") and not has_header(msg, "Date")


def test_the_head_ends_at_the_first_empty_line() -> None:
    assert header_values(MSG, "Subject") == [b"Hello"]
    assert header_values(b"\r\nSubject: body only\r\n", "Subject") == []
    assert header_value(b"Subject: no body, no line end", "subject") == b"no body, no line end"
    assert header_values(b"", "Subject") == []


def test_what_is_not_a_field() -> None:
    msg = (b" orphan: continuation\r\n"
           b"Not a header line\r\n"
           b"  continues nothing\r\n"
           b"Bad Name: x\r\n"
           b"X-Subject: not the subject\r\n"
           b"Subject2: nor this\r\n"
           b"Subject: the one\r\n"
           b"\r\n")
    assert [name for name, _ in header_fields(msg)] == [b"x-subject", b"subject2", b"subject"]
    assert header_values(msg, "Subject") == [b"the one"]
    assert header_values(msg, "orphan") == []


def test_folding_keeps_the_blanks_and_drops_the_line_breaks() -> None:
    msg = b"Subject: =?utf-8?Q?a?=\r\n =?utf-8?Q?b?=\r\n\t c \r\n\r\n"
    assert header_value(msg, "Subject") == b"=?utf-8?Q?a?= =?utf-8?Q?b?=\t c"


def test_text_is_utf8_with_replacement() -> None:
    msg = "Subject: Grüße\r\nX-Bad: \xff\r\n\r\n".encode().replace(b"\xc3\xbf", b"\xff")
    assert header_text(msg, "Subject") == "Grüße"
    assert header_text(msg, "X-Bad") == "\ufffd"
    assert header_text(msg, "Missing") == "" and header_text(msg, "Missing", "?") == "?"
    assert header_text(msg, "subject:") == "Grüße"         # a trailing colon is forgiven


def test_line_names_name_each_queue_file_header_line_as_the_lookup_does() -> None:
    # The dispatcher's header edits work on a queue file's records, one line each: the
    # same rules as header_fields decide which field a line belongs to.
    lines = [b"Subject : one", b"\ttwo", b"To: a@example.org", b"not a field", b" cont",
             b"X-Holdscan-Status: clean"]
    assert list(line_names(lines)) == [b"subject", b"subject", b"to", None, None,
                                       b"x-holdscan-status"]
    message = b"\r\n".join(lines) + b"\r\n\r\nbody"
    assert [name for name, _ in header_fields(message)] == \
        [n for n, ln in zip(line_names(lines), lines, strict=True) if n and ln[:1] not in b" \t"]
