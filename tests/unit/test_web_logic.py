"""The web's pure logic on its own: request files, signed links, passwords, the login
limit, the index's filters, the chart and the plain-text rendering of hostile text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from holdscan.web import chart
from holdscan.web.auth import Admins, AuthError, LoginLimiter, check_password, hash_password
from holdscan.web.index import Filters, Index
from holdscan.web.message import decoded, visible
from shared.config import ConfigError, load
from shared.webrequest import MAX_SIZE, LinkError, Request, RequestError, sign_link, verify_link

KEY = b"k" * 32


def test_request_round_trip_and_every_field_checked() -> None:
    r = Request.new("release", "ABC123-42", "admin:alice", to="x@example.com")
    assert Request.from_bytes(r.to_bytes()) == r
    raw = json.loads(r.to_bytes())
    bad = {
        "action": "chmod", "entry": "../../etc", "by": "root", "to": "a@b, c@d",
        "id": "not-hex", "time": "now",
    }
    for field, value in bad.items():
        with pytest.raises(RequestError):
            Request.from_bytes(json.dumps({**raw, field: value}).encode())
    with pytest.raises(RequestError, match="larger"):
        Request.from_bytes(b" " * (MAX_SIZE + 1))
    with pytest.raises(RequestError, match="version"):
        Request.from_bytes(json.dumps({**raw, "v": 2}).encode())
    with pytest.raises(RequestError, match="only for a release"):
        Request.new("delete", "ABC123-42", "admin:alice", to="x@example.com")
    # a recipient's request needs its link and may not send elsewhere
    with pytest.raises(RequestError):
        Request.new("release", "ABC123-42", "recipient:r@example.com")
    with pytest.raises(RequestError):
        Request.new("release", "ABC123-42", "recipient:r@example.com", to="m@evil.test",
                    link="x.y")


def test_link_is_bound_to_key_recipient_entry_and_time() -> None:
    now = time.time()
    token = sign_link(KEY, "r@example.com", "ABC-1", now + 60)
    link = verify_link(KEY, token, now)
    assert (link.recipient, link.entry) == ("r@example.com", "ABC-1")
    with pytest.raises(LinkError, match="expired"):
        verify_link(KEY, token, now + 61)
    with pytest.raises(LinkError, match="signature"):
        verify_link(b"other" * 8, token, now)
    other = sign_link(KEY, "r@example.com", "ABC-2", now + 60)
    spliced = other.split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(LinkError, match="signature"):
        verify_link(KEY, spliced, now)
    for junk in ("", "a.b.c", "x" * 2000, "abc.!!!"):
        with pytest.raises(LinkError):
            verify_link(KEY, junk, now)


def test_passwords_are_scrypt_and_checked(tmp_path: Path) -> None:
    stored = hash_password("s3cret pass", n=2 ** 10)
    assert stored.startswith("scrypt:1024:") and "s3cret" not in stored
    assert check_password(stored, "s3cret pass") and not check_password(stored, "s3cret")
    assert not check_password("md5:whatever", "s3cret pass")
    admins = Admins(tmp_path / "admins")
    admins.set("alice", "long enough password")
    assert admins.check("alice", "long enough password")
    assert not admins.check("alice", "wrong") and not admins.check("mallory", "x")
    assert (tmp_path / "admins").stat().st_mode & 0o077 == 0
    with pytest.raises(AuthError):
        admins.set("bad:name", "long enough password")
    with pytest.raises(AuthError):
        admins.set("bob", "short")


def test_login_limit_per_client_and_per_name() -> None:
    limit = LoginLimiter(3, window=60)
    for t in range(3):
        assert limit.blocked("1.2.3.4", "alice", now=t) == 0
        limit.failed("1.2.3.4", "alice", now=t)
    assert limit.blocked("1.2.3.4", "bob", now=3) > 0          # this client
    assert limit.blocked("5.6.7.8", "alice", now=3) > 0        # this name
    assert limit.blocked("5.6.7.8", "bob", now=3) == 0
    assert limit.blocked("1.2.3.4", "alice", now=61) == 0      # the window passed


def _entry(store: Path, name: str, **meta: object) -> None:
    (store / name).mkdir()
    (store / name / "meta.json").write_text(json.dumps(meta))


def test_index_filters_and_pages(tmp_path: Path) -> None:
    store = tmp_path / "q"
    store.mkdir()
    for i in range(30):
        _entry(store, f"A{i}-1", time=1000.0 + i, action="spam" if i % 3 else "infected",
               sender=f"s{i}@example.com", recipients=[f"r{i % 2}@example.org"],
               subject=f"offer {i}" + (" 100%_off" if i == 7 else ""))
    idx = Index(tmp_path / "i.sqlite", store)
    assert idx.refresh(full=True) == 30
    p = idx.page(Filters(), 1, 10)
    assert p.total == 30 and p.pages == 3 and p.rows[0]["id"] == "A29-1"
    assert idx.page(Filters(verdict="infected"), 1, 50).total == 10
    assert idx.page(Filters(recipient="r1@"), 1, 50).total == 15
    assert idx.page(Filters(since=1020, until=1025), 1, 50).total == 5
    # LIKE's own characters are only text
    assert [r["id"] for r in idx.page(Filters(text="100%_"), 1, 50).rows] == ["A7-1"]
    assert idx.page(Filters(text="%"), 1, 50).total == 1
    # a release rewrites meta.json: a full refresh sees it; a removed entry goes
    import os
    import shutil
    (store / "A3-1" / "meta.json").write_text(json.dumps({"time": 1003.0, "action": "spam",
                                                          "released_as": "NEWID"}))
    os.utime(store / "A3-1", ns=(1, 1))
    shutil.rmtree(store / "A4-1")
    idx.refresh(full=True)
    assert idx.page(Filters(), 1, 50).total == 29
    assert [r["released_as"] for r in idx.page(Filters(since=1003, until=1004), 1, 5).rows] \
        == ["NEWID"]


def test_chart_bars_stack_per_hour() -> None:
    now = 100 * 3600 + 10
    c = chart.hourly({(100, "spam"): 4, (100, "infected"): 2, (99, "spam"): 1,
                      (10, "spam"): 50}, now, days=1)
    assert c.peak == 6 and len(c.bars) == 3          # hour 10 is outside the last day
    [spam] = [b for b in c.bars if "4 spam" in b.title]
    [infected] = [b for b in c.bars if "2 infected" in b.title]
    # the larger verdict at the bottom, the other stacked on it up to the peak
    assert spam.y == pytest.approx(200 - 4 * 200 / 6, abs=0.01) and infected.y == 0
    assert dict((v, n) for v, _, n in c.legend) == {"spam": 5, "infected": 2}


def test_hostile_text_made_visible() -> None:
    assert visible("a\r\nInjected: yes") == "a\\x0d\\x0aInjected: yes"
    assert visible("line\nline", keep_newlines=True) == "line\nline"
    assert visible("\u202egnp.exe") == "\\x202egnp.exe"
    assert decoded("=?utf-8?b?PHNjcmlwdD4=?=") == "<script>"
    assert decoded("=?bogus?q?x?=") == "=?bogus?q?x?="


def test_web_config_refuses_infected_for_recipients(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[web]\nrecipient_release = ["spam", "infected"]\n')
    with pytest.raises(ConfigError, match="infected"):
        load(p, env={})
    p.write_text("[web]\ndigest = true\n")
    with pytest.raises(ConfigError, match="base_url"):
        load(p, env={})
    assert load(None, env={"HOLDSCAN_WEB_ENABLED": "true"}).web.enabled


def test_check_reports_the_web_setup() -> None:
    from holdscan.check import check_web
    from shared.config import Config
    cfg = Config()
    assert check_web(cfg).ok and "off" in check_web(cfg).message
    cfg.web.enabled = True
    cfg.web.user = cfg.web.group = "no-such-holdscan-user"
    r = check_web(cfg)
    assert not r.ok and "useradd" in r.line()
    cfg.web.user = cfg.web.group = "root"
    assert check_web(cfg, mail_owner="postfix").ok
    cfg.web.user = "postfix"
    assert not check_web(cfg, mail_owner="postfix").ok
