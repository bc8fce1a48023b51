"""End to end on small fixtures (in this process): the dataset folder, its manifest, rejects and errors."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from qwythos.config import ConfigError
from qwythos.curate import read_dataset, read_pool
from qwythos.curate.ngrams import words
from qwythos.curate.run import curate
from unit.curate.curate_data import math_rows, story_rows, write_csv, write_jsonl, write_parquet

FAST = [
    "executor.workers=1",
    "label.embed.model=hashing",
    "select.embed.model=hashing",
    "read.chunk_size=7",
    "output.shard_size=10",
    "output.plots=false",
]
EVAL_Q = "Mira collects 48 shells on Monday and twice as many on Tuesday. How many shells does she have now?"


@pytest.fixture()
def inputs(tmp_path):
    math = math_rows(30)
    math[5] = dict(math[2])  # exact duplicate (prompt and response)
    math[6] = {"question": EVAL_Q, "answer": "48 * 2 = 96, 48 + 96 = 144\n#### 144"}  # leaked eval question
    math[7] = {"question": "How many legs do 3 cats have?", "answer": "3 * 4 = 12 legs."}  # no '#### N'
    stories = story_rows(20)
    near = dict(stories[0])
    prompt, text = (m["content"] for m in stories[0]["messages"])
    near["messages"] = [
        {"role": "user", "content": prompt[:-1] + "!"},
        {"role": "assistant", "content": text + " Yes."},
    ]
    stories.append(near)  # near duplicate of story 0
    stories.append(
        {
            "messages": [
                {"role": "user", "content": "Help me."},
                {"role": "assistant", "content": "As an AI language model, I cannot help."},
            ]
        }
    )
    files = [
        write_csv(tmp_path / "in" / "math.csv", math),
        write_parquet(tmp_path / "in" / "stories.parquet", stories),
        write_jsonl(tmp_path / "in" / "dolly.jsonl", [{"instruction": "x", "response": 5}, "{broken"]),
    ]
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"question": EVAL_Q, "answer": "#### 144"}])
    return files, evals, len(math) + len(stories) + 2


def test_curate_end_to_end(tmp_path, inputs):
    files, evals, total = inputs
    out = curate(
        inputs=files,
        out=tmp_path / "out",
        decontaminate=[evals],
        overrides=FAST + ["select.budgets.reasoning.samples=20", "curriculum.order=easy_to_hard"],
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"]["read"]["in"] == total
    data, pool = read_dataset(out), read_pool(out)
    rejects = pq.read_table(out / "rejects").to_pylist()
    # nothing is lost: every input row is selected, pooled or rejected, exactly once
    ids = [r.id for r in data] + [r.id for r in pool] + [j["id"] for j in rejects]
    assert len(ids) == len(set(ids)) == total
    why = {j["id"]: j for j in rejects}
    assert why["math/5"]["reason"] == "exact_dup_prompt" and why["math/5"]["evidence"] == "math/2"
    ev = json.loads(why["math/6"]["evidence"])
    assert why["math/6"]["reason"] == "contaminated_prompt" and ev["eval"] == "eval/0"
    assert ev["ngram"] == " ".join(words(EVAL_Q)[:13])  # the first matching 13 words
    assert why["math/7"]["reason"] == "no_final_answer"
    assert (
        why["stories/21"]["reason"] == "refusal"
        and "As an AI language model" in why["stories/21"]["evidence"]
    )
    assert (
        why["stories/20"]["reason"] == "near_dup"
        and json.loads(why["stories/20"]["evidence"])["match"] == "stories/0"
    )
    assert why["dolly/0"]["reason"] == "bad_type" and why["dolly/1"]["reason"] == "bad_json"
    # budgets, labels, curriculum order
    assert sum(r.pathway == "reasoning" for r in data) == 20
    assert {r.pathway for r in data} == {"reasoning", "narrative"}
    assert [r.meta["order"] for r in data] == list(range(len(data)))
    assert all(a.meta["difficulty"] <= b.meta["difficulty"] for a, b in zip(data, data[1:], strict=False))
    assert manifest["pathways"]["reasoning"] == {
        "samples": 20,
        "tokens": sum(r.meta["tokens"] for r in data if r.pathway == "reasoning"),
    }
    assert len(manifest["shards"]["data"]) == -(-len(data) // 10)  # shard_size 10
    for reason, n in manifest["rejected"]["quality"].items():
        assert sum(j["reason"] == reason for j in rejects) == n
    assert (out / "card.md").read_text().startswith("# Curated dataset")
    assert not (out / ".work").exists()
    # the same command again: already done, nothing rewritten
    mtime = (out / "manifest.json").stat().st_mtime_ns
    curate(
        inputs=files,
        out=out,
        decontaminate=[evals],
        overrides=FAST + ["select.budgets.reasoning.samples=20", "curriculum.order=easy_to_hard"],
    )
    assert (out / "manifest.json").stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match="finished dataset"):
        curate(inputs=files, out=out, overrides=FAST)
    # same config, an input rewritten since: never the stale dataset
    files[0].write_text(files[0].read_text() + files[0].read_text().splitlines()[1] + "\n")
    with pytest.raises(FileExistsError, match=re.escape(f"earlier contents of {files[0]}")):
        curate(
            inputs=files,
            out=out,
            decontaminate=[evals],
            overrides=FAST + ["select.budgets.reasoning.samples=20", "curriculum.order=easy_to_hard"],
        )


def test_dedup_against_an_existing_core(tmp_path, inputs):
    files, _, _ = inputs
    core = curate(inputs=files[:1], out=tmp_path / "core", overrides=FAST)
    kept = {r.id for r in read_dataset(core)}
    out = curate(inputs=files, out=tmp_path / "new", overrides=FAST + [f"dedup.core=[{core}]"])
    rejects = {j["id"]: j for j in pq.read_table(out / "rejects").to_pylist()}
    assert all(rejects[i]["reason"] == "exact_dup_prompt_core" for i in kept)
    assert rejects["math/0"]["evidence"] == "core:math/0"
    assert not {r.id for r in read_dataset(out)} & kept


def test_plots_and_card(tmp_path, inputs):
    files, _, _ = inputs
    out = curate(inputs=files[:2], out=tmp_path / "o", overrides=FAST[:-1])
    assert {p.name for p in (out / "plots").iterdir()} == {
        "lengths.png",
        "pathways.png",
        "difficulty.png",
        "rejects.png",
    }
    assert "![difficulty](plots/difficulty.png)" in (out / "card.md").read_text()


def test_clear_errors(tmp_path, inputs):
    files, _, _ = inputs
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['tau_typo'\]"):
        curate(inputs=files, out=tmp_path / "a", overrides=["select.tau_typo=1"])
    with pytest.raises(ConfigError, match="no inputs"):
        curate(inputs=[], out=tmp_path / "b")
    with pytest.raises(ValueError, match="not a curated dataset"):
        read_dataset(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        curate(inputs=files, out=tmp_path / "full", overrides=FAST)


def test_cli_curate(tmp_path, inputs, capsys):
    from qwythos.cli import main

    files, _, _ = inputs
    args = ["curate", "--input", str(files[0]), "--out", str(tmp_path / "c"), *FAST]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c")
    assert main(["curate", "--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "d")]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err


def test_skeleton_cap_keeps_a_few_instances_of_each_template(tmp_path, inputs):
    """math_rows cycles a few templates with fresh numbers and names: MinHash keeps every instance, the
    skeleton cap (numbers and names masked) keeps max_per_skeleton of each and names the template's first."""
    from qwythos.curate.normalise import skeleton

    files, _, _ = inputs
    plain = curate(inputs=files[:1], out=tmp_path / "plain", overrides=FAST)
    math = [r for r in read_dataset(plain)]
    templates = {skeleton(r.prompt) for r in math}
    assert len(templates) < len(math)  # instances of a template survive exact and near dedup
    for cap in (1, 2):
        out = curate(
            inputs=files[:1],
            out=tmp_path / f"cap{cap}",
            overrides=FAST + ["dedup.skeleton.enabled=true", f"dedup.skeleton.max_per_skeleton={cap}"],
        )
        kept = read_dataset(out)
        per = {}
        for r in kept:
            per[skeleton(r.prompt)] = per.get(skeleton(r.prompt), 0) + 1
        assert set(per) == templates and all(
            n == min(cap, sum(skeleton(m.prompt) == s for m in math)) for s, n in per.items()
        )
        rejects = [j for j in pq.read_table(out / "rejects").to_pylist() if j["reason"] == "skeleton_cap"]
        assert len(rejects) == len(math) - len(kept)
        first: dict[str, str] = {}
        for r in sorted(math, key=lambda r: int(r.id.split("/")[1])):
            first.setdefault(skeleton(r.prompt), r.id)
        by_id = {r.id: r for r in math}
        assert all(j["evidence"] == first[skeleton(by_id[j["id"]].prompt)] for j in rejects)


def test_skeletons_mask_numbers_and_names():
    from qwythos.curate.normalise import skeleton

    assert skeleton("Tom has 3 apples and buys 4.5 more.") == skeleton(
        "Ana has 12 apples and buys 1,000 more."
    )
    assert skeleton("Tom has 3 apples.") != skeleton("Tom has 3 pears.")
    assert skeleton("  ") == ""
