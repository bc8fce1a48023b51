"""The trainer in-process on a tiny base: stages touch only what they should, errors come before compute."""

from __future__ import annotations

import json

import pytest
import torch

from fixtures import records, write_jsonl
from qwythos.config import ConfigError, from_dict
from qwythos.model.formats import load_native, pathway_weights
from qwythos.train.config import TrainConfig
from qwythos.train.loop import make_model, train


def config(tiny_base, data, **over) -> TrainConfig:
    raw = {
        "model": {"base": str(tiny_base), "rank": 4, "alpha": 8, "dropout": 0.0},
        "data": {"dataset": str(data), "max_seq_len": 128},
        "optim": {"batch_size": 2},
        "checkpoint": {"every": 100},
        "stages": [
            {"name": "branch-reasoning", "kind": "branch", "pathway": "reasoning", "max_steps": 2},
            {"name": "branch-narrative", "kind": "branch", "pathway": "narrative", "max_steps": 2},
            {"name": "mix", "kind": "mix", "max_steps": 3, "router_lr": 0.05},
        ],
    }
    for key, value in over.items():
        section, field = key.split("__")
        raw.setdefault(section, {})[field] = value
    return from_dict(TrainConfig, raw)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "records.jsonl", records())


def weights(model_dir):
    return pathway_weights(load_native(model_dir))


def initial(cfg: TrainConfig):
    return pathway_weights(make_model(cfg)[0])


def changed(a, b) -> set[str]:
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_branch_stage_trains_only_its_pathway(tiny_base, data, tmp_path):
    cfg = config(tiny_base, data, model__router_init="zero")
    cfg.stages = cfg.stages[:1]
    moved = changed(weights(train(cfg, tmp_path / "run") / "model"), initial(cfg))
    assert moved and all(".reasoning." in k for k in moved)  # narrative LoRA and routers untouched


def test_mix_with_frozen_loras_trains_routers_only(tiny_base, data, tmp_path):
    cfg = config(tiny_base, data, model__router_init="zero")
    cfg.stages = cfg.stages[2:]
    moved = changed(weights(train(cfg, tmp_path / "run") / "model"), initial(cfg))
    assert moved and all("router" in k for k in moved)


def test_full_run_writes_metrics_plots_and_model(tiny_base, data, tmp_path):
    run = train(config(tiny_base, data), tmp_path / "full")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["branch-reasoning"] * 2 + ["branch-narrative"] * 2 + ["mix"] * 3
    assert all("gate_loss" in r and "gate_acc" in r and "usage" in r for r in rows if r["stage"] == "mix")
    assert all(k in rows[0] for k in ("loss", "lm_loss", "grad_norm", "lr", "tok_s", "peak_mem_mb"))
    assert (run / "plots" / "loss.png").is_file() and (run / "plots" / "gate.png").is_file()
    assert (run / "config.yaml").is_file() and (run / "model" / "qwythos.json").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000004", "step-00000007"]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"stages": [{"name": "b", "kind": "branch", "pathway": "poetry"}]}, "not in model.pathways"),
        ({"optim": {"batch_sise": 2}}, "unknown key"),
        ({"stages": [{"name": "b", "kind": "branch"}]}, "needs pathway"),
    ],
)
def test_bad_configs_are_clear_errors(raw, message):
    with pytest.raises((ValueError, ConfigError), match=message):
        from_dict(TrainConfig, raw)


def test_data_errors_come_before_compute(tiny_base, tmp_path):
    unlabelled = [dict(r) for r in records(4, 0, 0)]
    for r in unlabelled:
        del r["pathway"]
    bad = write_jsonl(tmp_path / "unlabelled.jsonl", unlabelled)
    with pytest.raises(ValueError, match="without a pathway label"):
        train(config(tiny_base, bad), tmp_path / "r1")
    only_reasoning = write_jsonl(tmp_path / "reasoning.jsonl", records(4, 0, 0))
    with pytest.raises(ValueError, match="stage 'branch-narrative': its slice is empty"):
        train(config(tiny_base, only_reasoning), tmp_path / "r2")
    assert not (tmp_path / "r2" / "metrics.jsonl").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(config(tiny_base, tmp_path / "missing.jsonl"), tmp_path / "r3")


def test_existing_run_needs_resume(tiny_base, data, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("")
    with pytest.raises(FileExistsError, match="--resume"):
        train(config(tiny_base, data), tmp_path / "run")
