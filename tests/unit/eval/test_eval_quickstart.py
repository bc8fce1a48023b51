"""The quickstart's eval step on a tiny finished run: it evaluates into RUN/eval, prints the headline table,
and a second quickstart skips the finished evaluation like the other steps skip finished work."""

from __future__ import annotations

import json
import shutil

import yaml

from qwythos import quickstart as qs
from qwythos.eval import api
from qwythos.eval import data as evdata
from qwythos.eval.data import REPO
from qwythos.model.api import export_model


def test_quickstart_evaluates_once_and_prints_the_headline(tiny_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "qs"
    (out / "data").mkdir(parents=True)
    (out / "data" / "manifest.json").write_text("{}")  # curate: done
    shutil.copytree(tiny_run / "model", out / "run" / "model")  # train: done (no dense baseline here)
    shutil.copy(tiny_run / "config.yaml", out / "run" / "config.yaml")
    export_model(out / "run" / "model", out / "mixtral", mode="soft")  # export: done
    monkeypatch.setattr(qs, "DEMO_PROMPTS", qs.DEMO_PROMPTS[:1])
    qs.quickstart(out, color=False, max_new_tokens=4)
    printed = capsys.readouterr().out
    results = json.loads((out / "run" / "eval" / "results.json").read_text())
    gsm = results["config"]["gsm"]
    assert (gsm["n"], gsm["generator"], gsm["seed"]) == (40, "leg_counting", 100000)
    assert results["config"]["consistency"]["systems"] == ["hybrid_soft"]
    assert "dense_lora" in results["missing"] and "| hybrid_soft |" in printed and "gsm_strict" in printed
    assert "gsm_*: 40 held-out reasoning_gym:leg_counting problems" in printed
    assert "paired on those problems" in printed and "reasoning_only − base:" in printed
    assert set(results["consistency"]["answers"]) == {"hybrid_soft"}
    engine_answers = results["consistency"]["engine_answers"]["hybrid_soft"]  # through the dialogue engine
    assert len(engine_answers) == len(results["consistency"]["answers"]["hybrid_soft"])
    assert results["systems"]["hybrid_soft"]["consistency_engine_persona"] is not None

    def no_rerun(*a, **k):
        raise AssertionError("a finished evaluation must not run again")

    monkeypatch.setattr(api, "evaluate", no_rerun)
    qs.quickstart(out, color=False, max_new_tokens=4)
    assert "| hybrid_soft |" in capsys.readouterr().out


def test_the_bare_folder_fallback_is_the_curate_presets_reasoning_input():
    """eval/data.py checks a bare model folder for overlap against the quickstart's training problems."""
    preset = yaml.safe_load((REPO / "configs" / "curate-quickstart.yaml").read_text())["inputs"][0]
    q = evdata.QUICKSTART_REASONING
    assert preset["generator"] == f"reasoning_gym:{q['generator']}"
    assert (preset["args"], preset["size"], preset["seed"]) == (q["args"], q["size"], q["seed"])
    evaluated = dict(o.split("=", 1) for o in qs.EVAL_OVERRIDES)
    assert evaluated["gsm.generator"] == q["generator"] and int(evaluated["gsm.seed"]) > q["seed"] + q["size"]
    assert {k: int(evaluated[f"gsm.args.{k}"]) for k in q["args"]} == q["args"]
