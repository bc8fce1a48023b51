"""Difficulty, budgeted diverse selection, curriculum order, select_next and the model scorer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qwythos.curate.config import CurriculumConfig
from qwythos.curate.select import (
    curriculum,
    difficulty,
    percentile,
    score_with_model,
    select,
    select_next,
)
from qwythos.records import Record


def test_percentile_and_difficulty_are_per_pathway():
    assert percentile(np.array([3.0, 1.0, 2.0, 2.0])).tolist() == [1.0, 0.0, 0.5, 0.5]
    pathways = np.array(["reasoning", "reasoning", "narrative", "narrative"])
    steps = np.array([1.0, 9.0, 100.0, 200.0])
    d = difficulty(pathways, [steps, np.array([np.nan] * 4)])  # an all-NaN feature is ignored
    assert d.tolist() == [0.0, 1.0, 0.0, 1.0]


def test_budgets_are_respected_and_overflow_goes_to_the_pool():
    rng = np.random.default_rng(0)
    n = 200
    score = rng.random(n)
    pathways = np.array(["reasoning", "narrative", "mixed", "other"])[rng.integers(0, 4, n)]
    tokens = rng.integers(10, 100, n)
    budgets = {
        "reasoning": {"samples": 10},
        "narrative": {"tokens": 500},
        "mixed": {"samples": 5, "tokens": 120},
    }
    sel = select(score, pathways, tokens, budgets, embed=None, tau=1.0, block=16)
    kept = sel.kept
    assert (pathways[kept] == "reasoning").sum() == 10
    assert tokens[kept][pathways[kept] == "narrative"].sum() <= 500
    mixed = kept[pathways[kept] == "mixed"]
    assert len(mixed) <= 5 and tokens[mixed].sum() <= 120
    assert (pathways[kept] == "other").sum() == (pathways == "other").sum()  # no budget: unlimited
    assert sorted(kept.tolist() + sel.pool.tolist()) == list(range(n))  # nothing lost
    reasoning = np.flatnonzero(pathways == "reasoning")  # the best-scored reasoning samples were kept
    assert set(kept[pathways[kept] == "reasoning"]) == set(reasoning[np.argsort(-score[reasoning])][:10])


def test_diversity_skips_a_near_copy_of_a_kept_sample():
    vecs = np.array([[1, 0, 0], [0.999, 0.0447, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    score = np.array([0.9, 0.8, 0.7, 0.6])
    pathways = np.array(["reasoning", "reasoning", "reasoning", "narrative"])
    sel = select(score, pathways, np.ones(4), {}, embed=lambda idx: vecs[idx], tau=0.95, block=2)
    assert sel.kept.tolist() == [0, 2, 3]
    assert sel.similar[1][0] == 0 and sel.similar[1][1] > 0.95
    sel = select(score, pathways, np.ones(4), {}, embed=lambda idx: vecs[idx], tau=1.0)
    assert sel.kept.tolist() == [0, 1, 2, 3]


def test_curriculum_orders_are_monotone():
    rng = np.random.default_rng(1)
    diff = rng.random(100)
    ids = [f"r{i}" for i in range(100)]
    order, _, _ = curriculum(diff, ids, CurriculumConfig(order="easy_to_hard"))
    assert np.all(np.diff(diff[order]) >= 0)
    order, stage, summary = curriculum(diff, ids, CurriculumConfig(order="staged", stages=4))
    assert np.all(np.diff(stage[order]) >= 0)  # stages never go back
    assert [s["count"] for s in summary] == [25, 25, 25, 25]
    for s in range(3):  # every record of a stage is easier than every record of the next
        assert diff[stage == s].max() <= diff[stage == s + 1].min()
    again, _, _ = curriculum(diff, ids, CurriculumConfig(order="staged", stages=4))
    assert np.array_equal(order, again)


def _rec(i: int, pathway: str, tokens: int = 10) -> Record:
    return Record(
        f"r{i}",
        "t",
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        pathway=pathway,
        meta={"tokens": tokens},
    )


def test_select_next_ranks_by_ifd_under_budgets_and_exclusions():
    pool = [_rec(i, "reasoning" if i < 6 else "narrative", tokens=10 * (i + 1)) for i in range(10)]
    scores = {f"r{i}": {"loss": 1.0 + i, "ifd": 0.1 * i} for i in range(10)}
    scores["r5"]["ifd"] = 1.2  # the prompt hurts: skipped
    scores["r4"]["loss"] = math.nan  # unscored: skipped
    del scores["r3"]
    budgets = {"reasoning": {"samples": 2}, "narrative": {"tokens": 190}}
    picked = select_next(pool, scores, budgets, exclude_ids={"r9"})
    ids = [r.id for r in picked]
    assert ids == ["r8", "r7", "r2", "r1"]  # by IFD; r6 would pass the narrative token budget (90+80+70)
    assert [r.id for r in picked if r.pathway == "reasoning"] == ["r2", "r1"]
    assert sum(r.meta["tokens"] for r in picked if r.pathway == "narrative") <= 190


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_base, tmp_path_factory):
    from qwythos.model.api import init_model

    return init_model(out=tmp_path_factory.mktemp("m") / "model", base=tiny_base, router_init="random")


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from qwythos.model.formats import load_model

    return load_model(tiny_model_dir)[:2]


def test_score_with_model_batched_equals_one_by_one(tiny_model):
    model, tok = tiny_model
    records = [
        Record(
            "a",
            "t",
            [
                {"role": "user", "content": "Tom has 3 apples."},
                {"role": "assistant", "content": "3 + 4 = 7. #### 7"},
            ],
        ),
        Record(
            "b",
            "t",
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "A dragon?"},
                {"role": "assistant", "content": "Once upon a time a dragon guarded a quiet village."},
            ],
        ),
        Record(
            "c",
            "t",
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The knight counted."}],
        ),
    ]
    batched = score_with_model(model, tok, records, batch_size=3)
    single = {r.id: score_with_model(model, tok, [r], batch_size=1)[r.id] for r in records}
    for rid in batched:
        assert batched[rid]["loss"] == pytest.approx(single[rid]["loss"], rel=1e-4)
        assert batched[rid]["ifd"] == pytest.approx(single[rid]["ifd"], rel=1e-4)
        assert batched[rid]["loss"] > 0 and math.isfinite(batched[rid]["ifd"])
    # reference: the conditional loss of record a computed by hand
    r = records[0]
    prefix = tok.apply_chat_template(r.messages[:1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(r.messages, tokenize=False)
    ids = tok(full, add_special_tokens=False)["input_ids"]
    n_prefix = len(tok(prefix, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")
    assert batched["a"]["loss"] == pytest.approx(nll[n_prefix - 1 :].mean().item(), rel=1e-4)


def test_cell_search_finds_the_same_near_copies_as_exact_search():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(1500, 32))
    copies = base[rng.choice(1500, 150, replace=False)] + rng.normal(scale=0.05, size=(150, 32))
    vecs = np.concatenate([base, copies]).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    n = len(vecs)
    score = np.concatenate([np.linspace(1, 0.5, 1500), np.linspace(0.4, 0.1, 150)])  # originals first
    args = (score, np.array(["reasoning"] * n), np.ones(n), {}, lambda idx: vecs[idx], 0.9)
    exact = select(*args, cell_size=10**9)
    cells = select(*args, cell_size=100, probes=3)
    assert set(exact.similar) == set(cells.similar) == set(range(1500, n))
    assert np.array_equal(np.sort(exact.kept), np.sort(cells.kept))


def test_active_learning_round_from_the_cli(tmp_path, tiny_model_dir):
    from qwythos.cli import main
    from qwythos.curate import read_dataset, read_pool
    from qwythos.curate.run import curate
    from unit.curate.curate_data import math_rows, write_jsonl

    data = write_jsonl(tmp_path / "m.jsonl", math_rows(12))
    fast = [
        "executor.workers=1",
        "select.embed.model=hashing",
        "label.embed.model=hashing",
        "output.plots=false",
    ]
    first = curate(
        inputs=[data], out=tmp_path / "r0", overrides=[*fast, "select.budgets.reasoning.samples=4"]
    )
    pool = {r.id for r in read_pool(first)}
    assert len(pool) == 8
    used = tmp_path / "used.txt"
    used.write_text(sorted(pool)[0] + "\n")
    args = [
        "curate",
        "--select-from",
        str(first),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "r1"),
        "--exclude",
        str(used),
        "select.budgets.reasoning.samples=3",
    ]
    assert main(args) == 0
    chosen = read_dataset(tmp_path / "r1")
    assert len(chosen) == 3 and {r.id for r in chosen} <= pool - {sorted(pool)[0]}
    ifd = [r.meta["ifd"] for r in chosen]
    assert ifd == sorted(ifd, reverse=True) and all(x < 1.0 for x in ifd)


def test_model_loss_joins_the_difficulty(tmp_path, tiny_model_dir):
    from qwythos.curate import read_dataset
    from qwythos.curate.run import curate
    from unit.curate.curate_data import math_rows, write_jsonl

    data = write_jsonl(tmp_path / "m.jsonl", math_rows(6))
    fast = [
        "executor.workers=1",
        "select.embed.model=hashing",
        "label.embed.model=hashing",
        "output.plots=false",
    ]
    out = curate(inputs=[data], out=tmp_path / "o", overrides=[*fast, f"difficulty.model={tiny_model_dir}"])
    records = read_dataset(out)
    assert len(records) == 6 and all(r.meta["model_loss"] > 0 for r in records)
