"""Generation as a typed function for the CLI: one prompt in, text + token ids + per-token trace out."""

from __future__ import annotations

from pathlib import Path

import torch

from ..model.formats import load_model
from .engine import Engine, Request
from .sampling import GearSampling, SamplingParams
from .trace import switches, trace_records

DTYPES = ("float32", "bfloat16")  # bf16 halves the weight bytes each decoded token reads: faster on CPU


def load_engine(model_dir: str | Path, dtype: str = "float32") -> Engine:
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: use one of {list(DTYPES)}")
    model, tokenizer, mode = load_model(model_dir)
    return Engine(model.to(getattr(torch, dtype)), tokenizer, mode)


def generate(
    model_dir: str | Path | Engine,
    prompt: str,
    chat: bool = False,
    params: SamplingParams | None = None,
    mode: str | None = None,
    gear: dict[str, float] | None = None,
    dtype: str = "float32",
    gear_sampling: GearSampling | None = None,
) -> dict:
    """{text, token_ids, trace: [{token_id, text, gate, pathway}], pathways, switches, mode, ...}."""
    engine = model_dir if isinstance(model_dir, Engine) else load_engine(model_dir, dtype)
    routing, bias = engine.routing(mode, gear)
    ids = (
        engine.encode_chat([{"role": "user", "content": prompt}]) if chat else engine.tokenizer.encode(prompt)
    )
    request = Request(ids, params or SamplingParams(), gear_bias=bias, gear_sampling=gear_sampling)
    done = engine.generate([request], routing)[0]
    trace = trace_records(engine.tokenizer, done.token_ids, done.gates, engine.pathways)
    return {
        "text": done.text,
        "token_ids": done.token_ids,
        "trace": trace,
        "pathways": engine.pathways,
        "switches": switches([engine.pathways.index(t["pathway"]) for t in trace if t["pathway"]]),
        "mode": mode or engine.default_mode,
        "finish_reason": done.finish_reason,
        "prompt_tokens": done.prompt_tokens,
    }
