"""The trainer in-process on a tiny base: stages touch only what they should, errors come before compute."""

from __future__ import annotations

import json

import pytest
import torch

from fixtures import records, tiny_train_raw, write_jsonl
from qwythos.config import ConfigError, from_dict
from qwythos.model.formats import load_native, pathway_weights
from qwythos.train.config import TrainConfig
from qwythos.train.loop import make_model, train


def config(tiny_base, data, **over) -> TrainConfig:
    raw = tiny_train_raw(tiny_base, data)
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


def test_tensorboard_logs_the_metrics_of_every_stage(tiny_base, data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = config(tiny_base, data, runtime__tensorboard=True)
    events = EventAccumulator(str(train(cfg, tmp_path / "tb") / "tensorboard")).Reload()
    tags = events.Tags()["scalars"]
    assert {"branch-reasoning/loss", "branch-narrative/lm_loss", "mix/gate_loss"} <= set(tags)
    assert [e.step for e in events.Scalars("mix/loss")] == [5, 6, 7]


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


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """A real curated folder (qwythos curate) whose budgets leave a pool for active learning."""
    from qwythos.curate.run import curate

    rows = records(30, 30, 6)
    for i, r in enumerate(rows):  # distinct texts, so dedup keeps them
        r["messages"][1]["content"] += f" Note {i}: " + " ".join(f"w{i}x{j}" for j in range(i % 7 + 3))
    tmp = tmp_path_factory.mktemp("curated")
    return curate(
        inputs=[write_jsonl(tmp / "in.jsonl", rows)],
        out=tmp / "ds",
        overrides=[
            "select.budgets.reasoning.samples=10",
            "select.budgets.narrative.samples=10",
            "label.embed.model=hashing",
            "executor.workers=1",
        ],
    )


def test_active_learning_rounds_select_from_the_pool_and_train(tiny_base, curated, tmp_path):
    from qwythos.curate.select import next_round
    from qwythos.dataset import read_dataset, read_pool

    cfg = config(tiny_base, curated, rounds__count=2, rounds__per_round=3)
    cfg.rounds.stage.max_steps = 1
    with pytest.raises(ValueError, match="needs a selector"):
        train(cfg, tmp_path / "nosel")
    run = train(cfg, tmp_path / "run", selector=next_round)
    first, second = (json.loads((run / "rounds" / f"round-{k}.json").read_text()) for k in (1, 2))
    pool = {r.id for r in read_pool(curated)}
    assert len(first["ids"]) == 3 and set(first["ids"]) <= pool and set(second["ids"]) <= pool
    assert not set(first["ids"]) & set(second["ids"])  # a record is picked once
    assert not set(first["ids"]) & {r.id for r in read_dataset(curated)}
    assert all({"loss", "ifd"} <= set(s) for s in first["scores"].values())
    stages = [json.loads(x)["stage"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert stages[-2:] == ["round-1", "round-2"]


def test_rounds_without_a_pool_fail_before_compute(tiny_base, data, tmp_path):
    with pytest.raises(ValueError, match="no pool"):
        train(config(tiny_base, data, rounds__count=1), tmp_path / "run")


def test_dense_lora_baseline_trains_alongside_on_the_same_token_budget(tiny_base, data, tmp_path):
    cfg = config(tiny_base, data, baseline__dense_lora=True)
    run = train(cfg, tmp_path / "run")
    base = run / "baselines" / "dense_lora"
    assert load_native(base / "model").pathway_names == ["dense"]
    main = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    dense = [json.loads(x) for x in (base / "metrics.jsonl").read_text().splitlines()]
    one_step = cfg.optim.batch_size * cfg.data.max_seq_len
    assert main[-1]["tokens"] <= dense[-1]["tokens"] < main[-1]["tokens"] + one_step  # same budget


def test_branches_trained_apart_combine_into_one_model(tiny_base, data, tmp_path):
    runs = {}
    for p in ("reasoning", "narrative"):
        cfg = config(tiny_base, data, model__router_init="zero")
        cfg.stages = [s for s in cfg.stages if s.pathway == p]
        runs[p] = train(cfg, tmp_path / p) / "model"
    cfg = config(tiny_base, data, model__pathway_sources={p: str(m) for p, m in runs.items()})
    cfg.stages = cfg.stages[2:]
    combined = make_model(cfg)[0]
    got = pathway_weights(combined)
    for p, m in runs.items():
        theirs = pathway_weights(load_native(m))
        assert all(torch.equal(got[k], theirs[k]) for k in got if f".{p}." in k)


def test_gradient_accumulation_matches_the_big_batch(tiny_base, data, tmp_path):
    """batch 2 x accumulation 2 == batch 4: the LM loss is normalised by the step's supervised tokens."""
    got = {}
    for bs, acc in ((4, 1), (2, 2)):
        cfg = config(
            tiny_base,
            data,
            optim__batch_size=bs,
            optim__grad_accum=acc,
            data__pack=False,
            model__router_init="zero",
        )
        cfg.stages = cfg.stages[:1]
        got[bs] = weights(train(cfg, tmp_path / f"b{bs}") / "model")
    for k in got[4]:
        torch.testing.assert_close(got[4][k], got[2][k], atol=1e-5, rtol=1e-4)
