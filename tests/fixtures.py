"""Record fixtures for training tests: reasoning, narrative and mixed chats (written as JSONL), and a tiny
branch-train-mix config."""

from __future__ import annotations

import json
import random
from pathlib import Path


def records(n_reason: int = 24, n_story: int = 24, n_mixed: int = 8, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n_reason):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        q = f"Tom has {a} apples and buys {b} more. How many apples does he have?"
        out.append(_rec(f"r{i}", q, f"{a} + {b} = {a + b}. #### {a + b}", "reasoning"))
    stories = [
        "Once upon a time a dragon guarded a quiet village by the sea.",
        "The children sang to the dragon, and the sea was quiet.",
        "A knight rode into the storm and the village slept.",
    ]
    for i in range(n_story):
        out.append(_rec(f"n{i}", "Tell me a story.", stories[i % 3] + f" ({i})", "narrative"))
    story = "The knight counted the coins: 12 + 5 = 17. Then she rode into the storm."
    s0, s1 = story.index("12"), story.index(" Then")
    for i in range(n_mixed):
        r = _rec(f"m{i}", "Tell a story with a sum.", story, "mixed")
        r["spans"] = [{"message": 1, "start": s0, "end": s1, "pathway": "reasoning"}]
        out.append(r)
    return out


def _rec(id_: str, prompt: str, answer: str, pathway: str) -> dict:
    return {
        "id": id_,
        "source": "fixture",
        "pathway": pathway,
        "pathway_confidence": 1.0,
        "spans": [],
        "meta": {},
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_train_raw(base: Path | str, data: Path | str) -> dict:
    """A seconds-long TrainConfig (as a dict): rank-4 LoRAs, two steps per branch, three mix steps."""
    return {
        "model": {"base": str(base), "rank": 4, "alpha": 8, "dropout": 0.0},
        "data": {"dataset": str(data), "max_seq_len": 128},
        "optim": {"batch_size": 2},
        "checkpoint": {"every": 100},
        "stages": [
            {"name": "branch-reasoning", "kind": "branch", "pathway": "reasoning", "max_steps": 2},
            {"name": "branch-narrative", "kind": "branch", "pathway": "narrative", "max_steps": 2},
            {"name": "mix", "kind": "mix", "max_steps": 3, "router_lr": 0.05},
        ],
    }
