"""Issue 7's server figures: aggregate decode tok/s with 8 concurrent streams vs 1 stream, and time to first
token, through a real `qwythos serve` (uvicorn, continuous batching) on loopback, same run.

The model is the pathway model on the embedded SmolLM2-135M (LoRA r16 non-zero, random router), soft mode.
Each stream is a streamed /v1/completions of N tokens (ignore_eos); single and concurrent rounds alternate.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_serve.py [--repeats 2] [--tokens 48] [--streams 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))


def make_model(folder: Path) -> Path:
    from bench_decode import pathway_model

    from qwythos.model.formats import save_model

    model, base = pathway_model()
    return save_model(model, folder, base_source="smollm2-135m", base_folder=base)


def stream_one(url: str, prompt: str, tokens: int, out: list) -> None:
    body = {
        "model": "m",
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
        "pathway_trace": False,
    }
    t0 = time.perf_counter()
    first, n = None, 0
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0].get("finish_reason") is None:
                n += 1
                if first is None:
                    first = time.perf_counter()
    out.append({"ttft": first - t0, "tokens": n, "end": time.perf_counter(), "start": t0})


def round_(url: str, streams: int, tokens: int) -> dict:
    results: list[dict] = []
    threads = [
        threading.Thread(
            target=stream_one, args=(url, f"Story {i}: once upon a time there was", tokens, results)
        )
        for i in range(streams)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    total = sum(r["tokens"] for r in results)
    return {"tok_s": total / wall, "ttft_s": statistics.median(r["ttft"] for r in results), "tokens": total}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--out", type=Path, default=Path("bench/results/serve.json"))
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    model = make_model(tmp / "m")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qwythos.cli",
            "serve",
            str(model),
            "--port",
            str(a.port),
            "--max-batch",
            str(a.streams),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{a.port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        round_(url, 1, 4)  # warm-up
        raw: dict[str, list[dict]] = {"single": [], "concurrent": []}
        for r in range(a.repeats):
            for kind, n in (("single", 1), ("concurrent", a.streams)):
                res = round_(url, n, a.tokens)
                raw[kind].append(res)
                print(
                    f"repeat {r + 1}/{a.repeats} {kind:10s} {res['tok_s']:.2f} tok/s, "
                    f"TTFT {res['ttft_s']:.2f} s",
                    flush=True,
                )
    finally:
        proc.terminate()
        proc.wait(60)
    med = {k: statistics.median(x["tok_s"] for x in v) for k, v in raw.items()}
    summary = {
        "aggregate_tok_s": med,
        "ratio_concurrent_vs_single": med["concurrent"] / med["single"],
        "ttft_s": {k: statistics.median(x["ttft_s"] for x in v) for k, v in raw.items()},
        "setup": {
            "streams": a.streams,
            "tokens_per_stream": a.tokens,
            "repeats": a.repeats,
            "mode": "soft",
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(default)"),
            "cpus": os.cpu_count(),
            "machine": "shared with other jobs",
        },
        "raw": raw,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "raw"}, indent=2))


if __name__ == "__main__":
    main()
