"""Which layout each decode weight matrix reads fastest in on this CPU: measured once per kind of CPU, cached.

The native step multiplies a few rows by every frozen weight matrix in one of two ways (csrc/decode_step.cpp
``product``): its own stream over the transposed layout, (in, out) contiguous, or MKL/oneDNN's GEMM over
nn.Linear's (out, in). Which reads faster depends on the CPU and the shape: on the Xeon the step was tuned
on, the stream read SmolLM2's fp32 matrices at 31-41 GB/s against MKL's 19-29; on another Xeon it read 14
GB/s against torch.mv's 28. So rather than one fixed layout, ``plan`` times both for each distinct (out,
in, dtype) on one row with the decode threads, keeps the faster (a tie within ``TIE`` keeps the stream),
and caches the choice in ``$QWYTHOS_CACHE/decode-plans/<cpu id>.json``, so later processes on this kind of CPU
load at once. ``bench/bench_decode.py`` prints the plan and the GB/s behind it.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

LAYOUTS = ("transposed", "standard")  # the native stream | MKL's GEMM (nn.Linear's layout)
TIE = 0.03  # the stream keeps a shape unless MKL is > 3 % faster: a noisy tie is no reason to switch
Shape = tuple[int, int, str]  # (out, in, dtype name)
SPAN = 512 << 20  # bytes the timed matrices cycle through: past the caches, as a decode step reads them
MAX_COPIES = 4096  # tiny shapes: enough copies to leave the caches, not so many that Python's loop is timed


def key(shape: Shape, threads: int) -> str:
    out, in_, dtype = shape
    return f"{out}x{in_}:{dtype}:t{threads}"


def shape_of(weight: torch.Tensor) -> Shape:
    return int(weight.shape[-2]), int(weight.shape[-1]), str(weight.dtype).removeprefix("torch.")


def time_layouts(shape: Shape, cycles: int = 3) -> dict[str, float]:
    """Median seconds of one row times an (out, in) matrix in each layout, through the native op, as decoding
    reads it: from memory, not from cache. The matrices are views cycling through a ``SPAN``-byte buffer
    (larger than any L3 here) and each cycle's time is divided by its products."""
    out, in_, dtype = shape
    dt = getattr(torch, dtype)
    size = out * in_
    copies = max(1, min(MAX_COPIES, SPAN // (size * _bytes(dtype))))
    buf = torch.full((copies * size,), 0.01, dtype=dt)
    x = torch.randn(1, in_)
    op = torch.ops.qwythos.stream_product
    views = {
        "transposed": [buf[i * size : (i + 1) * size].view(in_, out).t() for i in range(copies)],
        "standard": [buf[i * size : (i + 1) * size].view(out, in_) for i in range(copies)],
    }
    result = {}
    for layout, ws in views.items():
        times = []
        for _ in range(cycles + 1):  # the first cycle warms the dispatcher and pages the buffer in
            t = time.perf_counter()
            for w in ws:
                op(x, w)
            times.append((time.perf_counter() - t) / copies)
        result[layout] = statistics.median(times[1:])
    return result


def choose(seconds: dict[str, float]) -> str:
    """The faster layout; the stream unless MKL beats it by more than TIE."""
    return "standard" if seconds["standard"] < seconds["transposed"] * (1 - TIE) else "transposed"


def plan_file(cpu: str) -> Path:
    from ..model.base import cache_dir

    return cache_dir() / "decode-plans" / f"{cpu}.json"


def plan(
    shapes: Iterable[Shape],
    threads: int,
    cpu: str,
    measure: Callable[[Shape], dict[str, float]] = time_layouts,
) -> dict[Shape, str]:
    """The layout for each shape: from this CPU's cache, else measured (with ``threads`` torch threads) and
    added to it. The cache also keeps the seconds behind each choice (read by bench_decode.py)."""
    path = plan_file(cpu)
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    chosen, added = {}, False
    for shape in dict.fromkeys(shapes):
        k = key(shape, threads)
        if k not in cached and shape[0] * shape[1] * _bytes(shape[2]) > SPAN:
            # one matrix past the span (a 7B lm_head): timing it would allocate its size again; the stream
            cached[k], added = {"layout": "transposed", "gbps": None, "why": "larger than the span"}, True
        elif k not in cached or cached[k].get("layout") not in LAYOUTS:
            before = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                seconds = measure(shape)
            finally:
                torch.set_num_threads(before)
            gbps = {lay: shape[0] * shape[1] * _bytes(shape[2]) / s / 1e9 for lay, s in seconds.items()}
            cached[k] = {"layout": choose(seconds), "gbps": {lay: round(v, 2) for lay, v in gbps.items()}}
            added = True
        chosen[shape] = cached[k]["layout"]
    if added:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=2, sort_keys=True))
        os.replace(tmp, path)  # atomic: a concurrent process reads the old plan or the new one
    return chosen


def _bytes(dtype: str) -> int:
    return torch.empty(0, dtype=getattr(torch, dtype)).element_size()
