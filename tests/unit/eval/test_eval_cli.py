"""`qwythos eval` through the CLI: a run end to end, --compare, and bad input as exit 2 with the fix named."""

from __future__ import annotations

import json

from qwythos.cli import main

from .conftest import QUICK


def test_cli_evaluates_a_model_folder_and_compares(tiny_run, evaluated, tmp_path, capsys):
    out = tmp_path / "ev"
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(
        json.dumps({"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "#### 7"})
    )
    argv = [
        "eval",
        str(tiny_run / "model"),
        "--out",
        str(out),
        "--limit",
        "1",
        *QUICK,
        "systems=[hybrid_top1]",
        f"gsm.file={gsm}",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| hybrid_top1 |" in printed and "report.html" in printed
    results = json.loads((out / "results.json").read_text())
    assert list(results["systems"]) == ["hybrid_top1"] and results["target"]["kind"] == "model"
    assert results["config"]["limit"] == 1
    assert results["data"]["gsm_file"]["n"] == 1, results["config"]["gsm"]
    assert results["systems"]["hybrid_top1"]["gsm_file_n"] == 1, sorted(results["systems"]["hybrid_top1"])
    # a bare model folder: overlap is checked against the quickstart preset, and the report says so
    assert "quickstart preset" in results["data"]["overlap_checked_against"]

    assert main(["eval", "--compare", str(tiny_run), str(out), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "| hybrid_top1 | gsm_strict |" in printed and "B - A" in printed
    assert (tmp_path / "cmp" / "compare.html").is_file()


def test_cli_bad_input_exits_2_naming_the_fix(tiny_run, tmp_path, capsys):
    def err(argv):
        assert main(["eval", *argv]) == 2
        return capsys.readouterr().err

    assert "does not exist" in err([str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    (tmp_path / "empty").mkdir()
    assert "neither a training run" in err([str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert "unknown key" in err([str(tiny_run), "--out", str(tmp_path / "o"), "gsm.colour=1"])
    assert "--out is required" in err([str(tiny_run)])
    assert "--limit" in err([str(tiny_run), "--out", str(tmp_path / "o"), "--limit", "0"])
    assert "does not exist" in err([str(tiny_run), "--out", str(tmp_path / "o"), "--config", "nope.yaml"])
    assert "looks like an override" in err(["gsm.n=3", "--out", str(tmp_path / "o")])
    assert "evaluations only" in err(["--compare", str(tiny_run), str(tiny_run), "--limit", "2"])
    assert "at least two" in err(["--compare", str(tiny_run)])
    assert "qwythos eval" in err(["--compare", str(tiny_run), str(tmp_path / "empty")])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    assert "choose a new folder" in err([str(tiny_run), "--out", str(tmp_path / "busy")])
    assert not (tmp_path / "o").exists()  # every error came before any output
