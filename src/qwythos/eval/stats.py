"""Paired comparisons between systems on the same held-out items, with 95 % intervals.

Every system answers the same problems and scores the same records, so differences are paired: per item,
system A's correctness (or NLL) minus system B's. Accuracies get the exact McNemar test on the discordant
pairs (b: A right and B wrong, c: the reverse; p = two-sided binomial at 1/2) and a paired-bootstrap CI of
the difference; per-record NLL (mean nats per response token) gets a paired-bootstrap CI of the mean
difference, reported as a relative perplexity change exp(mean) - 1. THESIS.md's verdicts read these.
"""

from __future__ import annotations

import math

import numpy as np

BOOTSTRAP = 2000
PAIRS = (  # (A, B): what the claim compares, read as "A minus B"
    ("reasoning_only", "base"),
    ("reasoning_only", "narrative_only"),
    ("hybrid_soft", "reasoning_only"),
    ("hybrid_top1", "reasoning_only"),
    ("hybrid_soft", "narrative_only"),
    ("hybrid_top1", "narrative_only"),
    ("hybrid_soft", "dense_lora"),
    ("hybrid_top1", "dense_lora"),
)


def mcnemar(a: list[bool], b: list[bool]) -> dict:
    """Exact McNemar test of paired accuracies: discordant counts and the two-sided p-value."""
    right_wrong = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    wrong_right = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n, k = right_wrong + wrong_right, min(right_wrong, wrong_right)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"a_only": right_wrong, "b_only": wrong_right, "p": p}


def bootstrap_ci(diff: np.ndarray, seed: int = 0, n: int = BOOTSTRAP) -> tuple[float, float]:
    """95 % percentile interval of the mean of paired differences."""
    if len(diff) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_accuracy(a: dict[str, bool], b: dict[str, bool], seed: int = 0) -> dict | None:
    keys = sorted(set(a) & set(b))
    if not keys:
        return None
    x = np.array([a[k] for k in keys], dtype=float)
    y = np.array([b[k] for k in keys], dtype=float)
    lo, hi = bootstrap_ci(x - y, seed)
    return {
        "n": len(keys),
        "diff": float((x - y).mean()),
        "ci": [lo, hi],
        **mcnemar(list(x > 0), list(y > 0)),
    }


def paired_nll(a: dict[str, float], b: dict[str, float], seed: int = 0) -> dict | None:
    keys = sorted(set(a) & set(b))
    if not keys:
        return None
    d = np.array([a[k] - b[k] for k in keys])
    lo, hi = bootstrap_ci(d, seed)
    return {
        "n": len(keys),
        "diff_nll": float(d.mean()),
        "ci_nll": [lo, hi],
        "ppl_change": math.expm1(float(d.mean())),
        "ppl_change_ci": [math.expm1(lo), math.expm1(hi)],
    }


def compare(per_item: dict[str, dict[str, dict]], pairs=PAIRS, seed: int = 0) -> list[dict]:
    """Each pair of systems present: paired accuracy on every task and paired NLL on every record kind."""
    rows = []
    for a, b in pairs:
        if a not in per_item or b not in per_item:
            continue
        row: dict = {"a": a, "b": b}
        for task, correct in per_item[a].get("correct", {}).items():
            row[task] = paired_accuracy(correct, per_item[b].get("correct", {}).get(task, {}), seed)
        for kind, nll in per_item[a].get("nll", {}).items():
            row[f"{kind}_nll"] = paired_nll(nll, per_item[b].get("nll", {}).get(kind, {}), seed)
        rows.append(row)
    return rows
