"""reasoning-gym problems a small model can learn: generator arguments and worked solutions.

reasoning-gym ships answers, not solutions. For each generator named in ``RENDERERS`` the worked solution is
rendered from the item's metadata, one step per line, ending ``#### N`` (THESIS.md):

    leg_counting   3 cats: 3 * 4 = 12 legs / 2 spiders: 2 * 8 = 16 legs / 12 + 16 = 28 / #### 28
    chain_sum      left to right: 4 - 1 = 3 / 3 - 7 = -4 / #### -4
    products       left to right; a product of two numbers >= 10 is split by the second's digits:
                   23 * 40 = 920 / 23 * 5 = 115 / 920 + 115 = 1035 / #### 1035
    gsm_symbolic   the generator's own ``answer_cot`` (already ending ``#### N``), not re-rendered

Every rendered solution is checked before it is returned: its final answer equals the generator's and
``text.false_steps`` finds no wrong step; a renderer that fails is a bug, reported with the item. Other
generators give their bare answer as ``#### N``. Curation (training inputs) and evaluation (held-out
problems) both draw from here, so a held-out item is rendered exactly as a trained one would be.

Item i of a reasoning-gym dataset is drawn with ``seed + i``: seeds closer than the size share items, so
held-out sets take seeds further away and are checked for overlap by exact text anyway.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .text import false_steps, gsm_answer, normalise_number


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str  # the generator's answer (a number)
    solution: str  # worked steps ending '#### <answer>'
    meta: dict[str, Any] = field(default_factory=dict)


def args_digest(args: dict[str, Any]) -> str:
    """A short stable name for a set of generator arguments (part of file names and ids)."""
    if not args:
        return "default"
    return hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:8]


# ---------------------------------------------------------------- renderers, one per generator


def _legs(item: dict) -> list[str]:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    steps, counts = [], []
    for animal, n in item["metadata"]["animals"].items():
        legs = n * ANIMALS[animal]
        name = f"{animal}{'s' if n > 1 else ''}"  # as the question writes it
        steps.append(f"{n} {name}: {n} * {ANIMALS[animal]} = {legs} legs")
        counts.append(legs)
    if len(counts) > 1:
        steps.append(" + ".join(map(str, counts)) + f" = {sum(counts)}")
    return steps


_TOKEN = re.compile(r"-?\d+|[-+*]")


def _terms(expression: str) -> tuple[list[int], list[str]]:
    """'4 - 1 - 7' -> ([4, 1, 7], ['-', '-']); a sign right after an operator belongs to the number."""
    numbers, ops, want_number = [], [], True
    for tok in _TOKEN.findall(expression):
        if want_number:
            numbers.append(int(tok))
        else:
            if tok not in "+-*":
                raise ValueError(f"cannot read {expression!r}")
            ops.append(tok)
        want_number = not want_number
    if len(numbers) != len(ops) + 1:
        raise ValueError(f"cannot read {expression!r}")
    return numbers, ops


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _chain(item: dict) -> list[str]:
    """Left to right, one operation per line (chain_sum has only + and -, products only *)."""
    numbers, ops = _terms(item["metadata"]["expression"])
    steps, acc = [], numbers[0]
    for op, b in zip(ops, numbers[1:], strict=True):
        if op == "*" and acc >= 10 and b >= 10:
            steps += _long_product(acc, b)
        else:
            steps.append(f"{acc} {op} {b} = {_apply(acc, op, b)}")
        acc = _apply(acc, op, b)
    return steps


def _long_product(a: int, b: int) -> list[str]:
    """a * b by the digits of b: one partial product per non-zero digit, then their sum."""
    parts = [int(d) * 10**i for i, d in enumerate(reversed(str(b))) if d != "0"][::-1]
    steps = [f"{a} * {p} = {a * p}" for p in parts]
    if len(parts) > 1:
        steps.append(" + ".join(str(a * p) for p in parts) + f" = {a * b}")
    return steps


def _cot(item: dict) -> str:
    """gsm_symbolic's own chain of thought (ends '#### N'); its steps are not all checkable arithmetic."""
    cot = item["metadata"].get("answer_cot") or ""
    return cot if gsm_answer(cot) is not None else f"{cot}\n#### {item['answer']}".strip()


RENDERERS: dict[str, Callable[[dict], list[str]]] = {
    "leg_counting": _legs,
    "chain_sum": _chain,
    "products": _chain,
}
VERIFIED = tuple(RENDERERS)  # the generators whose every step is checked


def render(name: str, item: dict) -> str:
    """The worked solution of one reasoning-gym item, ending '#### <answer>'."""
    if name == "gsm_symbolic":
        return _cot(item)
    renderer = RENDERERS.get(name)
    if renderer is None:
        return f"#### {item['answer']}"
    solution = "\n".join(renderer(item) + [f"#### {item['answer']}"])
    bad = false_steps(solution)
    final = gsm_answer(solution)
    if bad or final is None or final != normalise_number(str(item["answer"])):
        raise AssertionError(
            f"the {name} renderer wrote a wrong solution for {item['question']!r}: "
            f"wrong steps {bad}, final {final} vs {item['answer']} (a bug in qwythos.gym)"
        )
    return solution


# ---------------------------------------------------------------- datasets


def create(name: str, size: int, seed: int, args: dict[str, Any] | None = None, option: str = "args"):
    """reasoning-gym's dataset, its argument errors turned into one naming ``option`` and the fix."""
    import reasoning_gym

    try:
        return reasoning_gym.create_dataset(name, size=size, seed=seed, **(args or {}))
    except (TypeError, AssertionError, ValueError, KeyError) as e:
        raise ValueError(
            f"{option}: reasoning-gym rejects {name} with {args or {}}: {e or type(e).__name__}; "
            f"see reasoning_gym's {name} config for the valid arguments"
        ) from None


def problems(name: str, size: int, seed: int, args: dict[str, Any] | None = None) -> list[Problem]:
    """``size`` problems of generator ``name`` from ``seed`` with worked solutions."""
    data = create(name, size, seed, args)
    tag = args_digest(args or {})
    out = []
    for i in range(size):
        item = data[i]
        out.append(
            Problem(
                id=f"{name}-{tag}-{seed}-{i}",
                question=item["question"].strip(),
                answer=str(item["answer"]),
                solution=render(name, item),
                meta={"generator": name, "seed": seed, "index": i, "verified": name in VERIFIED},
            )
        )
    return out
