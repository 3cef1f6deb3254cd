"""A real Chromium for the web's tests: Debian's chromium and chromium-driver through
Selenium, headless, with a fresh profile and nothing fetched from the network.

    with chromium(tmp_path) as driver: ...
    screenshot(driver, "name")       a PNG in artifacts_dir(), next to the test log
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.tools import require_program

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000"]


def artifacts_dir(kind: str = "web") -> Path:
    """Where screenshots go: $HOLDSCAN_TEST_ARTIFACTS, else test-artifacts/ in the
    repository (next to the log that `make test` writes there); one folder per kind of
    test ("web", "compose")."""
    d = Path(os.environ.get("HOLDSCAN_TEST_ARTIFACTS", ROOT / "test-artifacts")) / kind
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def chromium(profile_parent: Path) -> Iterator[object]:
    browser = require_program("chromium")
    driver_path = require_program("chromedriver", "chromium-driver")
    # Selenium would otherwise look for (and try to download) a driver of its own.
    os.environ["SE_AVOID_STATS"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    profile = profile_parent / f"chromium-profile-{os.getpid()}-{id(options)}"
    profile.mkdir()
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: object, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    driver.save_screenshot(str(path))       # type: ignore[attr-defined]
    return path


__all__ = ["artifacts_dir", "chromium", "screenshot"]
