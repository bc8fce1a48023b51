"""Regenerate placeholder.jsonl.gz: template stories, dialogues and mixed story+arithmetic samples.

A stand-in for the synthetic narrative set (data/seed/) until it ships: no model wrote these, a seeded
template grammar did. Run: python data/placeholder-narrative/make_placeholder.py
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

HEROES = [
    "a lighthouse keeper",
    "a young dragon",
    "an old clockmaker",
    "a shy robot",
    "a fox with one ear",
    "a sailor's daughter",
    "a retired knight",
    "a baker who could not sleep",
    "a lost kitten",
    "a girl named Mira",
    "a boy named Tobin",
    "a wandering musician",
    "a tired postman",
    "a small owl",
]
PLACES = [
    "a village by the sea",
    "a snowbound mountain pass",
    "a market full of lanterns",
    "an empty library",
    "a forest where the trees whispered",
    "a harbour town wrapped in fog",
    "a desert city at dusk",
    "a garden on a rooftop",
    "a castle with no doors",
    "an island that moved at night",
]
WANTS = [
    "find a missing star",
    "learn the name of the wind",
    "mend a broken bell",
    "carry a letter home",
    "grow a flower in winter",
    "make a friend",
    "hear the sea sing",
    "find the end of a rainbow",
    "return a borrowed map",
    "wake a sleeping giant",
]
OBSTACLES = [
    "a storm rolled in from the east",
    "the bridge had fallen into the river",
    "nobody believed them",
    "the path split into seven paths",
    "a grumpy troll asked for a riddle",
    "the lantern went out",
    "the clocks all stopped at midnight",
    "the snow covered every footprint",
]
HELPERS = [
    "a kind stranger",
    "an old tortoise",
    "a flock of noisy gulls",
    "their little brother",
    "a talking teapot",
    "the moon herself",
    "a patient gardener",
    "a family of mice",
]
ENDINGS = [
    "and from that night on the village slept a little easier",
    "and they laughed until the stars came out",
    "and the bell rang again, clear and bright",
    "and nobody ever forgot that winter",
    "and the map found its way home at last",
    "and the sea sang softly all the way back",
    "and the flower still blooms there every year",
    "and the giant waved goodbye with a yawn",
]
FEELINGS = ["nervous", "curious", "brave", "hopeful", "lonely", "stubborn", "cheerful", "quiet"]
TOPICS = [
    "the best way to cross a river",
    "whether ghosts get cold",
    "a lost umbrella",
    "the first snow",
    "a secret recipe",
    "an unfinished painting",
    "the noise in the attic",
    "a very late train",
]
SPEAKERS = [("Ada", "Ben"), ("the captain", "the cook"), ("Grandma", "Lio"), ("the fox", "the crow"),
            ("Nell", "the ghost"), ("the queen", "the gardener")]  # fmt: skip


def story(rng: random.Random) -> tuple[str, str]:
    hero, place, want = rng.choice(HEROES), rng.choice(PLACES), rng.choice(WANTS)
    prompt = rng.choice(["Write a short story about {h} in {p} who wants to {w}.",
                         "Tell me a bedtime story set in {p}, about {h}.",
                         "Write a tale where {h} lives in {p} and dreams to {w}.",
                         "Describe how {h} tried to {w}, far from {p}."])  # fmt: skip
    obstacle, helper, ending, feel = (
        rng.choice(OBSTACLES),
        rng.choice(HELPERS),
        rng.choice(ENDINGS),
        rng.choice(FEELINGS),
    )
    sentences = [
        f"Once upon a time, in {place}, there lived {hero}.",
        f"More than anything, {hero.split(' ', 1)[1]} wanted to {want}.",
        f"One {rng.choice(['grey', 'windy', 'golden', 'quiet'])} morning the journey began, and the air smelled of "
        f"{rng.choice(['salt', 'pine', 'rain', 'bread', 'smoke'])}.",
        f"But {obstacle}, and for a while everything seemed lost.",
        f"Feeling {feel}, our friend sat down and listened to the {rng.choice(['waves', 'leaves', 'crowd', 'clocks'])}.",
        f'Then {helper} appeared and said, "Every road is shorter when you share it."',
        f"Together they tried {rng.choice(['a song', 'a trick', 'a long way round', 'a brave leap', 'a small kindness'])}, "
        f"and it worked better than either of them had hoped.",
        f"In the end the wish came true, {ending}.",
    ]
    keep = sorted(rng.sample(range(1, 7), rng.randint(3, 6)))
    text = " ".join([sentences[0]] + [sentences[i] for i in keep] + [sentences[7]])
    return prompt.format(h=hero, w=want, p=place), text


def dialogue(rng: random.Random) -> tuple[str, str]:
    a, b = rng.choice(SPEAKERS)
    topic = rng.choice(TOPICS)
    lines = [f"{a.capitalize()}: Have you heard about {topic}?",
             f"{b.capitalize()}: Only rumours. {rng.choice(['Tell me everything.', 'Is it true?', 'I do not believe a word.'])}",
             f"{a.capitalize()}: It started {rng.choice(['last Tuesday', 'at midnight', 'in the rain', 'before breakfast'])}, "
             f"when {rng.choice(OBSTACLES)}.",
             f"{b.capitalize()}: {rng.choice(['That explains the noise.', 'And what did you do?', 'How strange!'])}",
             f"{a.capitalize()}: I asked {rng.choice(HELPERS)} for help, of course.",
             f"{b.capitalize()}: {rng.choice(['Next time, take me with you.', 'You always make friends in odd places.', 'Then we had better go and see.'])}"]  # fmt: skip
    return f"Write a dialogue between {a} and {b} about {topic}.", "\n".join(lines[: rng.randint(4, 6)])


def mixed(rng: random.Random) -> dict:
    hero = rng.choice(HEROES)
    n, price, extra = rng.randint(3, 12), rng.randint(2, 9), rng.randint(1, 20)
    total = n * price + extra
    prompt = (f"Tell a short story about {hero} who buys {n} lanterns at {price} coins each and pays {extra} coins "
              f"for a ribbon, then work out how many coins were spent.")  # fmt: skip
    tale = (f"Once upon a time {hero} walked into {rng.choice(PLACES)} as the sun went down. "
            f"The lantern seller smiled and whispered that each lantern held a little piece of a story. "
            f"{hero.capitalize()} chose {n} of them, and a {rng.choice(['red', 'blue', 'silver'])} ribbon to tie them together.")  # fmt: skip
    work = (
        f"Let's work it out step by step.\nThe lanterns cost {n} * {price} = {n * price} coins.\n"
        f"With the ribbon: {n * price} + {extra} = {total} coins.\n#### {total}"
    )
    response = tale + "\n\n" + work
    spans = [{"message": 1, "start": 0, "end": len(tale), "pathway": "narrative"},
             {"message": 1, "start": len(tale) + 2, "end": len(response), "pathway": "reasoning"}]  # fmt: skip
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
            "pathway": "mixed", "pathway_confidence": 1.0, "spans": spans,
            "meta": {"generator": "placeholder-template", "kind": "mixed", "answer": total}}  # fmt: skip


def main(out: Path = Path(__file__).with_name("placeholder.jsonl.gz"), seed: int = 0) -> None:
    rng = random.Random(seed)
    rows = []
    for i in range(400):
        kind = "story" if i % 4 else "dialogue"
        prompt, text = story(rng) if kind == "story" else dialogue(rng)
        rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}],
                     "pathway": "narrative", "pathway_confidence": 1.0, "spans": [],
                     "meta": {"generator": "placeholder-template", "kind": kind}})  # fmt: skip
    rows += [mixed(rng) for _ in range(100)]
    rng.shuffle(rows)
    with gzip.GzipFile(out, "wb", mtime=0) as f:
        for i, row in enumerate(rows):
            f.write((json.dumps({"id": f"placeholder-{i:04d}", **row}) + "\n").encode())


if __name__ == "__main__":
    main()
