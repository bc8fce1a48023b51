"""`qwythos eval` on a tiny trained run: results.json's shape, held-out data, robustness, report, compare."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import pytest

from qwythos.dataset import load_records
from qwythos.eval.api import compare, evaluate
from qwythos.eval.config import SYSTEMS
from qwythos.eval.report import fmt

from .conftest import LEAKED_GSM, LEAKED_STORIES, QUICK

HEADLINE = ("gsm_strict", "gsm_flexible", "distinct_2", "self_bleu", "switches_per_100")


def test_results_have_every_system_and_the_headline_metrics(evaluated):
    results, out = evaluated
    assert list(results["systems"]) == list(SYSTEMS) and results["missing"] == {}
    on_disk = json.loads((out / "results.json").read_text())
    assert list(on_disk["systems"]) == list(SYSTEMS)
    for name, m in on_disk["systems"].items():
        assert set(HEADLINE) <= set(m), name
        assert 0 <= m["gsm_strict"] <= 1 and 0 <= m["gsm_flexible"] <= 1
        assert 0 < m["distinct_2"] <= 1 and 0 <= m["self_bleu"] <= 1
        assert m["gsm_n"] == 2 and m["narrative_n"] == 2  # --limit 2
        assert m["narrative_ppl"] > 1
    for name in ("hybrid_soft", "hybrid_top1"):  # a learned gate: switches and gate accuracy
        m = on_disk["systems"][name]
        assert m["switches_per_100"] >= 0 and 0 <= m["gate_acc_domain"] <= 1
        assert set(on_disk["gear"][name]["usage_by_domain"]) >= {"reasoning", "narrative"}
    for name in ("base", "dense_lora", "reasoning_only", "narrative_only"):  # no gate to switch
        assert on_disk["systems"][name]["switches_per_100"] is None
    assert {"model", "run_config", "dense_lora", "eval_config", "gsm_heldout", "dataset"} <= set(
        on_disk["hashes"]
    )
    assert on_disk["config"]["limit"] == 2 and on_disk["config"]["gsm"]["max_new_tokens"] == 24
    for f in ("report.md", "report.html", "samples.jsonl", "heldout_gsm.jsonl", "plots/tradeoff.png"):
        assert (out / f).is_file(), f
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["system"] for s in samples} == set(SYSTEMS)
    for name in SYSTEMS:  # per item, so systems can be compared pairwise
        per = on_disk["per_item"][name]
        assert len(per["correct"]["gsm"]) == 2
        assert sum(per["correct"]["gsm"].values()) / 2 == on_disk["systems"][name]["gsm_strict"]
        nll = per["nll"]["narrative"]
        assert nll and all(v > 0 for v in nll.values())
        lo, hi = min(nll.values()), max(nll.values())  # the token-weighted ppl lies among the records'
        assert math.exp(lo) - 1e-6 <= on_disk["systems"][name]["narrative_ppl"] <= math.exp(hi) + 1e-6
    pairs = {(r["a"], r["b"]) for r in on_disk["paired"]}
    assert ("reasoning_only", "base") in pairs and ("hybrid_soft", "dense_lora") in pairs
    assert "Paired differences" in (out / "report.md").read_text()


def test_systems_really_differ_where_they_should(evaluated):
    """The base zeroes the LoRAs, the forced systems use one pathway: their held-out perplexities differ,
    and the base (exactly the base model) is the same whichever pathway it is forced onto."""
    s = evaluated[0]["systems"]
    ppl = {name: s[name]["narrative_ppl"] for name in SYSTEMS}
    assert len({round(v, 6) for v in ppl.values()}) >= 4, ppl


def test_heldout_data_does_not_overlap_the_training_set(evaluated, train_data):
    results, out = evaluated
    trained = load_records(train_data)
    questions = {r.messages[0]["content"] for r in trained}
    responses = {r.response for r in trained}
    heldout = [json.loads(x) for x in (out / "heldout_gsm.jsonl").read_text().splitlines()]
    assert heldout and not {h["question"] for h in heldout} & questions
    gsm = results["data"]["gsm"]
    assert gsm["overlap_dropped"] == LEAKED_GSM  # the first problems of the eval seed were trained on
    narrative = results["data"]["narrative"]
    assert narrative["source_held_out"] == narrative["source_records"] - LEAKED_STORIES
    assert "training set" in results["data"]["overlap_checked_against"]
    from qwythos.eval import data as evdata

    held, _ = evdata.heldout_records("auto", trained, 400, 4)
    assert held["narrative"] and not {r.response for r in held["narrative"]} & responses


def test_robustness_terminates_with_finite_gates(evaluated):
    results, _ = evaluated
    assert set(results["robustness"]) == {"hybrid_soft", "hybrid_top1"}
    for system, r in results["robustness"].items():
        cats = r["categories"]
        assert set(cats) == {
            "prompt_injection",
            "gibberish",
            "extreme_length",
            "other_languages",
            "contradictory",
        }
        assert r["robust_ok"] is True, system
        for c in cats.values():
            assert c["gates_finite"] is True and c["terminated"] == c["n"] and not c["errors"]
        long = cats["extreme_length"]
        assert long["truncated"] == 1 and long["prompt_tokens"][0] > 256  # cut to fit, not crashed
        assert abs(sum(long["usage"].values()) - 1) < 1e-3


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [(tag, k, v or "") for k, v in attrs if k in ("src", "href", "srcset", "data")]


def test_report_html_is_self_contained(evaluated):
    _, out = evaluated
    page = (out / "report.html").read_text()
    parser = _Refs()
    parser.feed(page)
    images = [v for tag, k, v in parser.refs if tag == "img"]
    assert len(images) >= 4 and all(v.startswith("data:image/png;base64,") for v in images)
    assert all(not v.startswith(("http:", "https:", "//")) for _, _, v in parser.refs)
    style = page[page.index("<style>") : page.index("</style>")]
    assert "<script" not in page.lower() and "@import" not in style and "url(" not in style
    for name in SYSTEMS:
        assert f"<td>{name}</td>" in page
    md = (out / "report.md").read_text()
    assert "| hybrid_soft |" in md and "plots/tradeoff.png" in md


def test_compare_two_evaluations_side_by_side(evaluated, tiny_run, tmp_path):
    results, _ = evaluated
    other = evaluate(tiny_run, tmp_path / "b", limit=1, overrides=[*QUICK, "systems=[hybrid_soft,base]"])
    assert list(other["systems"]) == ["base", "hybrid_soft"]
    out = compare([tiny_run, tmp_path / "b"], tmp_path / "cmp")
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "B - A" in md and "A: run" in md and "B: b" in md
    row = next(line for line in md.splitlines() if line.startswith("| hybrid_soft | narrative_ppl |"))
    a = results["systems"]["hybrid_soft"]["narrative_ppl"]
    b = other["systems"]["hybrid_soft"]["narrative_ppl"]
    assert [c.strip() for c in row.split("|")[3:6]] == [fmt(a), fmt(b), fmt(b - a)]
    assert "dense_lora" in md  # systems only one side has still show
    assert "different GSM problems" in md  # --limit 2 vs 1: the held-out sets differ, and it says so
    same = compare([tiny_run, tiny_run / "eval"])["markdown"]
    assert "Warning" not in same  # the same held-out sets: no warning
    assert "A: run" in same and "B: eval" in same
    # paired across evaluations, system by system: the same evaluation twice differs by exactly 0
    across = [line for line in same.splitlines() if line.startswith("| hybrid_soft (B) − hybrid_soft (A) |")]
    assert any("gsm accuracy" in line and "+0.0 pts" in line for line in across), across
    assert any("perplexity" in line and "+0.0 %" in line for line in across), across
    twins = compare([tiny_run / "eval", tmp_path / "b", tiny_run / "eval"])["markdown"]  # same folder names
    assert "A: run/eval" in twins and "C: run/eval" in twins and "B - A" not in twins
    assert out["html"].startswith("<!DOCTYPE html>")
    with pytest.raises(ValueError, match="at least two"):
        compare([tiny_run])
    with pytest.raises(FileNotFoundError, match="qwythos eval"):
        compare([tiny_run, tmp_path / "nothing"])


def test_an_exported_mixtral_scores_like_the_native_model(tiny_run, tmp_path):
    from qwythos.model.api import export_model

    export_model(tiny_run / "model", tmp_path / "mx", mode="soft")
    over = [*QUICK, "systems=[base,hybrid_soft]", "consistency.enabled=false", "robustness.enabled=false"]
    native = evaluate(tiny_run / "model", tmp_path / "a", limit=1, overrides=over)
    mixtral = evaluate(tmp_path / "mx", tmp_path / "b", limit=1, overrides=over)
    assert list(native["systems"]) == ["base", "hybrid_soft"] and list(mixtral["systems"]) == ["hybrid_soft"]
    assert "no separate base" in mixtral["missing"]["base"]
    a, b = native["systems"]["hybrid_soft"], mixtral["systems"]["hybrid_soft"]
    for key in ("gsm_ppl", "narrative_ppl", "mixed_ppl", "gate_acc_domain"):
        assert b[key] == pytest.approx(a[key], rel=1e-3), key
