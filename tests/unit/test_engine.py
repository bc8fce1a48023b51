"""The generation engine: batched == unbatched, seeded sampling reproducible, stop strings exact, traces."""

from __future__ import annotations

import pytest
import torch

from conftest import randomise
from qwythos.inference.engine import Engine, Request, TextStream, parse_gear, parse_routing
from qwythos.inference.sampling import SamplingParams, filter_logits
from qwythos.model.base import load_tokenizer
from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model


@pytest.fixture(scope="module")
def engine(tiny_base):
    model, folder = build_model(tiny_base, PathwayConfig(rank=4))
    return Engine(randomise(model), load_tokenizer(folder))


def prompts(engine):
    tok = engine.tokenizer
    return [
        tok.encode("Once upon a time a dragon"),
        tok.encode("Tom has 3"),
        tok.encode("The knight counted"),
    ]


@pytest.mark.parametrize("mode", ["soft", "top1"])
def test_batched_equals_unbatched(engine, mode):
    ps = prompts(engine)
    params = [SamplingParams(max_new_tokens=n, ignore_eos=True) for n in (7, 4, 9)]
    routing = parse_routing(mode, engine.pathways)
    together = engine.generate([Request(p, q) for p, q in zip(ps, params, strict=True)], routing)
    for p, q, got in zip(ps, params, together, strict=True):
        alone = engine.generate([Request(p, q)], routing)[0]
        assert got.token_ids == alone.token_ids and len(got.token_ids) == q.max_new_tokens
        torch.testing.assert_close(got.gates, alone.gates, atol=1e-5, rtol=1e-5)


def test_per_request_gear_bias_in_one_batch(engine):
    p = prompts(engine)[0]
    q = SamplingParams(max_new_tokens=5, ignore_eos=True)
    a, b = engine.generate([Request(p, q, gear_bias=[3.0, 0.0]), Request(p, q, gear_bias=[0.0, 3.0])])
    assert a.summary()[:, 0].mean() > b.summary()[:, 0].mean() + 0.2  # each row got its own bias
    alone = engine.generate([Request(p, q, gear_bias=[0.0, 3.0])])[0]
    assert alone.token_ids == b.token_ids


def test_seeded_sampling_is_reproducible(engine):
    p = prompts(engine)[1]
    q = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, top_k=50, seed=123, ignore_eos=True)
    first = engine.generate([Request(p, q)])[0].token_ids
    assert engine.generate([Request(p, q)])[0].token_ids == first
    other = SamplingParams(max_new_tokens=12, temperature=1.0, seed=7, ignore_eos=True)
    assert engine.generate([Request(p, other)])[0].token_ids != first


def test_stop_strings_are_exact(engine):
    p = prompts(engine)[0]
    free = engine.generate([Request(p, SamplingParams(max_new_tokens=12, ignore_eos=True))])[0]
    assert len(free.text) > 6
    stop = free.text[3:6]
    pieces = []
    q = SamplingParams(max_new_tokens=12, stop=[stop], ignore_eos=True)
    done = engine.generate([Request(p, q, on_token=lambda t, d, g: pieces.append(d))])[0]
    assert done.finish_reason == "stop"
    assert done.text == free.text[: free.text.find(stop)]
    assert "".join(pieces) == done.text  # streamed deltas add up to the final text


def test_text_stream_holds_back_partial_stops_and_utf8(engine):
    tok = engine.tokenizer
    s = TextStream(tok, stop=["END"])
    out = "".join(s.add(t) for t in tok.encode("The knight E"))
    assert out == "The knight " and s.text.endswith("E")  # "E" may still grow into "END"
    ids = tok.encode("é")
    s2 = TextStream(tok, stop=[])
    assert "".join(s2.add(t) for t in ids) + s2.finish() == "é"


def test_max_new_tokens_zero_and_bad_requests(engine):
    p = prompts(engine)[0]
    done = engine.generate([Request(p, SamplingParams(max_new_tokens=0))])[0]
    assert done.token_ids == [] and done.finish_reason == "length"
    with pytest.raises(ValueError, match="empty prompt"):
        engine.generate([Request([], SamplingParams())])
    with pytest.raises(ValueError, match="context"):
        engine.generate([Request(p, SamplingParams(max_new_tokens=10_000))])
    with pytest.raises(ValueError, match="unknown pathway 'poetry'"):
        engine.routing("force=poetry")
    with pytest.raises(ValueError, match="gear for unknown pathway"):
        engine.routing("soft", {"poetry": 1.0})
    with pytest.raises(ValueError, match="reasoning=\\+1.5"):
        parse_gear(["reasoning"])
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = filter_logits(logits, top_k=0, top_p=0.7)
    assert torch.isfinite(kept).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, top_k=1, top_p=1.0)).sum() == 1
