"""Debian's headless Chromium driven by selenium through its chromedriver, offline, with the browser's
console and network logs kept (the report's and the playground's browser tests)."""

from __future__ import annotations

import json
import os
import struct
import zlib

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not look for a driver online


def chromium(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def requested_urls(driver: webdriver.Chrome) -> set[str]:
    """Every URL the page asked for since the last call (the performance log is drained)."""
    events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
    return {e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"}


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The SEVERE console messages since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def gradient_png(size: int = 48) -> bytes:
    """A small RGB gradient PNG: a character's portrait the page must show from an uploaded card."""
    rows = b"".join(
        b"\x00" + bytes(c for x in range(size) for c in (40 + 4 * x % 200, 90 + 3 * y % 160, 160))
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
    return png + chunk(b"IEND", b"")
