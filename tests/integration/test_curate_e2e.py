"""Curation end to end in real processes: resume after a kill, Ray == local, the quickstart preset, MiniLM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qwythos.curate import read_dataset
from qwythos.curate.run import curate
from unit.curate.curate_data import math_rows, story_rows, write_jsonl, write_parquet

pytestmark = pytest.mark.slow
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
SMALL = ["label.embed.model=hashing", "select.embed.model=hashing", "output.plots=false"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "qwythos.cli", "curate", *args]


def same_output(a: Path, b: Path) -> None:
    """Two dataset folders hold the same records, pool and rejects, and the same counts."""
    for part in ("data", "pool", "rejects"):
        ta, tb = pq.read_table(a / part), pq.read_table(b / part)
        assert ta.equals(tb), part
    ma, mb = (json.loads((x / "manifest.json").read_text()) for x in (a, b))
    for key in ("config_hash", "inputs", "steps", "rejected", "pathways", "pool", "curriculum", "shards"):
        assert ma[key] == mb[key], key


def test_resume_after_killing_a_real_run(tmp_path):
    data = write_jsonl(tmp_path / "math.jsonl", math_rows(20_000))
    args = ["--input", str(data), *SMALL, "read.chunk_size=200", "executor.workers=1"]
    out = tmp_path / "killed"
    proc = subprocess.Popen(cli("--out", str(out), *args), env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    done: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        done = list(out.glob(".work/map-*/*.json"))
        if len(done) >= 5:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    assert not (out / "manifest.json").exists()
    resumed = subprocess.run(cli("--out", str(out), *args), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    skipped = int(resumed.stderr.split("resuming: ")[1].split(" of ")[0])
    assert skipped >= len(done)
    clean = subprocess.run(
        cli("--out", str(tmp_path / "clean"), *args), env=ENV, capture_output=True, text=True
    )
    assert clean.returncode == 0, clean.stderr[-2000:]
    same_output(out, tmp_path / "clean")
    assert len(read_dataset(out)) > 17_000


def test_ray_executor_gives_the_local_output(tmp_path):
    inputs = [
        write_jsonl(tmp_path / "math.jsonl", math_rows(1500)),
        write_parquet(tmp_path / "stories.parquet", story_rows(300)),
    ]
    common = [*SMALL, "read.chunk_size=200", "executor.workers=2", "select.budgets.reasoning.samples=1000"]
    local = curate(inputs=inputs, out=tmp_path / "local", overrides=common)
    ray = curate(inputs=inputs, out=tmp_path / "ray", executor="ray", overrides=common)
    assert json.loads((ray / "manifest.json").read_text())["executor"] == "ray"
    same_output(local, ray)


def test_quickstart_preset_builds_with_no_download(tmp_path):
    out = curate(out=tmp_path / "qs", preset="quickstart", overrides=["output.plots=false"])
    records = read_dataset(out)
    by_pathway = {p: [r for r in records if r.pathway == p] for p in ("reasoning", "narrative", "mixed")}
    assert by_pathway["reasoning"] and by_pathway["narrative"]
    assert by_pathway["mixed"] == []  # budgeted 0: the pathways and the gate train without them
    assert all(r.response.rstrip().split("\n")[-1].startswith("####") for r in by_pathway["reasoning"][:50])
    assert all(r.source == "leg_counting" for r in by_pathway["reasoning"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pathways"]["reasoning"]["samples"] <= 720
    assert manifest["heldout"]  # 20 % of the stories split off before curation


def test_minilm_classifier_labels_the_unsure(tmp_path):
    rows = [
        {
            "instruction": f"Summarise the meeting notes number {i}.",
            "context": "",
            "category": "summarization",
            "response": f"The team met on day {i} and agreed to ship the garden report after lunch.",
        }
        for i in range(6)
    ] + [
        {
            "instruction": f"Write a story about a dragon named Ember {i}.",
            "response": "Once upon a time a dragon "
            "named Ember smiled at the sleepy village, and the children sang to her.",
            "category": "creative_writing",
        }
        for i in range(6)
    ]
    path = write_jsonl(tmp_path / "dolly.jsonl", rows)
    out = curate(inputs=[path], out=tmp_path / "o", overrides=["output.plots=false", "executor.workers=1"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"]["label_embed"]["unsure"] == 6
    unsure = [r for r in read_dataset(out) if "Summarise" in r.prompt]
    assert unsure and all("embedding" in r.meta["label"] for r in unsure)
    from qwythos.curate.config import EmbedConfig
    from qwythos.curate.embed import Embedder

    embed = Embedder(EmbedConfig(model="minilm"), tmp_path / "cache")
    v = embed(["A dragon guarded the village.", "A dragon watched over the town.", "Compute 17 * 23 = 391."])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    again = Embedder(EmbedConfig(model="minilm"), tmp_path / "cache")  # served from the on-disk cache
    assert (again(["A dragon guarded the village."]) == v[:1]).all() and again.backend is None
