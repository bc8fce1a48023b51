"""One dialogue turn end to end on a tiny model and a real SQLite store: state questions answered from the
state with the value pinned on reasoning, probes that leave no trace, events checked before they are stored,
the ledger and recap, tokens processed per turn flat as the conversation grows, one turn at a time."""

from __future__ import annotations

import pytest

from conftest import randomise
from qwythos.dialogue.cards import parse_card
from qwythos.dialogue.state import EventError
from qwythos.dialogue.store import Store
from qwythos.dialogue.style import example_lines, similarity
from qwythos.dialogue.turn import Busy, Dialogue, NotFound, Settings
from qwythos.inference.engine import Engine
from qwythos.model.base import load_tokenizer
from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Mira",
        "description": "{{char}} keeps a lamp shop on the northern road and greets {{user}} warmly.",
        "personality": "warm, thrifty, fond of riddles",
        "first_mes": "Welcome, traveller!",
        "mes_example": "<START>\n{{char}}: Lamps for the dark road, seven gold apiece!",
        "post_history_instructions": "Stay in character as {{char}}.",
        "character_book": {
            "entries": [
                {"keys": ["road"], "content": "The northern road is haunted at night.", "insertion_order": 1},
                {"keys": [], "content": "Mira's shop is called The Last Light.", "constant": True},
            ]
        },
    },
}
EVENTS = [
    {"type": "inventory.add", "item": "gold", "qty": 12},
    {"type": "set", "key": "price.lamp", "value": 7},
]


@pytest.fixture(scope="module")
def engine(tiny_base):
    model, folder = build_model(tiny_base, PathwayConfig(rank=4))
    return Engine(randomise(model), load_tokenizer(folder))


@pytest.fixture
def dialogue(engine, tmp_path):
    store = Store(tmp_path / "d.sqlite")
    yield Dialogue(engine, store)
    store.close()


def session(d: Dialogue, owner: str = "k1", **settings) -> int:
    cid = d.store.add_character(owner, parse_card(CARD))
    return d.create_session(owner, cid, "Arin", EVENTS, {"reply_tokens": 6, "lead_tokens": 3, **settings})


def test_a_state_question_is_answered_from_the_state_on_the_reasoning_pathway(dialogue):
    sid = session(dialogue)
    r = dialogue.turn("k1", sid, "How much gold do I have?", trace=True)
    assert "You have 12 gold." in r.reply and r.seq == 2
    x = r.x_qwythos
    assert x["grounding"]["tool_calls"] == [
        {"tool": "inventory", "item": "gold", "qty": None, "price_each": None}
    ]
    (fact,) = x["grounding"]["verified_facts"]
    assert (fact["value"], fact["source_event"]) == (12, 1)
    assert x["gear"]["fact_span_gate"]["reasoning"] > 0.99
    pinned = [t for t in x["gear"]["trace"] if t["pinned"]]
    assert "".join(t["text"] for t in pinned).strip() == "You have 12 gold." and all(
        t["pathway"] == "reasoning" for t in pinned
    )
    blocks = {(b["block"], b["reason"]) for b in x["context"]["report"]}
    assert ("constant_lore", "constant") in blocks and ("facts", "verified") in blocks
    assert ("lore", "no_key_matched") in blocks  # 'road' was not said
    stored = dialogue.store.messages(sid)
    assert [m["role"] for m in stored] == ["user", "assistant"] and stored[1]["meta"]["gear"]["tokens"] > 0

    r = dialogue.turn("k1", sid, "Can I afford two lamps on the road?")
    assert "2 lamps at 7 gold each cost 14 gold; you have 12, 2 short." in r.reply
    assert ("lore", "key:road") in {(b["block"], b["reason"]) for b in r.x_qwythos["context"]["report"]}


def test_a_probe_answers_without_appending(dialogue):
    sid = session(dialogue)
    dialogue.turn("k1", sid, "Hello there.")
    before = dialogue.store.messages(sid)
    probe = dialogue.turn("k1", sid, "How much gold do I have?", probe=True)
    assert probe.seq is None and "You have 12 gold." in probe.reply
    assert dialogue.store.messages(sid) == before


def test_events_are_checked_before_anything_is_stored(dialogue):
    sid = session(dialogue)
    new, state = dialogue.push_events("k1", sid, [{"type": "inventory.remove", "item": "gold", "qty": 5}])
    assert state.held("gold") == 7 and new[0].id == 3
    with pytest.raises(EventError) as e:
        dialogue.push_events(
            "k1",
            sid,
            [
                {"type": "inventory.add", "item": "rope", "qty": 1},
                {"type": "inventory.remove", "item": "gold", "qty": 8},
            ],
        )
    assert e.value.param == "events[1].qty" and "only 7 held" in str(e.value)
    assert len(dialogue.store.events(sid)) == 3 and dialogue.state("k1", sid).held("rope") == 0
    with pytest.raises(NotFound):
        dialogue.push_events("k2", sid, [])  # another key's session does not exist for it
    with pytest.raises(ValueError, match="settings: unknown key"):
        dialogue.create_session("k1", 1, "Arin", [], {"budgte": 10})


def test_the_ledger_and_the_recap_remember_and_tokens_per_turn_stay_flat(dialogue):
    sid = session(dialogue, window=4, recap_every=2, budget=400, recap_tokens=2000)
    dialogue.turn("k1", sid, "My name is Arin and my horse is called Ash.")
    processed = []
    for i in range(10):
        r = dialogue.turn(
            "k1", sid, f"Tell me about lamp number {i}, the one with the long brass handle and glass."
        )
        processed.append(r.x_qwythos["context"]["processed_tokens"])
        assert r.x_qwythos["context"]["prefix_reused_tokens"] > 0  # the card is never run twice
    assert max(processed[4:]) <= max(processed[:4]) + 10  # flat once the window is full
    assert r.x_qwythos["context"]["prompt_tokens"] <= 400 + 16
    ledger = {(f["subject"], f["attribute"]): f["value"] for f in dialogue.store.facts(sid)}
    assert ledger[("player", "name")] == "Arin" and ledger[("player", "horse")] == "Ash"
    summary = dialogue.store.latest_summary(sid)
    assert summary and "Arin: My name is Arin" in summary["text"]
    r = dialogue.turn("k1", sid, "What is my horse called?", probe=True)
    (fact,) = r.x_qwythos["grounding"]["verified_facts"]  # the player's own words, from the ledger
    assert fact["text"] == "Your horse is called Ash." and "Your horse is called Ash." in r.reply


def test_one_turn_at_a_time_per_session(dialogue):
    sid = session(dialogue)
    with dialogue._lock(sid):
        with pytest.raises(Busy):
            dialogue.turn("k1", sid, "Hello?")
    assert dialogue.turn("k1", sid, "Hello?").seq == 2


def test_settings_are_checked():
    with pytest.raises(ValueError, match="settings.budget"):
        Settings(budget=0)
    with pytest.raises(ValueError, match="gear-sampling"):
        Settings(gear_sampling="narrative:q=1")


def test_an_authored_exchange_is_remembered_like_a_turn(dialogue):
    sid = session(dialogue, window=2, recap_every=2)
    seqs = [
        dialogue.record("k1", sid, f"My name is Arin and I hid the map in the well {k}.", "Noted.")
        for k in range(3)
    ]
    assert seqs == [2, 4, 6]
    msgs = dialogue.store.messages(sid)
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 3 and msgs[1]["meta"] == {"authored": True}
    ledger = {(f["subject"], f["attribute"]): f["value"] for f in dialogue.store.facts(sid)}
    assert ledger[("map", "location")] == "in the well 2" and ledger[("player", "name")] == "Arin"
    assert dialogue.store.latest_summary(sid) is not None  # messages left the window: recapped


def test_one_forced_pathway_and_the_ledger_switch(dialogue):
    sid = session(dialogue)
    dialogue.record("k1", sid, "I hid the map in the old well.", "Clever.")
    forced = dialogue.turn(
        "k1", sid, "Tell me a story.", probe=True, trace=True, steering={"routing": "force=narrative"}
    )
    assert {t["pathway"] for t in forced.x_qwythos["gear"]["trace"]} == {"narrative"}
    assert forced.x_qwythos["gear"]["shares"]["narrative"] == 1.0
    blocks = lambda r: {row["block"] for row in r.x_qwythos["context"]["report"]}  # noqa: E731
    with_ledger = dialogue.turn("k1", sid, "Where did I hide the map?", probe=True)
    without = dialogue.turn("k1", sid, "Where did I hide the map?", probe=True, steering={"ledger": False})
    assert "ledger" in blocks(with_ledger) and "ledger" not in blocks(without)
    with pytest.raises(ValueError, match="unknown pathway 'poetry'"):
        dialogue.turn("k1", sid, "Hi", probe=True, steering={"routing": "force=poetry"})


def test_style_similarity_reads_the_cards_example_lines():
    card = parse_card(CARD)
    lines = example_lines(card, "Arin")
    assert lines == ["Lamps for the dark road, seven gold apiece!", "Welcome, traveller!"]
    in_voice = similarity("Lamps for the road, traveller, seven gold apiece!", lines)
    off_voice = similarity("QUERY EXECUTED: 0x3F rows=12 status=OK", lines)
    assert in_voice > 0.5 > off_voice and similarity("", lines) is None and similarity("hi", []) is None


def test_the_voice_lock_follows_a_drifted_reply(dialogue):
    sid = session(dialogue, voice_floor=1.0)  # every reply counts as drifted
    first = dialogue.turn("k1", sid, "Hello there.")
    assert first.x_qwythos["voice"]["drifted"] and not first.x_qwythos["voice"]["locked"]
    second = dialogue.turn("k1", sid, "Tell me more.")
    assert second.x_qwythos["voice"]["locked"]
    names = [(r["block"], r["name"]) for r in second.x_qwythos["context"]["report"]]
    assert ("note", "voice_lock") in names
    off = dialogue.turn("k1", sid, "And then?", probe=True, steering={"voice_lock": False})
    assert not off.x_qwythos["voice"]["locked"]
    assert ("note", "voice_lock") not in [(r["block"], r["name"]) for r in off.x_qwythos["context"]["report"]]
    with pytest.raises(ValueError, match="voice_floor"):
        Settings(voice_floor=2)
