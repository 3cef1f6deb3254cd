"""Part paths mean the same in the scanning view and in the byte-range editor.

A strip plan names parts by path; the dispatcher removes them by path with
shared.mimeparts. So every part path the scanning view (ParsedMessage)
reports must be found by the editor, as the same bytes of the message, on
hostile MIME too. Parts that only another reading reveals (a prefix match, a
part after the closing delimiter) are reported under names that are not part
paths ("alt1"), which no strip plan can name.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import mimeparts
from tests.support.mail import HEADERS, PE, part
from workers.message import ParsedMessage, Part

TEXT = part(b"hello\r\n", "text/plain", encoding="7bit")
EXE = part(PE, "application/octet-stream", "x.exe")
LAST = part(b"last words", "text/plain", encoding="7bit")


def mp(boundary: str, *chunks: bytes, close: bool = True, pre: bytes = b"",
       post: bytes = b"", headers: bytes = HEADERS, subtype: str = "mixed") -> bytes:
    out = headers + (f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'
                     ).encode() + pre
    for c in chunks:
        out += b"--" + boundary.encode() + b"\r\n" + c + b"\r\n"
    if close:
        out += b"--" + boundary.encode() + b"--\r\n"
    return out + post


INNER = mp("in", TEXT, EXE, headers=b"", subtype="alternative")

# name -> (message, the part paths the scanning view must report)
NASTY: dict[str, tuple[bytes, set[str]]] = {
    "nested multiparts and a forwarded message": (
        mp("out", TEXT, INNER, b"Content-Type: message/rfc822\r\n\r\n" + mp("fwd", TEXT, EXE)),
        {"1", "2.1", "2.2", "3.1.1", "3.1.2"}),
    "prefix boundary": (
        mp("abc", TEXT, b"Content-Type: text/plain\r\n\r\nhi\r\n--abcdef\r\n" + EXE),
        {"1", "2"}),
    "boundary that is a prefix of the inner one": (
        mp("b", TEXT, mp("bb", TEXT, EXE, headers=b"")),
        {"1", "2.1", "2.2"}),
    "missing closing boundary": (mp("u", TEXT, EXE, LAST, close=False), {"1", "2", "3"}),
    "missing closing boundaries, nested": (
        mp("o", TEXT, mp("in", TEXT, LAST, headers=b"", close=False), close=False),
        {"1", "2.1", "2.2"}),
    "text after the closing boundary": (
        mp("e", TEXT, EXE, pre=b"preamble\r\n", post=b"epilogue\r\n--e-- again\r\nmore\r\n"),
        {"1", "2"}),
    "parts after the closing boundary": (
        mp("c", TEXT, post=b"epilogue\r\n--c\r\n" + EXE + b"\r\n--c--\r\n"), {"1"}),
    "LF line ends": (mp("lf", TEXT, LAST, INNER).replace(b"\r\n", b"\n"),
                     {"1", "2", "3.1", "3.2"}),
    "blanks after delimiters": (
        mp("w", TEXT, EXE).replace(b"--w\r\n", b"--w \t\r\n").replace(b"--w--", b"--w-- "),
        {"1", "2"}),
    "duplicate Content-Type": (
        mp("d", TEXT, EXE).replace(b"MIME-Version: 1.0\r\n",
                                   b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n"),
        {""}),
}


def reported(msg: ParsedMessage) -> list[Part]:
    return [p for p in (*msg.parts, *msg.tolerant) if p.path == "" or mimeparts.valid_path(p.path)]


def assert_editor_agrees(raw: bytes) -> set[str]:
    msg = ParsedMessage.from_bytes(raw)
    try:
        tree = {e.path: e for e in mimeparts.walk(mimeparts.parse(raw))}
    except mimeparts.StripError:
        return set()
    for p in reported(msg):
        ent = tree.get(p.path)
        assert ent is not None, f"the editor has no part {p.path!r}"
        assert p.span == (ent.start, ent.end), f"part {p.path!r} is other bytes to the editor"
    return {p.path for p in reported(msg)}


def test_nasty_messages_cover_what_they_should() -> None:
    # Every one is read every way a client might; none is left undecided.
    undecidable = {name for name, (raw, _) in NASTY.items()
                   if ParsedMessage.from_bytes(raw).undecidable}
    assert undecidable == set()
    hidden = {name for name, (raw, _) in NASTY.items()
              if PE in [p.payload for p in ParsedMessage.from_bytes(raw).parts]}
    assert {"prefix boundary", "boundary that is a prefix of the inner one",
            "parts after the closing boundary", "duplicate Content-Type"} <= hidden


def test_every_part_path_the_scanner_reports_is_the_editors_part() -> None:
    for name, (raw, paths) in NASTY.items():
        assert assert_editor_agrees(raw) == paths, name
        msg = ParsedMessage.from_bytes(raw)
        tree = {e.path: e for e in mimeparts.walk(mimeparts.parse(raw))}
        for p in reported(msg):
            ent = tree[p.path]
            if ent.is_leaf:
                assert p.payload == ent.decoded(), (name, p.path)
                if p.path:
                    # Removing it by path removes exactly those bytes.
                    eol = b"\r\n" if b"\r\n" in raw else b"\n"
                    assert mimeparts.strip(raw, {p.path: "gone"}) == (
                        raw[:ent.start] + mimeparts.replacement(["gone"], eol) + raw[ent.end:])


def test_parts_only_another_reading_finds_are_not_part_paths() -> None:
    for name in ("prefix boundary", "parts after the closing boundary"):
        msg = ParsedMessage.from_bytes(NASTY[name][0])
        hidden = [p for p in msg.parts if p.payload == PE]
        assert [p.path for p in hidden] in (["alt2"], ["alt1"]), name
        assert not mimeparts.valid_path(hidden[0].path)
        assert hidden[0].label == f"part {hidden[0].path}"


def test_unclosed_multipart_ends_before_its_last_line_break_in_both_views() -> None:
    raw, _ = NASTY["missing closing boundary"]
    assert raw.endswith(b"last words\r\n")
    msg = ParsedMessage.from_bytes(raw)
    [last] = [p for p in msg.parts if p.path == "3"]
    assert last.payload == b"last words"
    assert mimeparts.parse(raw).children[2].body() == b"last words"


def test_the_whole_message_is_called_message() -> None:
    msg = ParsedMessage.from_bytes(HEADERS + b"Content-Type: text/plain\r\n\r\nhi\r\n")
    assert [(p.path, p.label, p.span) for p in msg.parts] == [("", "message", (0, len(msg.raw)))]
    msg = ParsedMessage.from_bytes(NASTY["parts after the closing boundary"][0])
    assert "message: parts after the closing boundary" in msg.problems


FRAGMENTS = [
    b"--b\r\n", b"--b--\r\n", b"--bb\r\n", b"--b \r\n", b"--b--x\r\n", b"--c\r\n", b"--c--\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: multipart/mixed; boundary=c\r\n",
    b"Content-Type: message/rfc822\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Type: text/plain\r\n", b"\r\n", b"\n", b"QUJD\r\n", b"text\r\n", b"bogus line\r\n",
    b" folded\r\n", b"--b", b"\r",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=50), st.sampled_from(["b", "c"]))
def test_any_arrangement_of_fragments_keeps_the_paths_in_step(pieces: list[bytes],
                                                              boundary: str) -> None:
    raw = (HEADERS + f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode()
           + b"".join(pieces))
    assert_editor_agrees(raw)
