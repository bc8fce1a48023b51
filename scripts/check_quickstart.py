"""Check a `make quickstart` log and run folder for what a new user should see (used by .ci/run).

Usage: python scripts/check_quickstart.py QUICKSTART_LOG RUN_FOLDER
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

SYSTEMS = ("base", "dense_lora", "reasoning_only", "narrative_only", "hybrid_soft", "hybrid_top1")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def problems(log: str, out: Path) -> list[str]:
    found = []
    rows = [line for line in log.splitlines() if line.startswith("| ")]
    if not any(line.startswith("| system |") for line in rows):
        found.append("no headline table ('| system | ...') in the output")
    for system in SYSTEMS:
        if not any(line.startswith(f"| {system} |") for line in rows):
            found.append(f"the headline table has no row for {system}")
    if len(ANSI.findall(log)) < 20:
        found.append("the demo is not coloured by pathway (fewer than 20 ANSI colour codes in the output)")
    report = out / "run" / "eval" / "report.html"
    if not report.is_file() or "<table" not in report.read_text(errors="replace"):
        found.append(f"{report} is missing or holds no table")
    results = out / "run" / "eval" / "results.json"
    if not results.is_file():
        found.append(f"{results} is missing")
    gens = out / "generations.json"
    if not gens.is_file() or len(json.loads(gens.read_text())) < 3:
        found.append(f"{gens} is missing or holds fewer than 3 demo generations")
    if "Traceback" in log:
        found.append("a traceback in the output")
    return found


def separation(results: dict) -> list[str]:
    """The quickstart's promise: its table separates the reasoning pathway from the base on the held-out
    arithmetic, with a paired 95 % CI that excludes 0."""
    for row in results.get("paired", []):
        if (row["a"], row["b"]) == ("reasoning_only", "base") and row.get("gsm"):
            lo, hi = row["gsm"]["ci"]
            if lo > 0:
                return []
            return [f"reasoning_only − base on gsm: 95 % CI [{lo:+.3f}, {hi:+.3f}] does not exclude 0"]
    return ["results.json has no paired reasoning_only − base difference on gsm"]


def main() -> int:
    log, out = Path(sys.argv[1]).read_text(errors="replace"), Path(sys.argv[2])
    found = problems(log, out)
    for p in found:
        print(f"check_quickstart: {p}", file=sys.stderr)
    results = out / "run" / "eval" / "results.json"
    if results.is_file():  # enforced: three fresh runs on 2026-12-03/04 gave +30.0 pts [+17.5, +45.0]
        gap = separation(json.loads(results.read_text()))
        for p in gap:
            print(f"check_quickstart: {p}", file=sys.stderr)
        found += gap
        if not gap:
            print("check_quickstart: reasoning_only above base, CI excludes 0")
    if not found:
        print("check_quickstart: headline table, coloured demo, report.html and generations.json present")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
