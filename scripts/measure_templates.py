"""How redundant templated reasoning-gym pools look to MinHash and to skeleton hashing (issue 13).

For each generator: 2,000 problems (seed 0), distinct prompts, prompts MinHash-LSH near dedup (threshold
0.8, 5-word shingles, on the prompt) would drop, and distinct skeletons (numbers and capitalised words masked:
curate/normalise.skeleton). Prints JSON.

    .venv/bin/python scripts/measure_templates.py
"""

from __future__ import annotations

import json

from qwythos.curate.config import NearDedupConfig
from qwythos.curate.dedup import NearDedup, signatures, skeleton_hash
from qwythos.gym import problems

POOLS = {
    "leg_counting": {"min_animals": 2, "max_animals": 4, "max_instances": 9},
    "chain_sum": {"min_terms": 3, "max_terms": 5, "min_digits": 1, "max_digits": 2},
    "products": {},
}


def main() -> None:
    out = {}
    cfg = NearDedupConfig(threshold=0.8)
    for name, args in POOLS.items():
        prompts = [p.question for p in problems(name, 2000, 0, args)]
        hits = NearDedup(cfg).add(signatures(prompts, cfg), [str(i) for i in range(len(prompts))])
        out[name] = {
            "records": len(prompts),
            "distinct_prompts": len(set(prompts)),
            "minhash_near_dups": sum(h is not None for h in hits),
            "skeletons": len({skeleton_hash(p) for p in prompts}),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
