"""Headless Chromium for the browser tests (Debian ``chromium`` + ``chromium-driver``, driven by selenium)."""

from __future__ import annotations

import shutil

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) executables, or None when either is missing."""
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium():
    """A selenium driver, or a pytest skip naming what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver")
    paths = chromium_paths()
    if paths is None:
        pytest.skip("no Chromium + chromedriver (Debian: apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1100",
                "--autoplay-policy=no-user-gesture-required", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(paths[1]), options=opts)


def audio_states(driver, css: str = "audio") -> list[dict]:
    """readyState / error code / src of every matching audio element."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(a => "
        "({ready: a.readyState, error: a.error ? a.error.code : null, src: a.currentSrc || a.src}))", css)
