"""Rebuild the shipped seed set: synthesise with the embedded SmolLM2-135M, curate, write it with its card.

    .venv/bin/python data/seed/build.py [synth overrides, e.g. tasks.narrative=400]

1. `qwythos synth --config configs/synth-seed.yaml --out runs/synth-seed` (resumable: the SQLite request
   cache pays only for what is missing, so rerun after an interruption);
   `--reuse-synth` skips this step and uses the finished run as it is;
2. `qwythos curate --config configs/curate-seed.yaml` on its records into runs/synth-seed-curated (rebuilt);
3. the curated records, in order, into data/seed/seed.jsonl.gz (gzip mtime 0: same records, same bytes), and
   CARD.md from the synth report and the curation manifest.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import yaml

from qwythos.curate.dataset import read_dataset
from qwythos.curate.run import curate
from qwythos.synth.run import synth
from qwythos.text import distinct_n, self_bleu

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synth-out", type=Path, default=REPO / "runs" / "synth-seed")
    ap.add_argument(
        "--reuse-synth",
        action="store_true",
        help="curate and write the finished synth run in --synth-out as it is (no generation, no scoring)",
    )
    ap.add_argument("overrides", nargs="*", help="synth config overrides")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if a.reuse_synth:
        if not (a.synth_out / "report.json").is_file():
            raise SystemExit(f"--reuse-synth: {a.synth_out} holds no finished synth run (no report.json)")
        run = a.synth_out
    else:
        config = REPO / "configs" / "synth-seed.yaml"
        run = synth(out=a.synth_out, config=config, overrides=a.overrides).parent
    records_file = next(run.glob("records.jsonl*"))
    curated_out = a.synth_out.with_name(a.synth_out.name + "-curated")
    shutil.rmtree(curated_out, ignore_errors=True)  # derived from this synth run: always rebuilt
    curated = curate(inputs=[records_file], out=curated_out, config=REPO / "configs" / "curate-seed.yaml")
    records = [r.to_dict() for r in read_dataset(curated)]
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode()
    (HERE / "seed.jsonl.gz").write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    report = json.loads((run / "report.json").read_text())
    manifest = json.loads((curated / "manifest.json").read_text())
    teacher = yaml.safe_load((run / "config.yaml").read_text())["teacher"]
    (HERE / "CARD.md").write_text(card(report, manifest, records, teacher, a.overrides))
    print(f"{len(records)} records -> {HERE / 'seed.jsonl.gz'}")


def card(report: dict, manifest: dict, records: list[dict], teacher: dict, overrides: list[str]) -> str:
    replies = [m["content"] for r in records for m in r["messages"] if m["role"] == "assistant"]
    words = sorted(len(t.split()) for t in replies)
    kinds = Counter(r["meta"].get("kind", r["meta"].get("form", "?")) for r in records)
    pathways = Counter(r["pathway"] for r in records)
    curate_drops = {f"{step} {why}": n for step, r in manifest["rejected"].items() for why, n in r.items()}
    command = " ".join([".venv/bin/python data/seed/build.py", *overrides])
    lines = [
        "# Seed set: synthetic narrative, role-play and mixed samples",
        "",
        f"`seed.jsonl.gz`: **{len(records)} records** in OpenAI chat JSONL with `pathway`,",
        "`pathway_confidence`, `spans` (character offsets of the reasoning part of mixed samples) and `meta`",
        "(the generator's seed: genre, character, setting, style, the word to mention; a role-play's card).",
        "",
        "## How it was made",
        f"- Teacher: {report['teacher']} (the embedded SmolLM2-135M-Instruct), on CPU, one thread,"
        f" {teacher['batch_size']} rows decoded together (continuous batching), {teacher['dtype']} weights.",
        f"- Tasks: {report['tasks']} ({_fmt({k: v['tasks'] for k, v in report['by_kind'].items()})}).",
        f"- Best-of-n: {report['select']['n']} candidates per narrative part. The sums inside mixed samples",
        "  are the generator's own worked steps (`tasks.mixed_reasoning: worked`), verified like a teacher's",
        "  answer: in a first run the 135M teacher solved 5 of 40 mixed tasks' sums, so it only narrates.",
        f"- Accepted by synth: {report['accepted']} of {report['tasks']}; rejected: {report['rejected']}"
        f" ({_fmt(report['rejected_by_reason'])}).",
        f"- Candidate checks that failed (a task is rejected only when all its candidates fail): "
        f"{_fmt(report['candidates'])}.",
        f"- Teacher tokens: {report['tokens']['prompt']:,} prompt, {report['tokens']['completion']:,}"
        f" completion in {report['requests']['requests']:,} requests ({report['requests']['cached']:,} served"
        " from the request cache by the invocation that wrote this card, which ran"
        f" {report['wall_s'] / 60:.0f} min on a 2-core machine shared with other work).",
        f"- Curation (`configs/curate-seed.yaml`: exact and near dedup, quality filters, diversity τ 0.95):"
        f" {len(records)} of {report['accepted']} kept; dropped: {_fmt(curate_drops) or 'none'}.",
        "",
        "## What is in it",
        f"- By pathway: {_fmt(pathways)}; by kind: {_fmt(kinds)}.",
        f"- Assistant replies: {len(replies)}; words per reply: median {words[len(words) // 2]},"
        f" range {words[0]}–{words[-1]}.",
        f"- distinct-1 {distinct_n(replies, 1):.3f}, distinct-2 {distinct_n(replies, 2):.3f},"
        f" self-BLEU (first 100 replies) {self_bleu(replies[:100]):.3f}.",
        "",
        "## Weaknesses",
        "- A 135M teacher writes simple, often generic prose; the checks (length, repetition, distinct",
        "  bigrams, the required word, refusals, coherence under the teacher) drop the worst, not the bland.",
        "- It is what one shared CPU core generates in about 75 minutes. It exists so the quickstart trains a",
        "  narrative pathway on model-written text with no download; for a real model,",
        "  regenerate it with a stronger teacher through an OpenAI-compatible endpoint",
        "  (`teacher.base_url=... teacher.model=...`) and larger `tasks.*` counts.",
        "- The mixed samples' arithmetic is one or two template steps; their variety is in the narration.",
        "",
        "## Regenerate",
        "```bash",
        command,
        "```",
        "The synth step is resumable (SQLite request cache in `runs/synth-seed`); sampling is seeded, so a",
        "rerun on the same software gives the same records.",
        "",
        "License: same as the repository. The teacher is SmolLM2-135M-Instruct (Apache-2.0).",
        "",
    ]
    return "\n".join(lines)


def _fmt(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


if __name__ == "__main__":
    main()
