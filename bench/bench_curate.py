"""Curation step throughput (docs/s) on generated 300-word docs, each against a baseline in the same run.

    near dedup, end to end (shingles -> MinHash -> LSH -> keep-first): ours (rensa signatures over hashed word
        5-grams, our banding) vs datasketch (MinHash.update_batch on string shingles + MinHashLSH)
    exact dedup (normalise key -> xxh3 -> keep-first on prompt and response): ours vs hashlib.sha256 + set
    decontamination (13-gram overlap with ~1.3k GSM8K-sized eval items): ours (vectorised n-gram hashes +
        searchsorted) vs a naive tuple-of-words 13-gram set lookup
One process, one core each (the pipeline runs the map-side parts in parallel workers). Median of --repeats.
Run: .venv/bin/python bench/bench_curate.py [--docs 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from qwythos.curate.config import NearDedupConfig  # noqa: E402
from qwythos.curate.decontam import EvalIndex  # noqa: E402
from qwythos.curate.dedup import ExactDedup, NearDedup, signatures, text_hash  # noqa: E402
from qwythos.curate.ngrams import words  # noqa: E402
from qwythos.curate.normalise import dedup_key  # noqa: E402
from qwythos.records import Record  # noqa: E402


def make_docs(n: int, seed: int = 0) -> list[str]:
    """300-word docs, 20k-word vocabulary; every 10th is a near copy of an original (3 words changed)."""
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        for _ in range(20000)
    ]
    docs: list[str] = []
    for i in range(n):
        if i % 10 == 9:
            w = docs[rng.randrange(i // 10 + 1) * 10].split()  # an original, never a copy
            for _ in range(3):
                w[rng.randrange(300)] = rng.choice(vocab)
            docs.append(" ".join(w))
        else:
            docs.append(" ".join(rng.choice(vocab) for _ in range(300)).capitalize() + ".")
    return docs


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def near_ours(docs: list[str]) -> set[int]:
    cfg = NearDedupConfig(threshold=0.8, num_perm=128)
    index = NearDedup(cfg)
    dups = set()
    for lo in range(0, len(docs), 4096):
        batch = docs[lo : lo + 4096]
        hits = index.add(signatures(batch, cfg), [str(i) for i in range(lo, lo + len(batch))])
        dups |= {lo + k for k, h in enumerate(hits) if h is not None}
    return dups


def near_datasketch(docs: list[str]) -> set[int]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    kept, dups = {}, set()
    for i, doc in enumerate(docs):
        w = words(doc)
        m = MinHash(num_perm=128)
        m.update_batch([" ".join(w[k : k + 5]).encode() for k in range(len(w) - 4)])
        if any(kept[c].jaccard(m) >= 0.8 for c in lsh.query(m)):
            dups.add(i)
        else:
            lsh.insert(str(i), m)
            kept[str(i)] = m
    return dups


def exact_ours(pairs: list[tuple[str, str]]) -> set[int]:
    d = ExactDedup()
    return {i for i, (p, r) in enumerate(pairs) if d.check(str(i), text_hash(p), text_hash(r)) is not None}


def exact_baseline(pairs: list[tuple[str, str]]) -> set[int]:
    seen_p, seen_r, dups = set(), set(), set()
    for i, (p, r) in enumerate(pairs):
        hp = hashlib.sha256(dedup_key(p).encode()).digest()
        hr = hashlib.sha256(dedup_key(r).encode()).digest()
        if hp in seen_p or hr in seen_r:
            dups.add(i)
        else:
            seen_p.add(hp)
            seen_r.add(hr)
    return dups


def eval_set(rng: random.Random, docs: list[str], n: int = 1319) -> list[Record]:
    """GSM8K-test-sized eval items: random 45-word questions, 20 of them copied from the docs (leaks)."""
    out = []
    for i in range(n):
        if i < 20:
            w = docs[i * 37].split()
            q = " ".join(w[100:145])
        else:
            q = " ".join(rng.choice(docs).split()[rng.randrange(250) :][:45][::-1])
        out.append(
            Record(
                f"eval/{i}",
                "eval",
                [{"role": "user", "content": q}, {"role": "assistant", "content": "#### 1"}],
            )
        )
    return out


def decontam_naive(evals: list[Record], docs: list[str], n: int = 13) -> set[int]:
    grams = set()
    for r in evals:
        w = words(r.prompt)
        grams.update(tuple(w[k : k + n]) for k in range(len(w) - n + 1))
    hits = set()
    for i, d in enumerate(docs):
        w = words(d)
        if any(tuple(w[k : k + n]) in grams for k in range(len(w) - n + 1)):
            hits.add(i)
    return hits


def decontam_ours(index: EvalIndex, docs: list[str]) -> set[int]:
    found = [x is not None for lo in range(0, len(docs), 4096) for x in index.find(docs[lo : lo + 4096])]
    return {i for i, f in enumerate(found) if f}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--baseline-docs", type=int, default=3000, help="the slow baselines see only these docs")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    docs = make_docs(a.docs)
    pairs = [(" ".join(d.split()[:30]), d) for d in docs]
    evals = eval_set(random.Random(1), docs)
    index = EvalIndex.build(evals, 13)
    rows = []

    def row(name: str, ours_fn, base_fn, n_base: int, base_name: str) -> None:
        t_ours, found = timed(lambda: ours_fn(docs), a.repeats)
        t_base, base_found = timed(lambda: base_fn(docs[:n_base]), a.repeats)
        shared = {i for i in found if i < n_base}  # decisions on the docs both saw
        rows.append(
            (
                name,
                len(docs) / t_ours,
                base_name,
                n_base / t_base,
                len(shared),
                len(base_found),
                len(shared & base_found),
            )
        )

    row("near dedup (end to end)", near_ours, near_datasketch, a.baseline_docs, "datasketch MinHash+LSH")
    row(
        "exact dedup (prompt+response)",
        lambda d: exact_ours(pairs[: len(d)]),
        lambda d: exact_baseline(pairs[: len(d)]),
        len(docs),
        "sha256 + set",
    )
    row(
        "decontamination (13-gram)",
        lambda d: decontam_ours(index, d),
        lambda d: decontam_naive(evals, d),
        a.baseline_docs,
        "naive 13-gram set",
    )
    print(
        f"{len(docs)} docs of 300 words (slow baselines on the first {a.baseline_docs}), "
        f"median of {a.repeats}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, one process"
    )
    print(
        "| step | ours docs/s | baseline | baseline docs/s | ratio "
        "| flagged on shared docs: ours, baseline, both |"
    )
    print("|---|---|---|---|---|---|")
    for name, ro, base_name, rb, fo, fb, both in rows:
        print(f"| {name} | {ro:,.0f} | {base_name} | {rb:,.0f} | {ro / rb:.1f}x | {fo}, {fb}, {both} |")
    print(f"(near copies planted in the shared docs: {a.baseline_docs // 10}; LSH misses a few, at random)")


if __name__ == "__main__":
    main()
