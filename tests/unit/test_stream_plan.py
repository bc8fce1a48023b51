"""The decode step's per-shape layout plan (inference/stream_plan.py): the faster layout is kept, measured
once per kind of CPU and read back from the cache; a model laid out by a mixed plan decodes as before."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import randomise
from qwythos.inference import native, stream_plan
from qwythos.inference.engine import Engine, Request
from qwythos.inference.sampling import SamplingParams
from qwythos.model.base import load_tokenizer
from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QWYTHOS_CACHE", str(tmp_path))
    return tmp_path


def test_the_faster_layout_wins_and_a_tie_keeps_the_stream():
    assert stream_plan.choose({"transposed": 1.0, "standard": 0.5}) == "standard"
    assert stream_plan.choose({"transposed": 0.5, "standard": 1.0}) == "transposed"
    assert stream_plan.choose({"transposed": 1.0, "standard": 0.99}) == "transposed"  # within TIE


def test_each_shape_is_measured_once_per_cpu_and_threads_then_read_from_the_cache(cache):
    calls = []

    def measure(shape):
        calls.append(shape)
        return (
            {"transposed": 2e-6, "standard": 1e-6}
            if shape[0] == 64
            else {"transposed": 1e-6, "standard": 2e-6}
        )

    shapes = [(64, 32, "float32"), (32, 64, "float32"), (64, 32, "float32")]
    assert stream_plan.plan(shapes, 1, "cpuA", measure) == {shapes[0]: "standard", shapes[1]: "transposed"}
    assert calls == shapes[:2]  # the repeated shape is measured once

    def refuse(shape):
        raise AssertionError("measured again despite the cache")

    assert stream_plan.plan(shapes, 1, "cpuA", refuse) == {shapes[0]: "standard", shapes[1]: "transposed"}
    saved = json.loads(stream_plan.plan_file("cpuA").read_text())
    assert (
        saved["64x32:float32:t1"]["layout"] == "standard"
        and saved["64x32:float32:t1"]["gbps"]["standard"] > 0
    )
    calls.clear()
    stream_plan.plan(shapes, 2, "cpuA", measure)  # other decode threads: other timings
    stream_plan.plan(shapes, 1, "cpuB", measure)  # another kind of CPU: its own file
    assert len(calls) == 4


def test_a_corrupt_cache_is_measured_again(cache):
    stream_plan.plan_file("cpuC").parent.mkdir(parents=True)
    stream_plan.plan_file("cpuC").write_text("{not json")
    got = stream_plan.plan([(8, 8, "float32")], 1, "cpuC", lambda s: {"transposed": 1.0, "standard": 3.0})
    assert got == {(8, 8, "float32"): "transposed"}


@pytest.mark.skipif(native.build() is not None, reason="the native decode step did not build here")
def test_the_real_measurement_times_both_layouts():
    seconds = stream_plan.time_layouts((96, 64, "float32"), cycles=1)
    assert set(seconds) == set(stream_plan.LAYOUTS) and all(s > 0 for s in seconds.values())


@pytest.mark.skipif(native.build() is not None, reason="the native decode step did not build here")
def test_a_mixed_plan_changes_strides_not_tokens(tiny_base, cache, monkeypatch):
    model, folder = build_model(tiny_base, PathwayConfig(rank=4))
    model, tok = randomise(model), load_tokenizer(folder)
    prompts = [tok.encode(t) for t in ("Once upon a time", "Tom has 3")]
    reqs = [Request(p, SamplingParams(max_new_tokens=6, ignore_eos=True, logprobs=1)) for p in prompts]
    ref = Engine(model, tok, layout="transposed", decode_kernel="native").generate(reqs)

    frozen = [p for p in model.parameters() if not p.requires_grad and p.dim() >= 2]
    shapes = sorted({stream_plan.shape_of(p) for p in frozen})
    mixed = {s: stream_plan.LAYOUTS[i % 2] for i, s in enumerate(shapes)}  # every other shape standard
    monkeypatch.setattr(stream_plan, "plan", lambda *a, **k: mixed)
    engine = Engine(model, tok, decode_kernel="native")
    assert engine.layout == "planned" and engine.native is not None
    for p in frozen:
        transposed = p.transpose(-1, -2).is_contiguous() and not p.is_contiguous()
        assert transposed == (mixed[stream_plan.shape_of(p)] == "transposed")
    got = engine.generate(reqs)
    assert [c.token_ids for c in got] == [c.token_ids for c in ref]
    for g, w in zip(got, ref, strict=True):
        torch.testing.assert_close(
            torch.tensor([x.logprob for x in g.logprobs]), torch.tensor([x.logprob for x in w.logprobs])
        )


def test_a_matrix_past_the_span_keeps_the_stream_unmeasured(cache, monkeypatch):
    monkeypatch.setattr(stream_plan, "SPAN", 1024)
    big = (64, 32, "float32")  # 8 KiB > 1 KiB

    def refuse(shape):
        raise AssertionError("timed a matrix past the span")

    assert stream_plan.plan([big], 1, "cpuD", refuse) == {big: "transposed"}
    assert json.loads(stream_plan.plan_file("cpuD").read_text())["64x32:float32:t1"]["gbps"] is None
