"""Holding part of an input out before curation (stratified by kind) and the evaluation reading it back."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from qwythos.config import ConfigError
from qwythos.curate import read_dataset, read_pool
from qwythos.curate.config import InputConfig
from qwythos.curate.holdout import split_rows
from qwythos.curate.run import curate
from qwythos.eval import data as evdata
from unit.curate.curate_data import story_rows, write_jsonl
from unit.curate.test_curate_run import FAST


def _rows(n_story: int, n_scene: int) -> list[dict]:
    rows = story_rows(n_story + n_scene)
    for i, r in enumerate(rows):
        r["id"] = f"s{i}"
        r["pathway"], r["meta"] = "narrative", {"kind": "story" if i < n_story else "scene"}
    return rows


def test_the_split_is_stratified_seeded_and_loses_nothing():
    lines = [json.dumps(r) for r in _rows(40, 10)] + ["{broken"]
    kept, held, per = split_rows(lines, 0.2, seed=1)
    assert per == {"story": 8, "scene": 2, "all": 0}
    assert sorted(kept + held) == sorted(lines) and not set(kept) & set(held)
    assert "{broken" in kept  # a malformed row is left for the reader to reject with its reason
    assert split_rows(lines, 0.2, seed=1) == (kept, held, per)
    assert split_rows(lines, 0.2, seed=2)[1] != held
    assert Counter(json.loads(x)["meta"]["kind"] for x in held) == {"story": 8, "scene": 2}
    _, held, per = split_rows([json.dumps(r) for r in _rows(3, 1)], 0.1, seed=0)
    assert per == {"story": 1, "scene": 0}  # at least one of a stratum of two or more, none of a single row


def test_curate_holds_out_before_curation_and_eval_reads_it(tmp_path):
    src = write_jsonl(tmp_path / "stories.jsonl", _rows(40, 10))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"inputs:\n  - path: {src}\n    source: stories\n    holdout: 0.2\n    holdout_seed: 3\n")
    out = curate(out=tmp_path / "out", config=cfg, overrides=FAST)
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["heldout"]["stories"]
    assert entry["held_out"] == 10 and entry["rows"] == 50 and entry["by_stratum"] == {"story": 8, "scene": 2}
    held = [json.loads(x) for x in (out / entry["path"]).read_text().splitlines()]
    curated = {r.id.split("/")[-1] for r in read_dataset(out) + read_pool(out)}
    assert len(held) == 10 and not {r["id"] for r in held} & curated
    assert manifest["steps"]["read"]["in"] == 40 and len(curated) == 40  # curation never saw the 10
    path = evdata.narrative_source("auto", str(out))
    assert path == out / entry["path"]
    trained, _ = evdata.training_records(str(out), path)
    records, info = evdata.heldout_records(str(path), trained, n=20, min_heldout=1)
    assert info["narrative"]["origin"] == str(path) and info["narrative"]["source_held_out"] == 10


def test_holdout_errors_name_the_option(tmp_path):
    with pytest.raises(ConfigError, match=r"holdout \(1.5\) must be a fraction"):
        InputConfig(path="x.jsonl", holdout=1.5)
    csv = tmp_path / "x.csv"
    csv.write_text("question,answer\nq,#### 1\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"inputs:\n  - path: {csv}\n    holdout: 0.2\n")
    with pytest.raises(ConfigError, match="`holdout` splits JSONL inputs"):
        curate(out=tmp_path / "out", config=cfg, overrides=FAST)
