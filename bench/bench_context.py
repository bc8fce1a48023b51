"""A decode step's time against the number of cached tokens: the native step vs the PyTorch forward, same run.

Long dialogues decode with thousands of cached tokens, where reading the KV cache and the attention's exps
cost as much as the weights. The cache is filled with random keys/values (a step's time does not depend on
their values; prefilling 8k real tokens would take minutes here); the pathway model is the embedded
SmolLM2-135M with LoRA r16 non-zero and a random router, top1, bs1, one thread. The two kernels alternate.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_context.py [--lengths 64,1024,4096,8000] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def step(engine, cache, length: int, kernel: str) -> float:
    """Seconds for one top1 decode step with ``length`` cached tokens: native, or the model's forward."""
    import torch

    from qwythos.model.block import Routing

    ids, pos, routing = torch.tensor([[100]]), torch.tensor([[length]]), Routing("top1")
    cache.length = length
    cache.reserve(1, torch.ones(1, 1, dtype=torch.bool))
    t = time.perf_counter()
    if kernel == "native":
        engine.native.step(ids, pos, cache, routing, trace=True)
    else:
        engine.model(ids, position_ids=pos, cache=cache, routing=routing, last_only=True, trace=True)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", default="64,1024,4096,8000")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--out", type=Path, default=Path("bench/results/context.json"))
    a = p.parse_args()

    import torch
    from bench_decode import pathway_model

    from qwythos.inference.engine import Engine
    from qwythos.model.base import load_tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, folder = pathway_model(a.dtype)
    engine = Engine(model, load_tokenizer(folder), decode_kernel="native")
    results = {}
    for L in [int(x) for x in a.lengths.split(",")]:
        cache = model.new_cache(1, L + 8)
        cache.k.normal_()
        cache.v.normal_()
        cache.valid[:, :L] = True
        times: dict[str, list[float]] = {"native": [], "torch": []}
        with torch.inference_mode():
            for kernel in times:
                step(engine, cache, L, kernel)  # warm-up
            for _ in range(a.reps):
                for kernel in times:
                    times[kernel].append(step(engine, cache, L, kernel))
        ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        results[L] = {"native_ms": ms["native"], "torch_ms": ms["torch"], "ratio": ms["torch"] / ms["native"]}
        print(f"{L:6d} cached tokens: native {ms['native']:.1f} ms, torch {ms['torch']:.1f} ms", flush=True)
    setup = {"dtype": a.dtype, "mode": "top1", "threads": 1, "reps": a.reps}
    summary = {"step_ms_by_cached_tokens": results, "setup": setup}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
