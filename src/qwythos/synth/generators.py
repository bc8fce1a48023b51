"""Generators turn seeds into tasks: a conversation whose assistant turns are built from checked parts.

A ``Part`` is one thing a teacher writes, with its pathway and its check: a reasoning part carries a
reference answer (or none: self-consistency decides), a narrative part a word it must mention. A mixed
reply joins parts of both pathways, so the reasoning span's character offsets are known exactly.
A part without ``instruction`` answers the conversation itself; one with it answers that focused request.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from . import seeds
from .config import SynthConfig

log = logging.getLogger(__name__)

SOLVE = "Solve the problem step by step. End with a final line of the form '#### <number>'.\n\nProblem: {q}"
# What the teacher is sent for a solution: worked examples first (a 135M teacher gets ~5% of one-step
# sums right zero-shot, ~35% with these at temperature 0), stopped before it invents the next problem.
FEW_SHOT = (
    "Problem: Ana the farmer has 5 apples and gets 3 more. How many apples does Ana have now?\n"
    "Solution: Ana starts with 5 apples and gets 3 more, so 5 + 3 = 8.\n#### 8\n\n"
    "Problem: Ben the baker has 20 loaves and gives away 6. How many loaves are left?\n"
    "Solution: Ben starts with 20 loaves and gives away 6, so 20 - 6 = 14.\n#### 14\n\n"
    "Problem: Cleo the potter fills 3 baskets with 4 bowls each. How many bowls is that in all?\n"
    "Solution: There are 3 baskets with 4 bowls each, so 3 * 4 = 12.\n#### 12\n\n"
    "Problem: Dan has 30 gold and buys 2 ropes at 3 gold each. How much gold does Dan have left?\n"
    "Solution: 2 ropes at 3 gold each cost 2 * 3 = 6 gold. Dan has 30 - 6 = 24 gold left.\n#### 24\n\n"
    "Problem: {q}\nSolution:"
)
SOLUTION_STOP = ["\nProblem:"]


@dataclass
class Part:
    pathway: str  # "reasoning" | "narrative"
    max_tokens: int
    instruction: str | None = None  # None: the reply to the conversation so far
    reference: str | None = None  # reasoning: the answer to verify against (None = majority vote)
    word: str | None = None  # narrative: must be mentioned
    min_words: int = 0
    conclusion: str | None = None  # reasoning: replaces the '#### N' line (inside a story); None keeps it
    stop: list[str] = field(default_factory=list)
    given: str | None = None  # reasoning: a worked solution written by the generator; no teacher request


@dataclass
class Turn:
    user: str
    parts: list[Part]
    joiner: str = "\n\n"


@dataclass
class Task:
    id: str
    kind: str
    pathway: str  # the record's label: reasoning | narrative | mixed
    turns: list[Turn]
    system: str | None = None
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------- reasoning


def solution(
    cfg: SynthConfig,
    question: str,
    reference: str | None,
    conclusion: str | None = None,
    worked: str | None = None,
) -> Part:
    """A reasoning part: the worked-examples prompt, the reference to verify against, the stop string.
    ``worked`` (a mixed task's own solution) is used instead of the teacher when
    ``tasks.mixed_reasoning: worked``; it is still verified like a teacher's."""
    return Part(
        "reasoning",
        cfg.sampling.solution_tokens,
        FEW_SHOT.format(q=question),
        reference,
        conclusion=conclusion,
        stop=SOLUTION_STOP,
        given=f"{worked}\n#### {reference}" if worked and cfg.tasks.mixed_reasoning == "worked" else None,
    )


def reasoning_problems(source: str, count: int, seed: int) -> list[tuple[str, str | None]]:
    """(question, reference answer or None) from templates, a reasoning-gym dataset or a JSONL file."""
    if count == 0:
        return []
    if source == "templates":
        rng = random.Random(seed)
        return [(p.question, str(p.answer)) for p in (seeds.word_problem(rng) for _ in range(count))]
    path = Path(source)
    if path.suffix in (".jsonl", ".json") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"tasks.reasoning_source: {path} does not exist")
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if any("question" not in r for r in rows):
            raise ValueError(
                f"tasks.reasoning_source {path}: every line needs a 'question' (and may have 'answer')"
            )
        rows = rows[:count]
        return [(r["question"], None if r.get("answer") is None else str(r["answer"])) for r in rows]
    try:
        import reasoning_gym
    except ImportError:
        raise ValueError(
            f"tasks.reasoning_source={source!r} needs reasoning-gym: pip install 'qwythos[synth]', "
            "or use reasoning_source=templates"
        ) from None
    try:
        dataset = reasoning_gym.create_dataset(source, size=count, seed=seed)
    except Exception as e:  # reasoning-gym raises its own errors for unknown names
        raise ValueError(f"tasks.reasoning_source={source!r}: reasoning-gym says {e}") from None
    return [(x["question"], str(x["answer"])) for x in dataset]


def reasoning_tasks(cfg: SynthConfig, rng: random.Random) -> list[Task]:
    problems = reasoning_problems(cfg.tasks.reasoning_source, cfg.tasks.reasoning, cfg.seed)
    return [
        Task(
            id=f"reasoning-{i}",
            kind="reasoning",
            pathway="reasoning",
            turns=[Turn(SOLVE.format(q=q), [solution(cfg, q, ref)])],
            meta={"reference": ref, "problem_source": cfg.tasks.reasoning_source},
        )
        for i, (q, ref) in enumerate(problems)
    ]


# ---------------------------------------------------------------- narrative


def narrative_tasks(cfg: SynthConfig, rng: random.Random) -> list[Task]:
    tasks = []
    for i in range(cfg.tasks.narrative):
        s = seeds.story_seed(rng)
        part = Part("narrative", cfg.sampling.story_tokens, word=s.word, min_words=cfg.score.min_words)
        tasks.append(
            Task(f"narrative-{i}", s.form, "narrative", [Turn(s.prompt(), [part])], meta={"seed": vars(s)})
        )
    return tasks


def roleplay_tasks(cfg: SynthConfig, rng: random.Random) -> list[Task]:
    tasks = []
    for i in range(cfg.tasks.roleplay):
        name, description = rng.choice(seeds.CARDS)
        setting, obj = rng.choice(seeds.SETTINGS), rng.choice(seeds.OBJECTS)
        system = (
            f"You are {name}, {description}. The scene: {setting}. Stay in character, speak in the first "
            "person, and answer in a few vivid sentences."
        )
        users = [rng.choice(seeds.OPENERS).format(object=obj)]
        users += rng.sample(seeds.FOLLOW_UPS, cfg.tasks.roleplay_turns - 1)
        turns = [
            Turn(u, [Part("narrative", cfg.sampling.reply_tokens, min_words=cfg.score.min_words // 2)])
            for u in users
        ]
        card = {"name": name, "description": description, "setting": setting}
        tasks.append(Task(f"roleplay-{i}", "roleplay", "narrative", turns, system, {"card": card}))
    return tasks


# ---------------------------------------------------------------- mixed: narrative around verified reasoning


def mixed_story_tasks(cfg: SynthConfig, rng: random.Random) -> list[Task]:
    """Opening (narrative) + the worked sum (reasoning, verified) + ending (narrative)."""
    tasks, half = [], cfg.score.min_words // 2
    for i in range(cfg.tasks.mixed_story):
        p, genre, setting = seeds.word_problem(rng), rng.choice(seeds.GENRES), rng.choice(seeds.SETTINGS)
        user = (
            f"Tell a short {genre} story set in {setting}: {p.setup}. "
            f"Work out the total inside the story and show the calculation."
        )
        opening = (
            f"Write the opening of a short {genre} story set in {setting}, in three or four sentences: "
            f"{p.setup}. Stop before anyone counts the total."
        )
        ending = (
            f"Write the ending of a short {genre} story set in {setting}, in two or three sentences. "
            f"{p.name} the {p.role} now knows there are {p.answer} {p.item}."
        )
        reply = cfg.sampling.reply_tokens
        parts = [
            Part("narrative", reply, opening, word=p.name, min_words=half),
            solution(cfg, p.question, str(p.answer), f"So the answer is {p.answer} {p.item}.", p.worked),
            Part("narrative", reply, ending, min_words=half // 2),
        ]
        meta = {"problem": p.question, "reference": str(p.answer), "genre": genre, "setting": setting}
        meta["reasoning_part"] = cfg.tasks.mixed_reasoning
        tasks.append(Task(f"mixed_story-{i}", "mixed_story", "mixed", [Turn(user, parts)], meta=meta))
    return tasks


def mixed_gm_tasks(cfg: SynthConfig, rng: random.Random) -> list[Task]:
    """A game master's reply: the inventory check (reasoning, verified), then the narration."""
    tasks = []
    for i in range(cfg.tasks.mixed_gm):
        s = seeds.shop_scene(rng)
        inventory = ", ".join(f"{k}: {v}" for k, v in s.inventory.items())
        system = (
            f"You are the game master of a {s.genre} adventure set in {s.setting}. "
            f"The player's inventory: {inventory}. Check the inventory before you narrate."
        )
        plural = s.item if s.count == 1 else f"{s.item}s"
        user = f"I buy {s.count} {plural} from the merchant. They cost {s.price} gold each."
        check = (
            f"The player has {s.gold} gold and buys {s.count} {plural} at {s.price} gold each. "
            f"How much gold does the player have left?"
        )
        narrate = (
            f"You are the game master of a {s.genre} adventure set in {s.setting}. The player has just "
            f"bought {s.count} {plural} from a merchant and has {s.left} gold left. Narrate what happens "
            "next in two to four sentences, speaking to the player as 'you'."
        )
        parts = [
            solution(
                cfg, check, str(s.left), f"Inventory check done: you have {s.left} gold left.", s.worked
            ),
            Part("narrative", cfg.sampling.reply_tokens, narrate, min_words=cfg.score.min_words // 2),
        ]
        meta = {
            "inventory": s.inventory,
            "buy": {s.item: s.count},
            "price": s.price,
            "reference": str(s.left),
            "reasoning_part": cfg.tasks.mixed_reasoning,
        }
        tasks.append(Task(f"mixed_gm-{i}", "mixed_gm", "mixed", [Turn(user, parts)], system, meta))
    return tasks


GENERATORS = (reasoning_tasks, narrative_tasks, roleplay_tasks, mixed_story_tasks, mixed_gm_tasks)


def build_tasks(cfg: SynthConfig) -> list[Task]:
    """Every generator draws from its own seeded stream: changing one count leaves the others' tasks alone."""
    tasks = []
    for k, generate in enumerate(GENERATORS):
        tasks += generate(cfg, random.Random(f"{cfg.seed}:{k}"))
    return tasks
