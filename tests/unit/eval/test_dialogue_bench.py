"""The dialogue benchmark's script, rules and runner: 10,000+ words whose events replay on the game rules,
eight probe kinds at three distances, answers scored by rules pinned here, and every arm answering every
probe as a fork on a tiny model (the history holds only the script afterwards)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import randomise
from qwythos.dialogue.store import Store
from qwythos.dialogue.turn import Dialogue
from qwythos.eval import dialogue_bench as B
from qwythos.inference.engine import Engine
from qwythos.model.base import load_tokenizer
from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_script_is_long_consistent_and_probes_every_kind_at_every_distance(seed):
    s = B.build_script(seed)
    B.check_script(s)  # every event replays: nothing removed that is not held
    assert s.words >= 10_000
    assert 20 <= len(s.initial) + sum(len(t.events) for t in s.turns) <= 30
    assert {(p.kind, p.distance) for p in s.probes} == {(k, d) for k in B.KINDS for d in B.DISTANCES}
    assert all(p.after_turn <= len(s.turns) for p in s.probes)
    assert B.build_script(seed).turns == s.turns and B.build_script(seed + 3).turns != s.turns


def test_the_rules():
    s = B.build_script(0)
    gold = next(p for p in s.probes if p.question == "How much gold do I have?")
    assert B.correct(f"You have {gold.expected[0]} gold.", gold)
    assert not B.correct(f"You have {gold.expected[0]} gold, no, {gold.wrong[0]}.", gold)  # a stale value
    no = B.Probe(1, "logic", "near", "Can I afford 3 lamps?", ("no",), rule="yesno")
    assert B.correct("3 lamps at 7 gold each cost 21 gold; you have 16, 5 short.", no)
    assert not B.correct("Yes, you can afford them.", no)
    yes = B.Probe(1, "logic", "near", "Can I afford 2 lamps?", ("yes",), rule="yesno")
    assert B.correct("2 lamps at 7 gold each cost 14 gold; you have 16, so 2 would be left.", yes)
    swords = B.Probe(1, "abstain", "near", "How many swords do I have?", rule="abstain")
    assert B.correct("You carry no swords that I can see.", swords)
    assert not B.correct("You have three swords.", swords) and not B.correct("You have 2 swords.", swords)
    # list numbering is not a count (the first run scored "1. You have no swords." as a false assertion)
    assert B.correct("1. To You have no swords.\n2. No weapons or tools can you use.", swords)
    assert B.correct("1) God exists; 2) You have no swords.", swords)
    assert B.correct("1. You have no swords.\n2. None at all.\n3.", swords)  # a list cut by max_tokens
    assert not B.correct("1. You have 2 swords.", swords) and not B.correct("You have 3.5 swords.", swords)
    ring = B.Probe(1, "abstain", "near", "Where did I leave my silver ring?", rule="abstain")
    assert B.correct("I have not seen any ring.", ring) and not B.correct("It is in the drawer.", ring)
    assert B.valid_tool_call({"tool": "can_afford", "item": "lamp", "qty": 2, "price_each": 7})
    assert not B.valid_tool_call({"tool": "shout", "item": "lamp"})


def test_every_arm_answers_every_probe_as_a_fork(tiny_base, tmp_path):
    model, folder = build_model(tiny_base, PathwayConfig(rank=4))
    engine = Engine(randomise(model), load_tokenizer(folder))
    script = B.build_script(0, min_words=0)
    keep = {("state", "near"), ("logic", "far"), ("persona", "very_far")}
    script.probes = [p for p in script.probes if (p.kind, p.distance) in keep][:3]
    with Store(tmp_path / "b.sqlite") as store:
        d = Dialogue(engine, store)
        answers = B.Bench(d, {"reply_tokens": 4, "lead_tokens": 0}, budget=512).run(script)
        assert [(a.arm, a.probe.kind) for a in answers] == [
            (arm, p.kind) for p in script.probes for arm in B.ARMS
        ]
        (sid,) = [s["id"] for s in store.list_sessions(B.OWNER)]
        assert len(store.messages(sid)) == 2 * len(script.turns)  # probes appended nothing
    state = next(a for a in answers if a.arm == "engine" and a.probe.kind == "state")
    assert state.correct and state.tool_calls and state.processed_tokens  # the tools answered it
    anchor = next(a for a in answers if a.arm == "anchor" and a.probe.kind == "state")
    assert not anchor.tool_calls  # the recipe has no tools

    spec = importlib.util.spec_from_file_location("bench_dialogue", REPO / "bench" / "bench_dialogue.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.summarise(answers, None)
    assert set(report["table"]) == set(B.ARMS) and report["table"]["engine"]["state"] == 1.0
    assert "tool calls schema-valid (100 %)" in report["targets"] and report["tool_calls"] >= 1
    bench.print_report(report)  # the table prints
