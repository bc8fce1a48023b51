"""The dialogue playground in a real browser (headless Chromium through selenium) against a real
`qwythos serve` process: the key typed in, a PNG card uploaded (and a broken one refused on the page),
three turns played with gear-coloured tokens and a context report, an item added and removed with the
state panel following (and an invalid event's error shown), a fork continued, the session exported;
no console errors beyond the refusals provoked, and no request leaves the loopback address.

The screenshot is kept in $QWYTHOS_ARTEFACTS (or the test's tmp folder); `scripts/playground_screenshot.py`
makes the README's from the same steps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from browser import chromium, console_errors, gradient_png, requested_urls
from qwythos.dialogue.cards import card_to_png, parse_card
from serving import KEY, Server, tiny_model_dir

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Mira",
        "description": "{{char}} keeps a lamp shop on the old road and greets {{user}} with a wry smile.",
        "mes_example": "<START>\n{{char}}: Lamps for the dark road, seven gold apiece.",
        "character_book": {
            "entries": [{"keys": ["road"], "content": "The road is haunted.", "insertion_order": 1}]
        },
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("play")
    s = Server(tiny_model_dir(root), "--db", str(root / "d.sqlite"))
    yield s
    s.stop()


@pytest.fixture
def page(server, tmp_path):
    driver = chromium(1400, 1000)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}
    )
    yield driver
    driver.quit()


def wait(driver, what, timeout: float = 60):
    """Until what(driver) is truthy; an element redrawn while it is read is read again."""
    return WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    ).until(lambda d: what(d))


def by(driver, css: str):
    return driver.find_element(By.CSS_SELECTOR, css)


def all_by(driver, css: str):
    return driver.find_elements(By.CSS_SELECTOR, css)


def error_text(driver) -> str:
    box = by(driver, "#error")
    return "" if box.get_attribute("hidden") is not None else box.text


def fill(driver, css: str, text: str) -> None:
    box = by(driver, css)
    box.clear()
    box.send_keys(text)


def say(driver, text: str) -> None:
    """Type a line and press Enter; wait until the reply is stored and the log redrawn."""
    before = len(all_by(driver, "#log .msg.assistant[data-seq]:not([data-seq=''])"))
    by(driver, "#message").send_keys(text, Keys.ENTER)
    wait(
        driver,
        lambda d: len(all_by(d, "#log .msg.assistant:not([data-seq=''])")) == before + 1 or error_text(d),
    )
    assert not error_text(driver)


def held(driver, item: str) -> str:
    return by(driver, f'#inventory tr[data-item="{item}"] .held').text


def test_a_designer_plays_a_character(server, page, tmp_path):
    d = page
    d.get(server.url + "/")
    wait(d, lambda d: error_text(d))
    assert error_text(d).startswith("401:")  # no key yet: the server's message, not a blank page
    fill(d, "#api-key", KEY)
    by(d, "#key-form button").click()
    wait(d, lambda d: "pathways" in by(d, "#model").text)
    assert not error_text(d)
    assert [e.text for e in all_by(d, "#legend .tok")][:2] == ["reasoning", "narrative"]

    card = tmp_path / "mira.png"
    card.write_bytes(card_to_png(parse_card(CARD), gradient_png()))
    by(d, "#card-file").send_keys(str(card))
    wait(d, lambda d: by(d, "#character-name").text == "Mira")
    avatar = by(d, "#avatar")
    wait(d, lambda d: d.execute_script("return arguments[0].naturalWidth", avatar) == 48)

    broken = tmp_path / "broken.json"
    broken.write_text('{"spec": "chara_card_v2", "data": {"description": "no name"}}')
    by(d, "#card-file").send_keys(str(broken))
    wait(d, lambda d: error_text(d))
    assert error_text(d).startswith("400:") and "name" in error_text(d)
    assert len(all_by(d, "#characters option")) == 1  # nothing stored

    fill(d, "#reply-tokens", "12")
    by(d, "#start").click()
    wait(d, lambda d: by(d, "#session-title").text.startswith("#"))
    assert held(d, "gold") == "12" and held(d, "key") == "1"
    assert by(d, '#inventory tr[data-item="key"] td:nth-child(3)').text == "drawer"

    say(d, "How much gold do I have?")
    reply = all_by(d, "#log .msg.assistant")[0]
    pinned = "".join(
        t.get_attribute("textContent") for t in reply.find_elements(By.CSS_SELECTOR, ".tok.pinned")
    )
    assert "12 gold" in pinned
    classes = {t.get_attribute("class") for t in reply.find_elements(By.CSS_SELECTOR, ".tok")}
    assert any("g-reasoning" in c for c in classes) and any("g-narrative" in c for c in classes)
    gate = reply.find_element(By.CSS_SELECTOR, ".tok").get_attribute("title")
    assert "reasoning" in gate and "narrative" in gate
    gears = reply.find_element(By.CSS_SELECTOR, ".gears").text
    assert "switch" in gears and "voice " in gears  # shares, switches, the style similarity
    rows = all_by(d, "#context-report tbody tr")
    blocks = {r.find_element(By.CSS_SELECTOR, "td").text for r in rows}
    assert {"card", "player", "facts"} <= blocks, blocks
    assert "verified" in by(d, "#grounding").text
    say(d, "Tell me about the road.")
    say(d, "Can I afford a lamp?")
    assert len(all_by(d, "#log .msg")) == 6
    lore = [r.text for r in all_by(d, "#context-report tbody tr") if r.text.startswith("lore")]
    assert lore, by(d, "#context-report").text  # the lorebook entry keyed on "road" was considered

    fill(d, "#add-item", "lamp")
    fill(d, "#add-qty", "2")
    by(d, "#add").click()
    wait(d, lambda d: all_by(d, '#inventory tr[data-item="lamp"]') and held(d, "lamp") == "2")
    by(d, '#inventory tr[data-item="lamp"] button[aria-label="Take one lamp"]').click()
    wait(d, lambda d: held(d, "lamp") == "1")
    events = len(all_by(d, "#events li"))
    fill(d, "#add-qty", "-3")
    by(d, "#add").click()
    wait(d, lambda d: error_text(d))
    assert "events[0].qty" in error_text(d)
    assert held(d, "lamp") == "1" and len(all_by(d, "#events li")) == events  # state unchanged

    first_npc = all_by(d, "#log .msg.assistant")[0]
    first_npc.find_element(By.CSS_SELECTOR, "button.fork").click()
    wait(d, lambda d: "forked from" in by(d, "#session-title").text)
    assert len(all_by(d, "#log .msg")) == 2
    say(d, "And the lamp?")
    assert len(all_by(d, "#log .msg")) == 4
    assert len(all_by(d, "#sessions option")) == 2

    by(d, "#export").click()
    wait(d, lambda d: list(tmp_path.glob("session-*.jsonl")))
    exported = [json.loads(line) for line in next(tmp_path.glob("session-*.jsonl")).read_text().splitlines()]
    assert exported and not error_text(d)

    artefacts = Path(os.environ.get("QWYTHOS_ARTEFACTS", tmp_path))
    artefacts.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(artefacts / "playground.png"))

    provoked = ("status of 401", "status of 400")
    errors = [e for e in console_errors(d) if not any(p in e for p in provoked)]
    assert not errors, errors
    outside = {u for u in requested_urls(d) if not u.startswith((server.url + "/", "data:", "blob:"))}
    assert not outside, outside
