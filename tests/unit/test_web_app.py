"""The web application in-process (Flask's test client), on a store made in a temporary
directory: the proxy's identity header, the digest's text. No Postfix needed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

from dispatcher.digest import Digest
from holdscan.web.app import create_app
from shared.config import Config
from shared.webrequest import WebPaths, verify_link


def _store(tmp: Path) -> tuple[Path, Path, Path]:
    state, data = tmp / "state", tmp / "data"
    quarantine = state / "quarantine"
    (state / "webrequests").mkdir(parents=True)
    (state / "web" / "results").mkdir(parents=True)
    (state / "web" / "link.key").write_bytes(b"k" * 32)
    quarantine.mkdir()
    data.mkdir()
    for i, (rcpts, subject) in enumerate([(["a@example.org"], "one\r\nBcc: evil@x"),
                                          (["a@example.org", "B@example.org"], "two")]):
        e = quarantine / f"ABC{i}-1"
        e.mkdir()
        (e / "meta.json").write_text(json.dumps({
            "time": time.time() - 60, "sender": "s@example.com", "recipients": rcpts,
            "action": "spam", "reason": "r", "subject": subject}))
    return state, quarantine, data


def test_identity_header_is_believed_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    state, quarantine, data = _store(tmp_path)
    cfg = Config()
    cfg.web.auth = "header"
    app = create_app(cfg, state, quarantine, data, refresh_interval=0)
    c = app.test_client()
    ok = c.get("/quarantine", headers={"X-Remote-User": "alice"},
               environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert ok.status_code == 200 and b"ABC1-1" in ok.data and b"alice" in ok.data
    for addr, header in (("10.1.2.3", {"X-Remote-User": "alice"}), ("127.0.0.1", {}),
                         ("127.0.0.1", {"X-Remote-User": "bad name<>"})):
        r = c.get("/quarantine", headers=header, environ_base={"REMOTE_ADDR": addr})
        assert r.status_code == 403, (addr, header)
    assert c.get("/login", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 302


def test_digest_lists_each_entry_with_a_link_for_that_recipient(tmp_path: Path) -> None:
    state, quarantine, _ = _store(tmp_path)
    cfg = Config()
    cfg.web.base_url = "https://q.example.org/"
    spool = SimpleNamespace(state_dir=state, quarantine_dir=quarantine,
                            settings=SimpleNamespace(config_directory=""))
    digest = Digest(spool, cfg, WebPaths(state))      # type: ignore[arg-type]
    per = digest.collect(since=time.time() - 3600)
    assert sorted(per) == ["a@example.org", "b@example.org"]
    assert [e["id"] for e in per["a@example.org"]] == ["ABC0-1", "ABC1-1"]
    now = time.time()
    text = digest.build(b"k" * 32, "b@example.org", per["b@example.org"], now).decode()
    assert "To: <b@example.org>" in text and "Auto-Submitted: auto-generated" in text
    [url] = [line.split()[-1] for line in text.splitlines() if line.startswith("Open:")]
    assert url.startswith("https://q.example.org/r/")
    link = verify_link(b"k" * 32, url.rsplit("/", 1)[1], now)
    assert (link.recipient, link.entry) == ("b@example.org", "ABC1-1")
    assert link.expires == int(now + 7 * 86400)
    # a subject cannot add a header or a line of its own to the digest
    text = digest.build(b"k" * 32, "a@example.org", per["a@example.org"], now).decode()
    assert "\nBcc:" not in text and "Subject: one Bcc: evil@x" in text
