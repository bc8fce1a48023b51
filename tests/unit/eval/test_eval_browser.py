"""report.html in a real headless Chromium (Debian's chromium + chromedriver, driven by selenium), offline:
every plot decodes, every system's row is there, nothing is fetched but the file itself, no console errors."""

from __future__ import annotations

import json
import os

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from qwythos.eval.config import SYSTEMS

os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not look for a driver online


def chromium() -> webdriver.Chrome:
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_report_renders_offline_in_chromium(evaluated):
    _, out = evaluated
    driver = chromium()
    try:
        driver.get((out / "report.html").as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert len(images) >= 4 and all(done and w > 100 and h > 100 for done, w, h in images), images
        cells = driver.execute_script("return Array.from(document.querySelectorAll('td'), c => c.innerText)")
        assert set(SYSTEMS) <= set(cells)
        events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        urls = {e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"}
        assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()
