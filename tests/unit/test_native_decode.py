"""The native decode step (inference/native.py) is pinned to the model's own forward: same tokens, log-probs
and gates, for every routing mode, gear bias, padded rows, GQA, biases, sliding windows and dense experts."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import make_tiny_base, randomise
from qwythos.inference import native
from qwythos.inference.engine import Engine, Request, parse_routing
from qwythos.inference.sampling import SamplingParams
from qwythos.model.base import load_tokenizer
from qwythos.model.block import ExpertPathways, Routing
from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model, export_mixtral, load_model

TEXTS = ["Once upon a time a dragon", "Tom has 3", "The knight counted the coins: twelve gold"]


def both(model, tok, mode: str = "soft") -> tuple[Engine, Engine]:
    native = Engine(model, tok, mode, decode_kernel="native")
    assert native.native is not None
    return native, Engine(model, tok, mode, decode_kernel="torch")


def assert_same(native: Engine, torch_: Engine, texts, routing: Routing, gear=None, n: int = 6) -> list:
    def run(engine):
        reqs = [
            Request(
                engine.tokenizer.encode(t),
                SamplingParams(max_new_tokens=n, ignore_eos=True, logprobs=3),
                gear_bias=None if gear is None else gear[i % len(gear)],
            )
            for i, t in enumerate(texts)
        ]
        return engine.generate(reqs, routing)

    got, want = run(native), run(torch_)
    for g, w in zip(got, want, strict=True):
        assert g.token_ids == w.token_ids
        torch.testing.assert_close(
            torch.tensor([lp.logprob for lp in g.logprobs]), torch.tensor([lp.logprob for lp in w.logprobs])
        )
        torch.testing.assert_close(g.gates, w.gates, atol=1e-4, rtol=1e-4)  # sums in another order
    return got


@pytest.fixture(scope="module")
def lora(tiny_base):
    model, folder = build_model(tiny_base, PathwayConfig(rank=4))
    return randomise(model, router_std=2.0), load_tokenizer(folder), folder


@pytest.mark.parametrize("mode", ["soft", "top1", "force=narrative"])
def test_native_step_equals_the_forward_in_every_mode(lora, mode):
    native, ref = both(*lora[:2])
    routing = parse_routing(mode, native.pathways)
    done = assert_same(native, ref, TEXTS, routing, gear=[[0.0, 0.0], [2.0, -1.0], [-3.0, 0.5]])
    if mode == "top1":  # the rows and steps chose differently: both pathways ran
        chosen = torch.cat([c.gates.argmax(-1).flatten() for c in done])
        assert set(chosen.tolist()) == {0, 1}


def test_native_step_with_a_soft_temperature_and_more_rows_than_it_streams(lora):
    native, ref = both(*lora[:2])
    texts = [f"{TEXTS[i % 3]} {i}" for i in range(11)]  # 11 rows: the weight products go to MKL's GEMM
    assert_same(native, ref, texts, Routing("soft", temperature=0.5), n=4)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(attention_bias=True, num_key_value_heads=4),  # biases on q/k/v/o, no GQA
        dict(model_type="mistral", sliding_window=5),  # keys older than the window are masked
    ],
)
def test_native_step_with_biases_and_sliding_windows(tmp_path, overrides):
    base = make_tiny_base(tmp_path / "base", seed=3, **overrides)
    model, folder = build_model(base, PathwayConfig(rank=4))
    native, ref = both(randomise(model, seed=2), load_tokenizer(folder))
    assert_same(native, ref, TEXTS, Routing("soft"), n=10)


@pytest.mark.parametrize("mode", ["soft", "top1"])
def test_native_step_on_an_exported_mixtral(tmp_path, lora, mode):
    model, _, folder = lora
    mx, tok, _ = load_model(export_mixtral(model, tmp_path / "mx", tokenizer_src=folder, mode=mode))
    assert isinstance(mx.layers[0].mlp.pathways, ExpertPathways)
    native, ref = both(mx, tok, mode)
    done = assert_same(native, ref, TEXTS, parse_routing(mode, native.pathways))
    if mode == "top1":  # rows of one step chose different experts
        assert set(torch.cat([c.gates.argmax(-1).flatten() for c in done]).tolist()) == {0, 1}


@pytest.mark.parametrize("mode", ["soft", "top1"])
def test_native_step_with_bf16_weights_tracks_the_fp32_forward_of_those_weights(lora, mode):
    """bf16 weights, fp32 activations: each generated token's log-prob is what an fp32 forward over the
    same (rounded) weights gives it, to bf16's rounding of the cached keys/values and the prefill."""
    model, tok, _ = lora
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    ref = copy.deepcopy(bf16).float()
    engine = Engine(bf16, tok, decode_kernel="native")
    assert engine.native is not None and engine.layout == "planned"
    routing = parse_routing(mode, engine.pathways)
    params = SamplingParams(max_new_tokens=8, ignore_eos=True, logprobs=1)
    for text in TEXTS:
        prompt = tok.encode(text)
        done = engine.generate([Request(prompt, params)], routing)[0]
        with torch.no_grad():
            out = ref(torch.tensor([prompt + done.token_ids]), routing=routing, trace=True)
        at = slice(len(prompt) - 1, len(prompt) - 1 + len(done.token_ids))  # the positions that chose them
        chosen = torch.tensor(done.token_ids)[:, None]
        want = torch.log_softmax(out.logits[0, at].float(), -1).gather(1, chosen)[:, 0]
        got = torch.tensor([lp.logprob for lp in done.logprobs])
        torch.testing.assert_close(got, want, atol=0.02, rtol=0)
        if mode == "soft":
            torch.testing.assert_close(done.gates, out.gates[0, at], atol=0.02, rtol=0)


def test_the_native_step_refuses_a_cache_that_does_not_fit(lora):
    model, tok, _ = lora
    engine = Engine(model, tok, decode_kernel="native")
    cache = model.new_cache(2, 8)  # two rows; the step below has three
    ids, pos = torch.tensor([[5], [6], [7]]), torch.tensor([[0], [0], [0]])
    with torch.inference_mode(), pytest.raises(RuntimeError, match="KV cache does not match"):
        engine.native.step(ids, pos, cache, Routing(), trace=False)


def test_native_step_is_for_fp32_and_bf16_and_auto_falls_back(lora):
    model, tok, _ = lora
    half = copy.deepcopy(model).to(torch.float16)
    with pytest.raises(RuntimeError, match="fp32 or bf16 on CPU"):
        Engine(half, tok, decode_kernel="native")
    assert Engine(half, tok, decode_kernel="auto").native is None
    with pytest.raises(ValueError, match="decode kernel"):
        Engine(model, tok, decode_kernel="fast")


def test_the_environment_chooses_the_kernel_for_every_entry_point(lora, monkeypatch):
    model, tok, _ = lora
    monkeypatch.setenv("QWYTHOS_DECODE_KERNEL", "torch")
    assert Engine(model, tok).native is None
    assert Engine(model, tok, decode_kernel="native").native is not None  # an explicit choice wins
    monkeypatch.setenv("QWYTHOS_DECODE_KERNEL", "fast")
    with pytest.raises(ValueError, match="QWYTHOS_DECODE_KERNEL"):
        Engine(model, tok)


def test_without_a_compiler_the_torch_forward_decodes_and_the_log_says_why(
    lora, tmp_path, monkeypatch, caplog
):
    env = {
        **os.environ,
        "CXX": "/bin/false",
        "TORCH_EXTENSIONS_DIR": str(tmp_path),
    }  # a real build that fails
    code = "from qwythos.inference import native; print(native.build())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    reason = out.stdout.strip().splitlines()[-1]
    assert "/bin/false" in reason
    model, tok, _ = lora
    monkeypatch.setattr(native, "build", lambda: reason)
    with caplog.at_level("WARNING"):
        engine = Engine(model, tok, decode_kernel="auto")
    assert engine.native is None and reason in caplog.text
    with pytest.raises(RuntimeError, match="native decode step unavailable"):
        Engine(model, tok, decode_kernel="native")
    request = Request(tok.encode("Tom has 3"), SamplingParams(max_new_tokens=3, ignore_eos=True))
    assert len(engine.generate([request])[0].token_ids) == 3


def test_a_lock_left_by_a_killed_build_is_cleared_and_a_live_one_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    for name, age, kept in (("killed", 3600, False), ("building", 5, True)):
        native.clear_stale_lock(name)  # creates the build folder
        lock = next(tmp_path.rglob(name)) / "lock"
        lock.touch()
        os.utime(lock, (time.time() - age, time.time() - age))
        native.clear_stale_lock(name)
        assert lock.exists() == kept


@pytest.mark.parametrize("rows", [1, 3, 8, 9])
@pytest.mark.parametrize("transposed", [True, False])
def test_the_streamed_weight_product_equals_a_matrix_product(rows, transposed):
    assert native.build() is None
    g = torch.Generator().manual_seed(rows)
    W = torch.randn(5001, 70, generator=g)  # more outputs than one chunk, not a multiple of it
    if transposed:  # the decode layout: (in, out) contiguous, streamed; nn.Linear's layout goes to MKL
        W = W.t().contiguous().t()
    x = torch.randn(rows, 70, generator=g)
    torch.testing.assert_close(torch.ops.qwythos.stream_product(x, W), x @ W.t(), rtol=1e-5, atol=1e-4)
