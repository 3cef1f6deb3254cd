"""The queue-file codec against files that a real Postfix wrote.

Each case sends one message through a private Postfix, which holds it. Then,
for the held file: what parse() reads must be what `postcat` prints
(envelope record for record, header and body line for line); serialize() of
the unedited model must give back the very same bytes; and a file with an
added header must be one that `postcat` reads cleanly, with the new header
in place and the body untouched. postcat -e skips the content by seeking to
the X record through the C record's offsets, so it also checks those.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatcher.queuefile import QueueFile, parse, serialize
from holdscan.lab.postfix import PostfixInstance, free_port
from holdscan.lab.sink import Sink
from tests.support.queuefile_cases import (
    CASES,
    DEST,
    LINE_100K,
    LINE_3000,
    LINE_4096,
    Case,
    send_case,
)

pytestmark = pytest.mark.postfix


@dataclass
class Held:
    pf: PostfixInstance
    path: Path
    data: bytes
    qf: QueueFile


def start(stack: ExitStack, **kw: object) -> PostfixInstance:
    sink = stack.enter_context(Sink(free_port()))
    return stack.enter_context(PostfixInstance(sink.port, **kw))   # type: ignore[arg-type]


def hold_all(pf: PostfixInstance, cases: list[Case]) -> dict[str, Held]:
    for case in cases:
        send_case(pf, case)
    paths = pf.wait_held(len(cases), timeout=60)
    held = {}
    for path in paths:
        data = path.read_bytes()
        qf = parse(data)
        first = qf.recipients[0].address
        held[first.split("@")[0].removeprefix("case-")] = Held(pf, path, data, qf)
    assert sorted(held) == sorted(c.name for c in cases)
    return held


@pytest.fixture(scope="module")
def instances() -> Iterator[Callable[[str], dict[str, Held]]]:
    """Private Postfix instances, started when a test first asks for one."""
    made: dict[str, dict[str, Held]] = {}
    with ExitStack() as stack:
        def get(name: str) -> dict[str, Held]:
            if name not in made:
                if name == "default":
                    pf = start(stack)
                    made[name] = hold_all(pf, list(CASES.values()))
                elif name == "filter":
                    pf = start(stack, extra_main_cf={"content_filter": "smtp:[127.0.0.1]:10025"})
                    made[name] = hold_all(pf, [CASES["plain"]])
                elif name == "longids":
                    pf = start(stack, long_queue_ids=True)
                    made[name] = hold_all(pf, [CASES["plain"], CASES["long3000"]])
                elif name == "hashed":
                    pf = start(stack, hash_queue_names="hold, deferred, defer",
                               hash_queue_depth=2)
                    made[name] = hold_all(pf, [CASES["plain"], CASES["dsn"]])
                else:
                    raise KeyError(name)
            return made[name]
        yield get


# -- postcat ------------------------------------------------------------------------------------

def postcat(pf: PostfixInstance, path: Path, *flags: str) -> bytes:
    """postcat's output; it must exit 0 and say nothing on stderr."""
    p = subprocess.run(["postcat", "-c", str(pf.config_dir), *flags, str(path)],
                       capture_output=True, env={**os.environ, "TZ": "UTC"}, timeout=60)
    assert p.returncode == 0 and p.stderr == b"", p.stderr.decode(errors="replace")
    return p.stdout


def postcat_envelope(pf: PostfixInstance, path: Path) -> list[tuple[int, bytes | None]]:
    """`postcat -d -e`: (record type, printed value) per line; None for the markers."""
    out = []
    lines = postcat(pf, path, "-d", "-e").split(b"\n")
    assert lines[0].startswith(b"*** ENVELOPE RECORDS") and lines[-1] == b""
    for line in lines[1:-1]:
        rtype, text = int(line[:3]), line[4:]
        out.append((rtype, None if text.startswith(b"*** ") else text.split(b": ", 1)[1]))
    return out


def asctime(seconds: int) -> bytes:
    return time.asctime(time.gmtime(seconds)).encode()


def expected_envelope(qf: QueueFile) -> list[tuple[int, bytes | None]]:
    """What postcat -d -e prints for this model."""
    def shown(rtype: str, data: bytes) -> tuple[int, bytes]:
        if rtype == "T":
            return ord(rtype), asctime(int(data.split()[0]))
        if rtype == "A":
            name, _, value = data.partition(b"=")
            name, value = name.strip(), value.strip()
            if name == b"create_time":
                return ord(rtype), asctime(int(value))
            return ord(rtype), name + b"=" + value
        return ord(rtype), data
    size = " ".join(f"{v:15d}" for v in qf.size_fields).encode()
    return ([(ord("C"), size)] + [shown(r.type, r.data) for r in qf.envelope]
            + [(ord("M"), None), (ord("X"), None)]
            + [shown(r.type, r.data) for r in qf.extracted] + [(ord("E"), None)])


def text_of(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def check_against_postcat(pf: PostfixInstance, path: Path, qf: QueueFile) -> None:
    assert postcat_envelope(pf, path) == expected_envelope(qf)
    end = qf.header_end()
    assert postcat(pf, path, "-h") == text_of(qf.content[:end])
    # Not -b alone: postcat then forgets that a header line was split into L
    # pieces and takes the rest of a long header for the start of the body.
    assert postcat(pf, path, "-h", "-b") == text_of(qf.content)
    assert qf.message_bytes(b"\n") == text_of(qf.content)


# -- every case, on every instance ------------------------------------------------------------

PARAMS = ([("default", name) for name in CASES]
          + [("filter", "plain"), ("longids", "plain"), ("longids", "long3000"),
             ("hashed", "plain"), ("hashed", "dsn")])


@pytest.mark.parametrize("instance,case", PARAMS)
def test_parse_matches_postcat(instances, instance, case):
    h = instances(instance)[case]
    check_against_postcat(h.pf, h.path, h.qf)


@pytest.mark.parametrize("instance,case", PARAMS)
def test_serialize_of_an_unedited_file_gives_the_same_bytes(instances, instance, case):
    h = instances(instance)[case]
    assert serialize(h.qf) == h.data


@pytest.mark.parametrize("instance,case", PARAMS)
def test_file_with_an_added_header_reads_cleanly(instances, instance, case, tmp_path):
    h = instances(instance)[case]
    edited = h.qf.with_headers(add=[("X-Holdscan", "scanned; clean")], subject_tag="[tag]")
    out = tmp_path / h.path.name
    out.write_bytes(serialize(edited))
    again = parse(out.read_bytes())
    assert (again.envelope, again.content, again.extracted) == \
        (h.qf.envelope, edited.content, h.qf.extracted)
    check_against_postcat(h.pf, out, again)
    end = h.qf.header_end()
    headers = postcat(h.pf, out, "-h").split(b"\n")
    assert headers[:-1] == again.content[:again.header_end()]
    assert headers[end] == b"X-Holdscan: scanned; clean"
    assert again.content[again.header_end():] == h.qf.content[end:]
    if end:
        assert b"Subject: [tag]" in postcat(h.pf, out, "-h")


# -- what each case must show -----------------------------------------------------------------

def test_plain(instances):
    qf = instances("default")["plain"].qf
    assert qf.sender == "sender@example.test"
    assert [r.address for r in qf.recipients] == [CASES["plain"].key]
    assert qf.create_time is not None and abs(qf.create_time - time.time()) < 3600
    assert abs(qf.arrival_time - qf.create_time) < 2
    assert qf.content[0].startswith(b"Received: from ")
    assert b"Subject: plain" in qf.content and qf.content[-1] == b"hello"


def test_8bit_body_is_kept_and_marked(instances):
    qf = instances("default")["8bit"].qf
    assert qf.attributes["encoding"] == "8bit"
    assert b"Gr\xfc\xdfe aus K\xf6ln" in qf.content


def test_smtputf8_addresses_and_flag(instances):
    qf = instances("default")["smtputf8"].qf
    assert qf.sender == "s\u00e9nder@exampl\u00e9.test"
    assert "j\u00fcrgen@b\u00fccher.test" in [r.address for r in qf.recipients]
    assert qf.size_fields[5] & 1                   # SMTPUTF8 requested
    assert "Subject: gr\u00fc\u00dfe \u2603".encode() in qf.content


@pytest.mark.parametrize("case,line", [("long3000", LINE_3000), ("long100k", LINE_100K),
                                       ("long4096", LINE_4096)])
def test_long_lines_are_one_line(instances, case, line):
    qf = instances("default")[case].qf
    assert line in qf.content
    assert max(len(x) for x in qf.content) == len(line)


def test_long_header_line_is_one_line(instances):
    qf = instances("default")["longheader"].qf
    assert b"X-Long: " + LINE_3000 in qf.content[:qf.header_end()]


def test_500_recipients(instances):
    h = instances("default")["rcpt500"]
    rcpts = h.qf.recipients
    assert len(rcpts) == 500 and h.qf.size_fields[2] == 500
    assert [r.address for r in rcpts[1:]] == [f"r{i:03d}@{DEST}" for i in range(499)]
    assert all(not r.done for r in rcpts)


def test_keeping_one_of_500_recipients(instances, tmp_path):
    h = instances("default")["rcpt500"]
    one = h.qf.with_recipients(lambda r: r.address == f"r123@{DEST}")
    out = tmp_path / "one"
    out.write_bytes(serialize(one))
    again = parse(out.read_bytes())
    assert [r.address for r in again.recipients] == [f"r123@{DEST}"]
    assert again.size_fields[2] == 1
    check_against_postcat(h.pf, out, again)
    printed = postcat_envelope(h.pf, out)
    assert [v for t, v in printed if t == ord("R")] == [f"r123@{DEST}".encode()]


def test_dsn_parameters(instances):
    for name in ("default", "hashed"):
        qf = instances(name)["dsn"].qf
        assert qf.attributes["envelope_id"] == "holdscan-envid-1"
        assert qf.attributes["ret_flags"] == "2"       # RET=HDRS
        for r in qf.recipients:
            assert r.notify == 2 | 4 | 8               # SUCCESS, FAILURE, DELAY
            assert r.dsn_orig_rcpt == f"rfc822;original@{DEST}"
            assert r.orig_rcpt == r.address
        assert qf.size_fields[3] == (2 | 4 | 8) << 1   # qmgr flags: notify bits


def test_null_sender(instances):
    qf = instances("default")["nullsender"].qf
    assert qf.sender == ""
    assert [r.type for r in qf.envelope].count("S") == 1


def test_empty_body_and_empty_message(instances):
    qf = instances("default")["emptybody"].qf
    end = qf.header_end()
    assert qf.content[end:] == [b""]
    qf = instances("default")["emptymessage"].qf
    # Postfix adds the headers it requires; the message still has no body.
    assert qf.header_end() > 0
    assert qf.content[qf.header_end():] in ([], [b""])


def test_postfix_ends_the_header_with_an_empty_line(instances):
    qf = instances("default")["nonheader"].qf
    end = qf.header_end()
    assert qf.content[end:] == [b"", b"this is no header", b"body"]
    out = qf.with_headers(add=[("X-A", "1")])
    assert out.content[end:] == [b"X-A: 1", b"", b"this is no header", b"body"]


def test_recipients_from_the_extracted_section(instances, tmp_path):
    h = instances("default")["extracted"]
    assert not [r for r in h.qf.envelope if r.type == "R"]
    assert [r.address for r in h.qf.recipients] == [
        f"case-extracted@{DEST}", f"second@{DEST}", f"third@{DEST}"]
    assert h.qf.recipients[1].orig_rcpt == f"second@{DEST}"
    assert ("F", b"root") in [(r.type, r.data) for r in h.qf.envelope]
    two = h.qf.with_recipients(lambda r: r.address != f"second@{DEST}")
    out = tmp_path / "two"
    out.write_bytes(serialize(two))
    again = parse(out.read_bytes())
    assert [r.address for r in again.recipients] == [f"case-extracted@{DEST}", f"third@{DEST}"]
    assert not [r for r in again.extracted if b"second@" in r.data]
    check_against_postcat(h.pf, out, again)


def test_folded_header_is_one_line_per_physical_line(instances):
    qf = instances("default")["folded"].qf
    i = qf.content.index(b"X-Folded: one")
    assert qf.content[i:i + 3] == [b"X-Folded: one", b"\ttwo", b" three"]
    out = qf.with_headers(replace=[("X-FOLDED", "new")])
    assert b"\ttwo" not in out.content and out.content[out.header_end() - 1] == b"X-FOLDED: new"


def test_content_filter_record_stays_in_the_envelope(instances):
    h = instances("filter")["plain"]
    assert ("L", b"smtp:[127.0.0.1]:10025") in [(r.type, r.data) for r in h.qf.envelope]
    assert (ord("L"), b"smtp:[127.0.0.1]:10025") in postcat_envelope(h.pf, h.path)


def test_long_queue_ids(instances):
    for h in instances("longids").values():
        assert "z" in h.path.name[10:]
        assert h.qf.attributes["log_ident"] == h.path.name


def test_hashed_hold_queue(instances):
    for h in instances("hashed").values():
        rel = h.path.relative_to(h.pf.queue_dir / "hold")
        assert len(rel.parts) == 3
        assert rel.parts[:2] == (h.path.name[0], h.path.name[1])
