"""`qwythos dialogue`: the terminal game through the real CLI entry point on a saved tiny model — a card
file in, game-side commands as events (a bad one is an error naming the field, state unchanged), a state
question answered from the state, /state, /why, /probe, /fork, /export, and resuming with --session."""

from __future__ import annotations

import io
import json
import sys

import pytest

from qwythos.cli import main
from serving import tiny_model_dir

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {"name": "Mira", "description": "{{char}} sells lamps."},
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("play"))


def play(monkeypatch, capsys, *argv: str, lines: list[str]) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    assert main(["dialogue", *argv]) == 0
    return capsys.readouterr().out


def test_a_game_in_the_terminal(model, tmp_path, monkeypatch, capsys):
    card = tmp_path / "mira.json"
    card.write_text(json.dumps(CARD))
    db = str(tmp_path / "d.sqlite")
    lines = [
        "/give gold 12",
        "/set price.lamp 7",
        "/give key 1",
        "/set key.location under the mat",
        "/take gold 99",
        "How much gold do I have?",
        "/state",
        "/why",
        "/probe Can I afford a lamp?",
        f"/export {tmp_path / 's.jsonl'}",
        "/fork 1",
        "/nonsense",
        "/quit",
    ]
    out = play(
        monkeypatch,
        capsys,
        str(model),
        "--card",
        str(card),
        "--db",
        db,
        "--no-color",
        "--reply-tokens",
        "4",
        "--player",
        "Arin",
        lines=lines,
    )
    assert "session #1: Mira and Arin" in out
    assert "error: qty: cannot remove 99 gold: only 12 held" in out  # nothing stored
    assert "* You have 12 gold.*" in out  # the pinned run
    assert "[reasoning]" in out and "[narrative]" in out
    assert "gold: 12" in out and "key: 1 (under the mat)" in out and "price.lamp = 7" in out
    assert "+ card" in out and "verified: You have 12 gold." in out
    assert (
        "at 7 gold each cost 7 gold; you have 12, so 5 would be left." in out and "probe: not stored" in out
    )
    assert "forked at message 1: now in session #2" in out and "unknown command /nonsense" in out
    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert sum(r.get("role") == "assistant" for r in records) == 1  # the probe was not stored

    again = play(
        monkeypatch, capsys, str(model), "--session", "1", "--db", db, "--no-color", lines=["/state"]
    )
    assert "session #1: Mira and Arin" in again and "gold: 12" in again
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["dialogue", str(model), "--session", "9", "--db", db]) == 2
    assert "--session 9" in capsys.readouterr().err
