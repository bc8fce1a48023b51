"""Memory: the player's stated facts, the extractive recap in a budget, and retrieval of old turns ranked by
relevance (BM25, optionally an embedder) and recency."""

from __future__ import annotations

import numpy as np
import pytest

from qwythos.curate.config import EmbedConfig
from qwythos.curate.embed import Hashing
from qwythos.dialogue.memory import (
    CachedEmbedder,
    Noted,
    fit_lines,
    player_facts,
    recall,
    recall_embedder,
    recap_lines,
)


def test_player_facts_are_read_from_their_own_words():
    said = (
        "Hello! My name is Arin and I'm from Dunmere. My horse is called Ash. I left the lantern by the well."
    )
    assert player_facts(said) == [
        Noted("player", "name", "Arin"),
        Noted("player", "home", "Dunmere"),
        Noted("player", "horse", "Ash"),
        Noted("lantern", "location", "by the well"),
    ]
    assert player_facts("My favorite colour is green.") == [Noted("player", "favourite colour", "green")]
    assert player_facts("What is the road like?") == []


def test_the_recap_keeps_first_sentences_and_drops_oldest_lines_to_fit():
    msgs = [
        {"role": "user", "content": "I want a lamp. Also some rope."},
        {"role": "assistant", "content": "Lamps are seven gold. Rope is cheap."},
        {"role": "user", "content": "Then I'll take two."},
    ]
    lines = recap_lines(msgs, "Arin", "Mira")
    assert lines == ["Arin: I want a lamp.", "Mira: Lamps are seven gold.", "Arin: Then I'll take two."]
    words = lambda s: len(s.split())  # noqa: E731
    assert fit_lines(lines, words, budget=12) == lines[1:]  # 6 tokens a line (with the separator)


def test_recall_ranks_by_relevance_then_recency():
    msgs = [
        {"seq": 1, "role": "user", "content": "My sister Lena lives by the lighthouse."},
        {"seq": 2, "role": "assistant", "content": "The weather turns cold in winter."},
        {"seq": 50, "role": "user", "content": "Lena wrote from the lighthouse."},
        {"seq": 51, "role": "user", "content": "The bread here is good."},
    ]
    got = recall("Where does Lena live?", msgs, now=60, k=3)
    assert [r.seq for r in got] == [50, 1]  # both share 'lena'; the recent one first; no-overlap never
    assert got[0].lexical > 0 and got[0].semantic is None and got[0].recency > got[1].recency

    def embed(texts):  # a fixed embedder: 'winter' texts point one way, everything else the other
        v = np.array([[1.0, 0.0] if ("cold" in t or "snow" in t) else [0.0, 1.0] for t in texts])
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    (hit,) = recall("Does it snow?", msgs, now=60, k=1, embed=embed)
    assert hit.seq == 2 and hit.semantic == 1.0 and hit.lexical == 0  # found by meaning, not words


def test_the_cached_embedder_embeds_each_text_once():
    real = Hashing(EmbedConfig(model="hashing", dim=64))
    made = []
    cached = CachedEmbedder(lambda: made.append(1) or real)
    a = cached(["the lamp", "the rope", "the lamp"])
    np.testing.assert_array_equal(a, real(["the lamp", "the rope", "the lamp"]))
    cached(["the rope", "a new line"])
    assert cached.computed == 3 and made == [1]  # built once, on first use


def test_minilm_recall_finds_a_paraphrase_sharing_no_word():
    embed = recall_embedder("minilm")
    old = [
        {"seq": 1, "role": "user", "content": "I hid my money under the bed."},
        {"seq": 2, "role": "assistant", "content": "The weather turned cold last night."},
    ]
    assert recall("Where did I stash the coins?", old, now=10) == []  # BM25 alone: no shared word
    (hit,) = recall("Where did I stash the coins?", old, now=10, k=1, embed=embed)
    assert hit.seq == 1 and hit.lexical == 0 and hit.semantic > 0.3
    assert recall_embedder("lexical") is None
    with pytest.raises(ValueError, match="--recall"):
        recall_embedder("vectors")
