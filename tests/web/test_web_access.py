"""Who may do what on the web, over plain HTTP: no page or action without a login or a
valid link, CSRF tokens, the cookie's flags, the login limit, the security headers."""

from __future__ import annotations

import http.client
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared.webrequest import sign_link
from tests.support.web import ADMIN, PASSWORD, SECOND_ADMIN, spool, web_user

pytestmark = [pytest.mark.postfix]


@dataclass
class Client:
    """A browser's worth of HTTP: one cookie, from one source address."""
    url: str
    source: str = "127.0.0.1"
    cookie: str = ""
    last_headers: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, form: dict[str, str] | None = None
                ) -> tuple[int, str, http.client.HTTPResponse]:
        u = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30,
                                          source_address=(self.source, 0))
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode(errors="replace")
        if resp.getheader("Set-Cookie"):
            self.cookie = resp.getheader("Set-Cookie").split(";")[0]
        conn.close()
        return resp.status, text, resp

    def csrf(self, path: str = "/login") -> str:
        _, text, _ = self.request("GET", path)
        return re.search(r'name="csrf" value="([^"]+)"', text).group(1)

    def login(self, name: str = ADMIN, password: str = PASSWORD) -> int:
        token = self.csrf()
        status, _, _ = self.request("POST", "/login", {"csrf": token, "name": name,
                                                       "password": password})
        return status


def test_no_page_or_action_without_login(site):
    c = Client(site.url)
    entry = site.entries["dave"]
    for path in ("/quarantine", f"/quarantine/{entry}", "/audit", "/stats",
                 "/requests?id=" + "0" * 32):
        status, _, resp = c.request("GET", path)
        assert status == 302 and "/login" in resp.getheader("Location"), path
    token = c.csrf()                      # a session of its own, but nobody logged in
    for path in (f"/quarantine/{entry}/release", f"/quarantine/{entry}/delete",
                 "/quarantine/bulk"):
        status, _, resp = c.request("POST", path, {"csrf": token, "id": entry,
                                                   "action": "delete"})
        assert status == 302 and "/login" in resp.getheader("Location"), path
    assert (spool(site.pf).quarantine_dir / entry).exists()


def test_forged_post_without_csrf_token_is_refused(site):
    c = Client(site.url)
    assert c.login() == 302
    entry = site.entries["dave"]
    for form in ({}, {"csrf": "forged"}, {"csrf": ""}):
        status, text, _ = c.request("POST", f"/quarantine/{entry}/delete", form)
        assert status == 400 and "CSRF" in text
    # another browser's valid token does not do either
    other = Client(site.url)
    status, _, _ = c.request("POST", f"/quarantine/{entry}/delete", {"csrf": other.csrf()})
    assert status == 400
    time.sleep(1)
    assert (spool(site.pf).quarantine_dir / entry).exists()


def test_session_cookie_is_httponly_and_samesite(site):
    c = Client(site.url)
    token = c.csrf()
    _, _, resp = c.request("POST", "/login", {"csrf": token, "name": ADMIN,
                                               "password": PASSWORD})
    cookie = resp.getheader("Set-Cookie")
    assert cookie.startswith("holdscan_session=")
    flags = [f.strip().lower() for f in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags


def test_every_response_carries_a_strict_csp(site):
    c = Client(site.url)
    c.login()
    for path in ("/login", "/quarantine", f"/quarantine/{site.entries['hostile']}", "/stats",
                 "/audit", "/no-such-page", "/r/forged.token", "/static/style.css"):
        _, _, resp = c.request("GET", path)
        csp = resp.getheader("Content-Security-Policy")
        assert csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
        assert "script-src" not in csp and "unsafe" not in csp
        assert resp.getheader("X-Content-Type-Options") == "nosniff"


def test_login_is_rate_limited(site):
    # From addresses of their own, so that the other tests' logins are not limited.
    c = Client(site.url, source="127.0.0.2")
    for _ in range(5):
        assert c.login(SECOND_ADMIN, "wrong password") == 403
    assert c.login(SECOND_ADMIN, PASSWORD) == 429          # even the right one, for now
    # by name too, from another address
    assert Client(site.url, source="127.0.0.3").login(SECOND_ADMIN, PASSWORD) == 429
    # another name from a fresh address is not affected
    assert Client(site.url, source="127.0.0.4").login(ADMIN, PASSWORD) == 302


def test_recipient_link_opens_only_its_own_entry_until_it_expires_or_goes(site):
    key = site.paths.key.read_bytes()
    later = time.time() + 3600
    dave, mine, virus = (site.entries[n] for n in ("dave", "mine", "virus"))
    c = Client(site.url)
    status, text, _ = c.request("GET", f"/r/{sign_link(key, 'dave@example.test', dave, later)}")
    assert status == 200 and "For dave" in text
    # carol's link for dave's entry (she is not its recipient)
    link = sign_link(key, "carol@example.test", dave, later)
    assert c.request("GET", f"/r/{link}")[0] == 403
    assert c.request("POST", f"/r/{link}/release", {"csrf": c.csrf()})[0] == 403
    # a link altered to name another entry
    good = sign_link(key, "carol@example.test", mine, later)
    payload, mac = good.split(".")
    forged = sign_link(b"x" * 32, "carol@example.test", dave, later).split(".")[0] + "." + mac
    status, text, _ = c.request("GET", f"/r/{forged}")
    assert status == 403 and "signature" in text
    # expired
    old = sign_link(key, "carol@example.test", mine, time.time() - 5)
    status, text, _ = c.request("GET", f"/r/{old}")
    assert status == 403 and "expired" in text
    # infected: shown, but a crafted POST cannot release it
    vlink = sign_link(key, "carol@example.test", virus, later)
    status, text, _ = c.request("GET", f"/r/{vlink}")
    assert status == 200 and 'id="release"' not in text
    assert c.request("POST", f"/r/{vlink}/release", {"csrf": c.csrf(f"/r/{vlink}")})[0] == 403
    # and once the entry is gone, its link shows nothing of it
    dlink = sign_link(key, "dave@example.test", dave, later)
    admin = Client(site.url)
    assert admin.login() == 302
    status, _, resp = admin.request("POST", f"/quarantine/{dave}/delete",
                                    {"csrf": admin.csrf(f"/quarantine/{dave}")})
    assert status == 302
    deadline = time.monotonic() + 20
    while (spool(site.pf).quarantine_dir / dave).exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    status, text, _ = c.request("GET", f"/r/{dlink}")
    assert status == 404 and "For dave" not in text


def test_web_runs_as_its_own_user_in_its_own_group(site):
    _, uid, gid = web_user()
    status = Path(f"/proc/{site.web.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == [str(uid)] * 4
    assert fields["Gid"].split() == [str(gid)] * 4
    assert fields["Groups"].split() == [str(gid)]
    assert int(fields["CapEff"], 16) == 0
