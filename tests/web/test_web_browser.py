"""The web in a real browser (Chromium, headless): an administrator's work, hostile mail,
and a recipient following their digest's link. Screenshots go to test-artifacts/web/."""

from __future__ import annotations

import email
import email.policy
import re
import time
import urllib.request
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import chromium, screenshot
from tests.support.web import ADMIN, MARKER, PASSWORD, spool

pytestmark = [pytest.mark.postfix]


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory) -> Iterator:
    with chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


def login(driver, site) -> None:
    driver.get(f"{site.url}/login")
    driver.find_element(By.ID, "name").send_keys(ADMIN)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "who"))


def follow(driver, element) -> None:
    """Click something that loads a new page, and wait until the old page is gone: what
    is looked up right after a click must come from the new page."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 15).until(EC.staleness_of(old))


def wait_outcomes(driver) -> list[str]:
    """The outcomes on the requests page, once none is waiting any more."""
    def settled(d) -> list[str] | None:
        if "/requests" not in d.current_url or d.find_elements(By.ID, "waiting"):
            return None
        return [td.text for td in d.find_elements(By.CSS_SELECTOR, "td.outcome")] or None
    return WebDriverWait(driver, 30).until(settled)


def delivered(site, subject: str) -> int:
    return sum(1 for d in site.sink.deliveries() if d.header("Subject") == subject)


def test_admin_filters_opens_releases_once_and_deletes(site, browser):
    d = browser
    login(d, site)
    assert d.find_element(By.ID, "who").text == ADMIN
    # filter by subject and verdict
    d.find_element(By.ID, "q").send_keys("quarterly")
    follow(d, d.find_element(By.ID, "filter"))
    rows = d.find_elements(By.CSS_SELECTOR, "tr.entry")
    assert [r.get_attribute("data-id") for r in rows] == [site.entries["report"]]
    screenshot(d, "01-filtered")
    follow(d, rows[0].find_element(By.CSS_SELECTOR, "td.subject a"))
    assert d.find_element(By.ID, "verdict").text == "spam"
    assert "hello" in d.find_element(By.ID, "preview").text
    screenshot(d, "02-detail")
    d.find_element(By.ID, "release").click()
    assert wait_outcomes(d) == ["done"]
    screenshot(d, "03-released")
    # asked again (a second click, another browser): reported, not delivered again
    d.get(f"{site.url}/quarantine/{site.entries['report']}")
    assert d.find_element(By.ID, "released").text.startswith("20")
    d.find_element(By.ID, "release").click()
    assert wait_outcomes(d) == ["already"]
    deadline = time.monotonic() + 30
    while delivered(site, "Quarterly report") < 1:
        assert time.monotonic() < deadline, "the released message never arrived"
        time.sleep(0.2)
    site.pf.wait_empty(("incoming", "active", "deferred"))
    time.sleep(1)
    assert delivered(site, "Quarterly report") == 1
    # delete another from the list, by its checkbox
    d.get(f"{site.url}/quarantine?verdict=blocked&sender=spammer")
    [row] = d.find_elements(By.CSS_SELECTOR, "tr.entry")
    row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    d.find_element(By.ID, "bulk-delete").click()
    assert wait_outcomes(d) == ["done"]
    assert not (spool(site.pf).quarantine_dir / site.entries["junk"]).exists()
    # the audit log names who asked
    d.get(f"{site.url}/audit")
    text = d.find_element(By.ID, "audit").text
    assert f"admin:{ADMIN}" in text and site.entries["junk"] in text
    screenshot(d, "04-audit")
    d.get(f"{site.url}/stats")
    assert d.find_elements(By.CSS_SELECTOR, "#chart rect.bar")
    assert d.find_element(By.ID, "hold-depth").text == "0"
    screenshot(d, "05-stats")


def test_hostile_mail_is_shown_as_text_and_runs_no_script(site, browser):
    d = browser
    login(d, site)
    entry = site.entries["hostile"]
    for page in (f"/quarantine?q={urllib.request.quote('<script>')}", f"/quarantine/{entry}",
                 "/audit"):
        d.get(site.url + page)
        assert d.execute_script(f"return typeof {MARKER}") == "undefined", page
        assert d.title.endswith("holdscan") and "pwned" not in d.title
        # nothing of the mail became an element
        assert not d.find_elements(By.CSS_SELECTOR, "main script, main img, main svg[onload], "
                                                    "main b, main a[href^=javascript]")
    d.get(f"{site.url}/quarantine/{entry}")
    screenshot(d, "06-hostile")
    assert d.find_element(By.ID, "subject").text.startswith("<script>window.__pwned=2</script>")
    assert "<script>window.__pwned=4</script>" in d.find_element(By.ID, "decoded-subject").text
    assert d.find_element(By.ID, "sender").text == f"<script>{MARKER}=1</script>@example.test"
    headers = d.find_element(By.ID, "headers").text
    assert f'<svg onload="{MARKER}=6"></svg>' in headers
    assert f"<javascript:{MARKER}=7>" in headers
    # the encoded CR LF stays inside its header, shown, never a header of its own
    assert "first=0D=0AInjected-Header:_yes" in headers
    assert not any(th.text == "Injected-Header"
                   for th in d.find_elements(By.CSS_SELECTOR, "#headers th"))
    preview = d.find_element(By.ID, "preview").text
    assert f'<script>{MARKER}=8</script> <a href="javascript:{MARKER}=9">' in preview
    assert "HTML-ONLY-TEXT" not in d.page_source              # the HTML part is never shown
    names = d.find_element(By.ID, "attachments").text
    assert f"<img src=x onerror={MARKER}=11>.exe" in names
    assert f"<script>{MARKER}=12</script>.pdf" in names
    assert not d.find_elements(By.CSS_SELECTOR, "#attachments a")    # never served
    csp = urllib.request.urlopen(f"{site.url}/login").headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    # the browser enforces it: a script put into the page now is refused
    d.execute_script("var s = document.createElement('script');"
                     f"s.textContent = '{MARKER} = 99'; document.body.appendChild(s);")
    assert d.execute_script(f"return typeof {MARKER}") == "undefined"


def _digest_link(site, recipient: str, subject: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        for m in site.sink.deliveries():
            if m.rcpt_tos == [recipient] and "Quarantined mail" in (m.header("Subject") or ""):
                body = email.message_from_bytes(m.data, policy=email.policy.default
                                                ).get_body().get_content()
                block = body[body.index(f"Subject: {subject}"):]
                return re.search(r"Open: +(\S+)", block).group(1)
        assert time.monotonic() < deadline, "no digest arrived"
        time.sleep(0.2)


def test_recipient_follows_digest_link_and_releases_their_message(site, tmp_path_factory):
    link = _digest_link(site, "carol@example.test", "Your invoice")
    assert link.startswith(site.url + "/r/")
    with chromium(tmp_path_factory.mktemp("carol")) as d:    # no administrator's session
        d.get(link)
        assert d.find_element(By.ID, "subject").text == "Your invoice"
        screenshot(d, "07-recipient")
        d.find_element(By.ID, "release").click()
        WebDriverWait(d, 30).until(lambda x: x.find_elements(By.ID, "outcome"))
        assert d.find_element(By.ID, "outcome").text.startswith("done")
        screenshot(d, "08-recipient-released")
        # the same link cannot open the administrator's pages
        d.get(f"{site.url}/quarantine")
        assert d.current_url.startswith(f"{site.url}/login")
        # the virus in the same digest: shown, but only the administrator may release it
        d.get(_digest_link(site, "carol@example.test", "Open me"))
        assert not d.find_elements(By.ID, "release")
    deadline = time.monotonic() + 30
    while delivered(site, "Your invoice") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    assert delivered(site, "Your invoice") == 1
    [m] = [m for m in site.sink.deliveries() if m.header("Subject") == "Your invoice"]
    assert m.rcpt_tos == ["carol@example.test"]
