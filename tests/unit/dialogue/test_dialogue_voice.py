"""The NPC's voice: free spans equal the engine's decoding, a reused prefix changes nothing but the work done,
pinned spans are stated exactly with the gate forced to reasoning on them."""

from __future__ import annotations

import pytest
import torch

from conftest import randomise
from qwythos.dialogue.voice import Free, Pinned, Voice
from qwythos.inference.engine import Engine, Request
from qwythos.inference.sampling import SamplingParams, parse_gear_sampling
from qwythos.model.base import load_tokenizer
from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model


@pytest.fixture(scope="module")
def engine(tiny_base):
    model, folder = build_model(tiny_base, PathwayConfig(rank=4))
    return Engine(randomise(model), load_tokenizer(folder))


def split(engine):
    prefix = engine.tokenizer.encode("You are Mira, a merchant of the northern road.")
    tail = engine.tokenizer.encode(" The player asks: how much gold do I have?")
    return prefix, tail


def test_free_speech_is_the_engines_greedy_decoding_and_the_prefix_is_reused(engine):
    prefix, tail = split(engine)
    voice = Voice(engine)
    first = voice.speak(prefix, tail, [Free(8)], [0.0, 0.0], SamplingParams())
    want = engine.generate([Request(prefix + tail, SamplingParams(max_new_tokens=8, ignore_eos=True))])[0]
    assert first.token_ids == want.token_ids[: len(first.token_ids)] and first.token_ids
    assert first.prefix_reused == 0
    assert first.processed_tokens == len(prefix) + len(tail) + len(first.token_ids)
    again = voice.speak(prefix, tail, [Free(8)], [0.0, 0.0], SamplingParams())
    assert again.token_ids == first.token_ids and again.prefix_reused == len(prefix)
    assert again.processed_tokens == len(tail) + len(again.token_ids)  # the prefix is not run again
    assert torch.allclose(again.gates, first.gates, atol=1e-5)


def test_a_reused_prefix_gives_the_same_sampled_reply_under_a_gear_bias(engine):
    prefix, tail = split(engine)
    gs = parse_gear_sampling("reasoning:t=0;narrative:t=0.9,top_p=0.95")
    params = SamplingParams(seed=3, repetition_penalty=1.1)
    fresh = Voice(engine).speak(prefix, tail, [Free(10)], [-1.0, 1.5], params, gs)
    voice = Voice(engine)
    voice.speak(prefix, engine.tokenizer.encode(" Something else."), [Free(2)], [0.0, 0.0], SamplingParams())
    reused = voice.speak(prefix, tail, [Free(10)], [-1.0, 1.5], params, gs)
    assert reused.prefix_reused == len(prefix) and reused.token_ids == fresh.token_ids


def test_pinned_values_are_exact_and_carried_by_reasoning(engine):
    prefix, tail = split(engine)
    plan = [Free(4), Pinned(" You have 12 gold."), Free(4)]
    spoken = Voice(engine).speak(prefix, tail, plan, [-2.0, 2.0], SamplingParams(seed=0))
    assert "You have 12 gold." in spoken.text
    pins = [i for i, p in enumerate(spoken.pinned) if p]
    assert engine.tokenizer.decode([spoken.token_ids[i] for i in pins]) == " You have 12 gold."
    assert bool((spoken.gates[pins, 0] > 0.99).all())  # reasoning is pathway 0
    free = [i for i, p in enumerate(spoken.pinned) if not p]
    assert free and float(spoken.gates[free, 1].mean()) > 0.5  # the narrative bias carries the voice
