"""`holdscan queue cat`: a held message printed like postcat, and as JSON."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from tests.support.mail import send

ROOT = Path(__file__).resolve().parents[2]


def holdscan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holdscan.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, check=False)


def test_queue_cat_json_matches_postcat(postfix):
    msg = (b"From: a@example.test\r\nSubject: cat me\r\nMessage-ID: <cat@holdscan.test>\r\n\r\n"
           b"first line\r\nsecond line\r\n")
    send(postfix.port, "a@example.test", ["b@example.test", "c@example.test"], msg)
    [path] = postfix.wait_held(1)
    p = holdscan("queue", "cat", "--json", "--postfix-config", str(postfix.config_dir), path.name)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["queue_id"] == path.name
    assert out["sender"] == "a@example.test"
    assert out["recipients"] == ["b@example.test", "c@example.test"]
    assert out["attributes"]["log_client_address"] == "127.0.0.1"
    # postcat prints the message with LF line ends; ours hashes it with CRLF.
    body = postfix.postcat("-h", "-b", "-q", path.name)
    lines = body.split("\n")
    assert lines[-1] == ""
    expected = "\r\n".join(lines[:-1]).encode() + b"\r\n"
    assert out["message_sha256"] == hashlib.sha256(expected).hexdigest()
    assert out["size"] == len(expected)


def test_queue_cat_text_shows_envelope_and_message(postfix):
    send(postfix.port, "", ["b@example.test"], b"Subject: bounce-like\r\n\r\nbody\r\n")
    [path] = postfix.wait_held(1)
    p = holdscan("queue", "cat", str(path))
    assert p.returncode == 0, p.stderr
    assert "sender: <>" in p.stdout
    assert "recipient: b@example.test" in p.stdout
    assert p.stdout.rstrip().endswith("body")


def test_queue_cat_bad_file_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "ABCDE12345"
    bad.write_bytes(b"C\x0512345T\x03abc")     # truncated: no M, no E
    p = holdscan("queue", "cat", str(bad))
    assert p.returncode == 2
    assert p.stdout == ""
    [line] = p.stderr.strip().splitlines()
    assert "not a valid queue file" in line and "offset" in line


def test_queue_cat_unknown_id_says_so(postfix):
    p = holdscan("queue", "cat", "--postfix-config", str(postfix.config_dir), "ABCDE12345")
    assert p.returncode == 2
    assert "in none of Postfix's queues" in p.stderr
