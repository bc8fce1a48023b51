"""Hold part of an input out before curation, so the evaluation scores records the run never saw.

``inputs[i].holdout: 0.2`` splits that input's JSONL rows before any step reads them: within each stratum
(``meta.kind``, else ``pathway``, else one stratum) the rows are shuffled with ``holdout_seed`` and the first
``round(fraction * n)`` held out (at least one per stratum of two or more rows). Curation reads the rest; the
held-out rows are written unchanged to ``<out>/heldout/<source>.jsonl`` and listed in the manifest's
``heldout``, which ``qwythos eval`` reads as its narrative source (``narrative.source: auto``).
"""

from __future__ import annotations

import gzip
import json
import random
from collections import defaultdict
from pathlib import Path

from ..config import ConfigError


def stratum(row: dict) -> str:
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    return str(meta.get("kind") or row.get("pathway") or "all")


def split_rows(lines: list[str], fraction: float, seed: int) -> tuple[list[str], list[str], dict[str, int]]:
    """(kept lines, held-out lines, held-out count per stratum); both keep the input order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = {}  # a malformed row stays with the kept lines: the reader rejects it with its reason
        groups[stratum(row) if isinstance(row, dict) else "all"].append(i)
    rng = random.Random(seed)
    held, per_stratum = set(), {}
    for name in sorted(groups):
        rows = groups[name][:]
        rng.shuffle(rows)
        k = round(fraction * len(rows))
        k = max(k, 1) if len(rows) >= 2 else 0
        held.update(rows[:k])
        per_stratum[name] = k
    kept = [x for i, x in enumerate(lines) if i not in held]
    return kept, [x for i, x in enumerate(lines) if i in held], per_stratum


def split_input(path: Path, source: str, fraction: float, seed: int, work: Path) -> tuple[Path, Path, dict]:
    """Write the kept and held-out rows of a JSONL[.gz] input into ``work``; (kept, held-out, counts)."""
    if not (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")):
        raise ConfigError(f"inputs: {path}: `holdout` splits JSONL inputs (.jsonl or .jsonl.gz) only")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = [x.rstrip("\n") for x in f if x.strip()]
    kept, held, per_stratum = split_rows(lines, fraction, seed)
    folder = work / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    kept_path, held_path = folder / f"{source}.kept.jsonl", folder / f"{source}.heldout.jsonl"
    kept_path.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
    held_path.write_text("".join(x + "\n" for x in held), encoding="utf-8")
    info = {"rows": len(lines), "held_out": len(held), "by_stratum": per_stratum, "seed": seed}
    return kept_path, held_path, info
