"""The quickstart's eval step on a tiny finished run: it evaluates into RUN/eval, prints the headline table,
and a second quickstart skips the finished evaluation like the other steps skip finished work."""

from __future__ import annotations

import json
import shutil

from qwythos import quickstart as qs
from qwythos.eval import api
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
    assert results["config"]["gsm"]["n"] == 8 and results["config"]["consistency"]["systems"] == [
        "hybrid_soft"
    ]
    assert "dense_lora" in results["missing"] and "| hybrid_soft |" in printed and "gsm_strict" in printed
    assert set(results["consistency"]["answers"]) == {"hybrid_soft"}

    def no_rerun(*a, **k):
        raise AssertionError("a finished evaluation must not run again")

    monkeypatch.setattr(api, "evaluate", no_rerun)
    qs.quickstart(out, color=False, max_new_tokens=4)
    assert "| hybrid_soft |" in capsys.readouterr().out
