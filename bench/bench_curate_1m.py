"""The whole curation pipeline on a generated 1M-sample Dolly-sized set: wall time and peak memory.

Generates N Dolly-15k-shaped rows (instruction ~70 chars, context on ~30% ~360 chars, response ~360 chars,
Dolly's 8 categories; ~3% exact and ~3% near duplicates, ~1% refusals, ~1% GSM8K-style math rows), runs
`qwythos curate` on it in a child process (config: configs/curate-bench-1m.yaml) and samples the summed RSS
of the process tree every 0.5 s. Baseline in the same run: datasketch MinHash+LSH near dedup timed on a
sample of the same rows, extrapolated to N.
Run: nice -n 10 .venv/bin/python bench/bench_curate_1m.py [--rows 1000000] [--work /tmp/curate-1m]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = [
    "open_qa",
    "general_qa",
    "classification",
    "closed_qa",
    "brainstorming",
    "information_extraction",
    "summarization",
    "creative_writing",
]
FUNCTION = "the a of and to in is that it was for on with as by at from this be or are an which".split()


def make_vocab(rng: random.Random, n: int = 8000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "dor", "an", "qui", "bar", "sel", "mon", "tri"]
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def sentence(rng: random.Random, vocab: list[str], words: int) -> str:
    out = []
    for i in range(words):
        out.append(rng.choice(FUNCTION) if i % 3 == 1 else rng.choice(vocab))
    return " ".join(out).capitalize() + "."


def paragraph(rng: random.Random, vocab: list[str], chars: int) -> str:
    text = ""
    while len(text) < chars:
        text += sentence(rng, vocab, rng.randint(8, 18)) + " "
    return text.strip()


def make_rows(n: int, path: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocab = make_vocab(rng)
    recent: list[dict] = []
    with open(path, "w") as f:
        for _ in range(n):
            u = rng.random()
            if u < 0.03 and recent:  # exact duplicate
                row = dict(rng.choice(recent))
            elif u < 0.06 and recent:  # near duplicate: one word of the response changed
                row = dict(rng.choice(recent))
                w = row["response"].split()
                w[rng.randrange(len(w))] = rng.choice(vocab)
                row["response"] = " ".join(w)
                row["instruction"] = row["instruction"] + " " + rng.choice(vocab)
            elif u < 0.07:
                row = {
                    "instruction": paragraph(rng, vocab, 60),
                    "context": "",
                    "category": "general_qa",
                    "response": "As an AI language model, I cannot help with that request.",
                }
            elif u < 0.08:
                a, b = rng.randint(2, 500), rng.randint(2, 500)
                row = {
                    "instruction": f"A farmer has {a} sheep and buys {b} more. How many sheep are there?",
                    "context": "",
                    "category": "open_qa",
                    "response": f"The farmer has {a} + {b} = {a + b} sheep.\n#### {a + b}",
                }
            else:
                cat = rng.choice(CATEGORIES)
                has_context = (
                    cat in ("closed_qa", "information_extraction", "summarization") or rng.random() < 0.1
                )
                row = {
                    "instruction": paragraph(rng, vocab, rng.randint(30, 110)),
                    "context": paragraph(rng, vocab, rng.randint(150, 600)) if has_context else "",
                    "category": cat,
                    "response": paragraph(rng, vocab, rng.randint(80, 700)),
                }
            f.write(json.dumps(row) + "\n")
            recent.append(row)
            if len(recent) > 2000:
                recent.pop(rng.randrange(len(recent)))


def datasketch_rate(path: Path, sample: int) -> float:
    from datasketch import MinHash, MinHashLSH

    from qwythos.curate.ngrams import words

    texts = []
    with open(path) as f:
        for _, line in zip(range(sample), f, strict=False):
            r = json.loads(line)
            texts.append(f"{r['instruction']}\n{r['context']}\n{r['response']}")
    t = time.perf_counter()
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    for i, text in enumerate(texts):
        w = words(text)
        m = MinHash(num_perm=128)
        m.update_batch([" ".join(w[k : k + 5]).encode() for k in range(max(1, len(w) - 4))])
        if not lsh.query(m):
            lsh.insert(str(i), m)
    return sample / (time.perf_counter() - t)


def run_and_watch(cmd: list[str], env: dict) -> tuple[int, float, float, str]:
    """(return code, wall seconds, peak summed RSS of the process tree in GiB, stderr tail)."""
    t = time.perf_counter()
    log = open(Path(cmd[cmd.index("--out") + 1]).with_suffix(".log"), "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.5)
    log.close()
    tail = Path(log.name).read_text()[-3000:]
    return proc.returncode, time.perf_counter() - t, peak / 2**30, tail


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/curate-1m"))
    ap.add_argument("--baseline-sample", type=int, default=5000)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    data = a.work / f"dolly-like-{a.rows}.jsonl"
    if not data.is_file():
        t = time.perf_counter()
        make_rows(a.rows, data)
        print(
            f"generated {a.rows} rows ({data.stat().st_size / 2**20:.0f} MiB) "
            f"in {time.perf_counter() - t:.0f}s"
        )
    out = a.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "qwythos.cli",
        "curate",
        "--input",
        str(data),
        "--out",
        str(out),
        "--config",
        str(ROOT / "configs" / "curate-bench-1m.yaml"),
    ]
    rc, wall, peak, tail = run_and_watch(cmd, env)
    if rc != 0:
        raise SystemExit(f"curate failed ({rc}):\n{tail}")
    m = json.loads((out / "manifest.json").read_text())
    ds = datasketch_rate(data, a.baseline_sample)
    print(
        "| rows | wall | rows/s | peak RSS (process tree) | selected "
        "| datasketch near dedup alone, extrapolated |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {a.rows:,} | {wall / 60:.1f} min | {a.rows / wall:,.0f} | {peak:.2f} GiB | {m['selected']:,} "
        f"| {a.rows / ds / 60:.1f} min ({ds:,.0f} docs/s; our whole pipeline runs at "
        f"{a.rows / wall / ds:.1f}x that rate) |"
    )
    print("steps (s):", json.dumps(m["timings_s"]))
    print("counts:", json.dumps(m["steps"]))
    print("pathways:", json.dumps(m["pathways"]))


if __name__ == "__main__":
    main()
