"""Fixture writers for the curation tests: a few rows in every supported schema, in JSONL, Parquet and CSV."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

MATH = [
    ("Tom has {a} apples and buys {b} more. How many apples does he have now?", "{a} + {b} = {c}\n#### {c}"),
    ("A box holds {a} pens. How many pens are in {b} boxes?", "{a} * {b} = {c}\n#### {c}"),
]

ROWS = {
    "dolly": [
        {
            "instruction": "What is the capital of France?",
            "context": "",
            "response": "The capital of France is Paris.",
            "category": "open_qa",
        },
        {
            "instruction": "Write a short story about a brave little boat.",
            "context": "",
            "response": "Once upon a time a little boat sailed into the storm. She was small but brave, "
            "and the lighthouse keeper smiled when she came home at dawn.",
            "category": "creative_writing",
        },
    ],
    "ultrachat": [
        {
            "prompt": "How do plants make food?",
            "prompt_id": "u1",
            "messages": [
                {"role": "user", "content": "How do plants make food?"},
                {
                    "role": "assistant",
                    "content": "Plants make food by photosynthesis: they turn light, "
                    "water and carbon dioxide into sugar and oxygen.",
                },
            ],
        },
    ],
    "alpaca": [
        {
            "instruction": "Give three tips for staying healthy.",
            "input": "",
            "output": "Eat a balanced diet, exercise regularly and get enough sleep every night.",
        },
        {
            "instruction": "Translate to French.",
            "input": "Good morning",
            "output": "Bonjour is the French for it.",
        },
    ],
    "sharegpt": [
        {
            "id": "s1",
            "conversations": [
                {"from": "human", "value": "Tell me a joke about the sea."},
                {
                    "from": "gpt",
                    "value": "Why did the ocean wave? Because it saw the "
                    "ship and wanted to say hello to the sailors.",
                },
            ],
        },
    ],
    "openai": [
        {
            "messages": [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "Explain why the sky is blue."},
                {
                    "role": "assistant",
                    "content": "Sunlight scatters off air molecules, and blue light "
                    "scatters the most, so the sky looks blue to us.",
                },
            ]
        },
    ],
    "gsm8k": [
        {
            "question": "Sara has 5 pencils and buys 7 more. How many pencils does she have?",
            "answer": "She has 5 + 7 = <<5+7=12>>12 pencils.\n#### 12",
        },
    ],
    "text": [{"text": "The river ran quietly under the old stone bridge, and the town slept beside it."}],
}


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    return path


def math_rows(n: int, seed: int = 0) -> list[dict]:
    """GSM8K-style rows with distinct numbers (so they are not duplicates of each other)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q, a = MATH[i % len(MATH)]
        x, y = rng.randint(2, 999), rng.randint(2, 999) + i * 1000
        c = x + y if "+" in a else x * y
        name = rng.choice(["Tom", "Ana", "Lee", "Mia", "Raj", "Zoe"])
        rows.append({"question": q.format(a=x, b=y).replace("Tom", name), "answer": a.format(a=x, b=y, c=c)})
    return rows


WORDS = (
    "river forest lantern harbour dragon castle meadow whisper silver thunder garden sailor candle winter "
    "violet mirror island shadow feather orchard compass ember glacier parade riddle"
).split()


def story_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(30))
        text = (
            f"Once upon a time the {rng.choice(WORDS)} and the {rng.choice(WORDS)} went on a journey. "
            f"She smiled and whispered about the {words}. The story ended at dawn, number {i}."
        )
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Write a story about the {rng.choice(WORDS)} {i}."},
                    {"role": "assistant", "content": text},
                ]
            }
        )
    return rows
