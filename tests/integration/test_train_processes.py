"""The trainer as real processes: SIGKILL mid-stage then --resume reproduces the uninterrupted run exactly,
and torchrun with 2 gloo processes matches 1 process on the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fixtures import records, write_jsonl
from qwythos.model.formats import load_native, pathway_weights

pytestmark = pytest.mark.slow


def args(tiny_base, data, out, *extra):
    return [
        sys.executable,
        "-m",
        "qwythos.cli",
        "train",
        "--out",
        str(out),
        f"model.base={tiny_base}",
        f"data.dataset={data}",
        "model.rank=4",
        "model.alpha=8",
        "model.dropout=0.1",
        "data.max_seq_len=96",
        "optim.batch_size=2",
        "runtime.num_threads=1",
        *extra,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def losses(run: Path) -> list[tuple[int, str, float, float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["global_step"], r["stage"], r["loss"], r["grad_norm"]) for r in rows]


@pytest.mark.parametrize(
    "every, kill_after",
    [(2, 5), (8, 9)],  # resume mid-stage; resume from the checkpoint that ends stage 1 (8 steps)
)
def test_sigkill_then_resume_reproduces_the_loss_curve(tiny_base, tmp_path, every, kill_after):
    data = write_jsonl(tmp_path / "d.jsonl", records(16, 16, 4))
    ref = tmp_path / "ref"
    every_arg = f"checkpoint.every={every}"
    subprocess.run(args(tiny_base, data, ref, every_arg), env=ENV, check=True, capture_output=True)
    expected = losses(ref)
    assert len(expected) >= 16 and expected[7][1] != expected[8][1]  # stage 1 is 8 steps

    run = tmp_path / "run"
    proc = subprocess.Popen(
        args(tiny_base, data, run, every_arg),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it mid-run, after a checkpoint, before the end
        n = len((run / "metrics.jsonl").read_text().splitlines()) if (run / "metrics.jsonl").exists() else 0
        if n >= kill_after:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model").exists(), "the run finished before it was killed; the test proves nothing"
    subprocess.run(
        [sys.executable, "-m", "qwythos.cli", "train", "--out", str(run), "--resume"],
        env=ENV,
        check=True,
        capture_output=True,
    )
    assert (
        losses(run) == expected
    )  # bit-identical: weights, optimiser, scheduler, RNG (dropout), data position
    a, b = pathway_weights(load_native(ref / "model")), pathway_weights(load_native(run / "model"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_torchrun_two_processes_match_one(tiny_base, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", records(8, 8, 0))
    common = [
        "checkpoint.every=100",
        "model.dropout=0.0",
        "data.pack=false",
        "stages.0.max_steps=3",
        "stages.1.max_steps=3",
        "stages.2.max_steps=3",
    ]
    one = tmp_path / "one"
    cmd = args(tiny_base, data, one, *common)
    cmd[cmd.index("optim.batch_size=2")] = "optim.batch_size=4"  # one process: the whole global batch
    subprocess.run(cmd, env=ENV, check=True, capture_output=True)
    two = tmp_path / "two"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        "-m",
        "qwythos.cli",
    ]
    run = subprocess.run(
        torchrun + args(tiny_base, data, two, *common)[3:], env=ENV, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = pathway_weights(load_native(one / "model")), pathway_weights(load_native(two / "model"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3)  # Adam amplifies rounding
    la, lb = losses(one), losses(two)
    assert [x[0] for x in la] == [x[0] for x in lb]
    for x, y in zip(la, lb, strict=True):
        assert abs(x[2] - y[2]) < 1e-3  # logged losses are global means (gate terms: mean of rank means)
