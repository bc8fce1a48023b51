"""report.html in a real headless Chromium (Debian's chromium + chromedriver, driven by selenium), offline:
every plot decodes, every system's row is there, nothing is fetched but the file itself, no console errors."""

from __future__ import annotations

from browser import chromium, console_errors, requested_urls
from qwythos.eval.config import SYSTEMS


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
        urls = requested_urls(driver)
        assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
        assert console_errors(driver) == []
    finally:
        driver.quit()
