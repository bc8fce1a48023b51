"""Paired statistics pinned against scipy (exact binomial McNemar) and a hand-made case."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest

from qwythos.eval import stats
from qwythos.eval.report import _paired_rows


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = list(rng.random(60) < 0.5), list(rng.random(60) < 0.3)
        got = stats.mcnemar(a, b)
        n = got["a_only"] + got["b_only"]
        assert got["a_only"] == sum(x and not y for x, y in zip(a, b, strict=True))
        assert math.isclose(got["p"], binomtest(got["a_only"], n, 0.5).pvalue, rel_tol=1e-9)
    assert stats.mcnemar([True, False], [True, False]) == {"a_only": 0, "b_only": 0, "p": 1.0}


def test_paired_accuracy_and_nll_intervals():
    a = {f"q{i}": i < 18 for i in range(60)}  # 18 / 60 right
    b = {f"q{i}": False for i in range(60)}
    r = stats.paired_accuracy(a, b)
    assert r["n"] == 60 and math.isclose(r["diff"], 0.3) and r["a_only"] == 18 and r["p"] < 1e-4
    lo, hi = r["ci"]
    assert 0.15 < lo < 0.3 < hi < 0.45  # ~±12 points at n = 60
    same = stats.paired_accuracy(a, a)
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0] and same["p"] == 1.0
    nll_a = {f"s{i}": 1.0 + 0.01 * (i % 5) for i in range(100)}
    nll_b = {k: v - 0.05 for k, v in nll_a.items()}  # A is worse by 0.05 nats on every record
    r = stats.paired_nll(nll_a, nll_b)
    assert math.isclose(r["diff_nll"], 0.05) and math.isclose(r["ppl_change"], math.expm1(0.05))
    assert math.isclose(r["ci_nll"][0], 0.05) and math.isclose(r["ci_nll"][1], 0.05)
    assert stats.paired_nll(nll_a, {}) is None  # nothing in common: nothing claimed


def test_compare_reads_per_item_results_and_the_report_shows_them():
    per_item = {
        "base": {"correct": {"gsm": {"a": False, "b": False}}, "nll": {"narrative": {"x": 2.0}}},
        "reasoning_only": {"correct": {"gsm": {"a": True, "b": False}}, "nll": {"narrative": {"x": 2.1}}},
    }
    (row,) = stats.compare(per_item)  # the only pair present
    assert (row["a"], row["b"]) == ("reasoning_only", "base")
    assert row["gsm"]["diff"] == 0.5 and math.isclose(row["narrative_nll"]["diff_nll"], 0.1)
    head, rows = _paired_rows({"paired": [row]})
    assert rows[0][:4] == ["reasoning_only − base", "gsm accuracy", "2", "+50.0 pts"]
    assert rows[1][1] == "narrative perplexity" and rows[1][3] == "+10.5 %"
