"""shared/mimetokens.py: header blocks, delimiter lines, parts by byte range, part paths."""

from __future__ import annotations

from shared.mimetokens import (
    MAX_HEADER_BYTES,
    PART_PATH_RE,
    child_path,
    cut,
    delimiters,
    is_part_path,
    plain_layout,
    split_head,
)


def test_part_paths() -> None:
    for ok in ("1", "2", "3.1", "12.3.99999", ".".join(["1"] * 30)):
        assert is_part_path(ok), ok
    for bad in ("", "0", "1.0", "01", "2.", ".2", "1/../2", "2; rm -rf", "alt1", "2.alt1",
                "2~1", "s3", "123456", ".".join(["1"] * 31)):
        assert not is_part_path(bad), bad
    assert PART_PATH_RE.fullmatch("2.1")
    assert child_path("", 2) == "2" and child_path("2", 1) == "2.1"


def test_header_block_folding_and_where_the_body_starts() -> None:
    raw = b"Subject: a\r\n\tb\r\nX-Y:z\r\n\r\nbody\r\n"
    head = split_head(raw)
    assert head.fields == [("subject", "a b"), ("x-y", "z")]
    assert raw[head.body_start:] == b"body\r\n" and head.anomalies == []
    lf = split_head(b"A: 1\n\nbody")
    assert lf.fields == [("a", "1")] and lf.body_start == 6


def test_header_block_ends_at_a_line_that_is_no_header() -> None:
    raw = b"A: 1\r\nnot a header\r\nB: 2\r\n\r\nbody"
    head = split_head(raw)
    assert head.fields == [("a", "1")]
    assert raw[head.body_start:].startswith(b"not a header")
    assert head.anomalies == ["header block ends without an empty line"]
    spaced = split_head(b"Content-Type : text/html\r\n\r\n")
    assert spaced.fields == [("content-type", "text/html")]
    assert spaced.anomalies == ["white space before a header's colon"]


def test_header_block_within_a_range_and_bounded() -> None:
    raw = b"junk" + b"A: 1\r\n\r\nbody" + b"more"
    head = split_head(raw, 4, len(raw) - 4)
    assert head.fields == [("a", "1")] and raw[head.body_start:len(raw) - 4] == b"body"
    assert split_head(b"A: 1\r\nB: 2", 0, 6).body_start == 6     # no empty line: all header
    big = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(3000)) + b"\r\nbody"
    assert MAX_HEADER_BYTES <= split_head(big).body_start < len(big) - 6


def test_delimiters_exact_prefix_and_closing() -> None:
    body = b"pre\r\n--b\r\nx\r\n--bb\r\ny\r\n--b \t\r\nz\r\n--b--\r\nepi\r\n--b\r\nw"
    found = delimiters(body, 0, len(body), b"b")
    assert [(body[d.start:d.next], d.exact, d.close) for d in found] == [
        (b"--b\r\n", True, False), (b"--bb\r\n", False, False), (b"--b \t\r\n", True, False),
        (b"--b--\r\n", True, True), (b"--b\r\n", True, False)]
    assert delimiters(b"--b\r\n", 0, 5, b"b")[0].start == 0      # at the start of the body
    assert delimiters(b"x--b\r\n", 0, 6, b"b") == []            # only at the start of a line
    assert delimiters(b"--b\r\n", 1, 5, b"b") == []             # within the range only
    assert delimiters(b"--b\r\n", 0, 5, b"") == []


def test_cut_parts_after_close_and_line_breaks() -> None:
    body = b"pre\r\n--b\r\none\r\n--b\n\ntwo\n\n--b--\r\nepi\r\n--b\r\nlate\r\n--b--\r\n"
    parts = cut(body, len(body), [d for d in delimiters(body, 0, len(body), b"b") if d.exact])
    assert parts is not None and parts.closed
    assert [body[s:e] for s, e in parts.parts] == [b"one", b"\ntwo\n"]
    assert [body[s:e] for s, e in parts.after_close] == [b"late"]
    unclosed = b"--b\r\none\r\n--b\r\nlast\r\n"
    parts = cut(unclosed, len(unclosed), delimiters(unclosed, 0, len(unclosed), b"b"))
    assert parts is not None and not parts.closed
    assert [unclosed[s:e] for s, e in parts.parts] == [b"one", b"last"]
    empty = b"--b\r\n--b\r\n--b--"
    parts = cut(empty, len(empty), delimiters(empty, 0, len(empty), b"b"))
    assert parts is not None and [empty[s:e] for s, e in parts.parts] == [b"", b""]
    assert cut(b"", 0, []) is None


def test_plain_layout_multipart_and_message() -> None:
    inner = b"Subject: inner\r\n\r\nhi"
    raw = (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
           b"Content-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--bb\r\n"
           b"--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"QUJD\r\n--b--\r\n")
    top = plain_layout(raw)
    assert top.headers.get_content_type() == "multipart/mixed"
    assert len(top.children) == 2
    first = plain_layout(raw, *top.children[0])
    assert [raw[s:e] for s, e in first.children] == [inner + b"\r\n--bb"]
    assert plain_layout(raw, *top.children[1]).children == []     # encoded: a leaf
    assert plain_layout(b"Content-Type: multipart/mixed\r\n\r\n--b\r\n").children == []
    assert plain_layout(b"Content-Type: text/plain\r\n\r\n--b\r\n").children == []
