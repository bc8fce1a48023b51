"""The README's screenshot of the dialogue playground: serve a model, play a short scene in headless
Chromium (a card with a portrait, a state, three turns, an item given), save the page as a PNG.

    .venv/bin/python scripts/playground_screenshot.py runs/quickstart/run/model docs/playground.png

Needs the dev extras (selenium) and Debian's chromium + chromedriver (scripts/setup.sh dev installs them).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import chromium, gradient_png  # noqa: E402
from qwythos.dialogue.cards import card_to_png, parse_card  # noqa: E402

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Mira",
        "description": "{{char}} keeps a lamp shop on the old road. She is wry, careful with money and "
        "fond of travellers' stories. She greets {{user}} by name.",
        "first_mes": "Welcome back, {{user}}. Mind the step.",
        "character_book": {
            "entries": [
                {"keys": ["road"], "content": "The old road is haunted after dark.", "insertion_order": 1},
                {"keys": ["lamp"], "content": "Mira's lamps burn for a whole night.", "insertion_order": 2},
            ]
        },
    },
}
TURNS = ["Good evening, Mira! Is the road safe tonight?", "How much gold do I have?", "Can I afford 2 lamps?"]
STORED = "#log .msg.assistant:not([data-seq=''])"  # the NPC's stored replies (a streaming one has no seq)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="a saved pathway model (e.g. runs/quickstart/run/model)")
    ap.add_argument("out", type=Path, nargs="?", default=Path("docs/playground.png"))
    ap.add_argument("--reply-tokens", type=int, default=48)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "QWYTHOS_API_KEY": ""}
        cmd = [sys.executable, "-m", "qwythos.cli", "serve", str(args.model), "--port", str(port)]
        server = subprocess.Popen([*cmd, "--db", f"{tmp}/d.sqlite"], env=env)
        try:
            wait_for(url, server)
            card = Path(tmp) / "mira.png"
            card.write_bytes(card_to_png(parse_card(CARD), gradient_png(64)))
            play(url, card, args.reply_tokens, args.out)
        finally:
            server.terminate()
            server.wait(60)
    print(f"wrote {args.out}")


def wait_for(url: str, server: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and server.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    sys.exit(f"the server at {url} did not start")


def play(url: str, card: Path, reply_tokens: int, out: Path) -> None:
    d = chromium(1400, 1000)
    until = WebDriverWait(d, 300, poll_frequency=0.2).until
    try:
        d.get(url + "/")
        until(lambda d: "pathways" in d.find_element(By.ID, "model").text)
        d.find_element(By.ID, "card-file").send_keys(str(card))
        until(lambda d: d.find_element(By.ID, "character-name").text == "Mira")
        box = d.find_element(By.ID, "reply-tokens")
        box.clear()
        box.send_keys(str(reply_tokens))
        d.find_element(By.ID, "start").click()
        until(lambda d: d.find_element(By.ID, "session-title").text.startswith("#"))
        for n, text in enumerate(TURNS, 1):
            d.find_element(By.ID, "message").send_keys(text, Keys.ENTER)
            until(lambda d, n=n: len(d.find_elements(By.CSS_SELECTOR, STORED)) == n)
            until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#log .pending"))
        item = d.find_element(By.ID, "add-item")
        item.send_keys("lamp")
        d.find_element(By.ID, "add").click()
        until(lambda d: d.find_elements(By.CSS_SELECTOR, '#inventory tr[data-item="lamp"]'))
        out.parent.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(out))
    finally:
        d.quit()


if __name__ == "__main__":
    main()
