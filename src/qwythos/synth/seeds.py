"""Composable seeds: genres, characters, settings, constraints, character cards, inventories, word problems.

Every task is drawn from these lists with a seeded ``random.Random``, so the same seed gives the same tasks
(and the same cache keys) on any machine. Constraints that name a word are checked in the reply.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

GENRES = [
    "fantasy",
    "science fiction",
    "mystery",
    "fairy tale",
    "adventure",
    "ghost story",
    "comedy",
    "fable",
    "western",
    "detective",
    "slice-of-life",
    "myth",
    "steampunk",
    "pirate",
    "space opera",
]
CHARACTERS = [
    "a retired pirate",
    "a young witch",
    "a shy robot",
    "a clever fox",
    "an old lighthouse keeper",
    "a baker who cannot sleep",
    "a lost astronaut",
    "a talking cat",
    "a knight afraid of the dark",
    "a curious little girl",
    "a grumpy wizard",
    "a travelling musician",
    "a detective with a cold",
    "a dragon who collects teacups",
    "a farmer's son",
    "a ship's cook",
    "a librarian",
    "a street thief",
    "a princess who hates crowns",
    "an inventor",
    "a ghost who forgot her name",
    "a mail carrier",
    "a blacksmith",
    "a river spirit",
    "a lonely giant",
]
SETTINGS = [
    "a snowy mountain village",
    "a haunted lighthouse",
    "a floating market",
    "a desert oasis",
    "a space station",
    "an enchanted forest",
    "a busy train station",
    "a castle kitchen",
    "a sunken city",
    "a small bakery",
    "a library at midnight",
    "a ship in a storm",
    "a town on the back of a turtle",
    "an abandoned carnival",
    "a quiet farm",
    "a city of clocks",
    "a cave of glowing crystals",
    "a rooftop garden",
    "a frozen lake",
    "a travelling circus",
]
STYLES = [
    "Tell it in the past tense.",
    "Include a line of dialogue.",
    "End with a surprise.",
    "Make it gentle and hopeful.",
    "Make it funny.",
    "Keep it mysterious.",
    "Describe the weather.",
    "End on a happy note.",
    "Use vivid sensory details.",
    "Include a small act of kindness.",
]
OBJECTS = [
    "lantern",
    "key",
    "map",
    "letter",
    "compass",
    "feather",
    "bell",
    "mirror",
    "coin",
    "seed",
    "clock",
    "shell",
    "ribbon",
    "stone",
    "violin",
    "umbrella",
    "candle",
    "book",
]
FORMS = ["story", "story", "scene", "dialogue"]

NAMES = [
    "Mira",
    "Tom",
    "Ada",
    "Leo",
    "Nora",
    "Sam",
    "Iris",
    "Finn",
    "Lila",
    "Omar",
    "Rosa",
    "Theo",
    "Zara",
    "Hugo",
    "Elsa",
    "Kai",
    "Juno",
    "Milo",
    "Pia",
    "Ravi",
]
ROLES = [  # (role, item) pairs for word problems inside stories
    ("baker", "loaves"),
    ("farmer", "apples"),
    ("pirate", "gold coins"),
    ("librarian", "books"),
    ("gardener", "roses"),
    ("fisher", "fish"),
    ("shopkeeper", "candles"),
    ("knight", "arrows"),
    ("wizard", "potions"),
    ("sailor", "ropes"),
    ("beekeeper", "jars of honey"),
    ("potter", "bowls"),
]
CARDS = [  # role-play character cards: (name, description)
    ("Captain Mara", "a retired pirate who runs a seaside tavern and tells tall tales"),
    ("Professor Quill", "an absent-minded inventor who speaks quickly and loves gadgets"),
    ("Old Bren", "a gruff but kind blacksmith in a mountain village"),
    ("Luna", "a young witch running a potion shop, cheerful and a little clumsy"),
    ("Unit 7", "a polite maintenance robot on a space station who is learning about feelings"),
    ("Sir Alric", "a knight guarding a bridge who is secretly afraid of geese"),
    ("Madame Vey", "a fortune teller at a travelling circus who speaks in riddles"),
    ("Pip", "a talking fox who knows every path in the enchanted forest"),
    ("Inspector Gale", "a tired detective who notices every small detail"),
    ("Grandmother Oak", "an ancient tree spirit, slow and wise"),
]
OPENERS = [
    "Hello! Who are you, and what is this place?",
    "*walks in, shaking off the rain* I'm looking for a {object}. Can you help me?",
    "I'm new in town. What should I know?",
    "*sits down* You look like you have a story to tell.",
    "Good evening. Is it safe to travel at night around here?",
    "I found this {object} on the road. Do you know whose it is?",
]
FOLLOW_UPS = [
    "What happened next?",
    "Why does that matter so much to you?",
    "Can you show me the way?",
    "That sounds dangerous. Should I be worried?",
    "What is the strangest thing you have ever seen here?",
    "Will you come with me?",
]
SHOP = [  # (item, price in gold)
    ("rope", 3),
    ("torch", 2),
    ("healing potion", 7),
    ("loaf of bread", 1),
    ("lantern", 5),
    ("map", 4),
    ("dagger", 6),
    ("blanket", 2),
    ("arrow", 1),
    ("flask of oil", 3),
]


@dataclass
class StorySeed:
    form: str
    genre: str
    character: str
    other: str  # a second character (dialogue)
    setting: str
    style: str
    word: str  # must appear in the reply

    def prompt(self) -> str:
        if self.form == "dialogue":
            return (
                f"Write a short {self.genre} dialogue between {self.character} and {self.other} "
                f"in {self.setting}. {self.style} Mention a {self.word}."
            )
        length = "a short" if self.form == "story" else "a short, vivid"
        return (
            f"Write {length} {self.genre} {self.form} about {self.character} in {self.setting}. "
            f"{self.style} Mention a {self.word}."
        )


def story_seed(rng: random.Random) -> StorySeed:
    character, other = rng.sample(CHARACTERS, 2)
    return StorySeed(
        form=rng.choice(FORMS),
        genre=rng.choice(GENRES),
        character=character,
        other=other,
        setting=rng.choice(SETTINGS),
        style=rng.choice(STYLES),
        word=rng.choice(OBJECTS),
    )


@dataclass
class WordProblem:
    """'Mira the baker has 12 loaves and bakes 7 more': question, reference answer, the story's facts."""

    name: str
    role: str
    item: str
    question: str
    answer: int
    setup: str  # the facts in story form, without the result
    worked: str = ""  # the step-by-step solution, written by the generator (true by construction)


def word_problem(rng: random.Random) -> WordProblem:
    name, (role, item) = rng.choice(NAMES), rng.choice(ROLES)
    op = rng.choice(["add", "add", "sub", "mul"])
    if op == "add":
        a, b = rng.randint(3, 40), rng.randint(2, 30)
        setup = f"{name} the {role} has {a} {item} and gets {b} more"
        q, ans = (
            f"{name} the {role} has {a} {item} and gets {b} more. How many {item} does {name} have now?",
            a + b,
        )
        worked = f"{name} starts with {a} {item} and gets {b} more, so {a} + {b} = {a + b}."
    elif op == "sub":
        a = rng.randint(10, 60)
        b = rng.randint(2, a - 2)
        setup = f"{name} the {role} has {a} {item} and gives away {b}"
        q, ans = f"{name} the {role} has {a} {item} and gives away {b}. How many {item} are left?", a - b
        worked = f"{name} starts with {a} {item} and gives away {b}, so {a} - {b} = {a - b}."
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        setup = f"{name} the {role} fills {a} baskets with {b} {item} each"
        q, ans = (
            f"{name} the {role} fills {a} baskets with {b} {item} each. How many {item} is that in all?",
            a * b,
        )
        worked = f"There are {a} baskets with {b} {item} each, so {a} * {b} = {a * b}."
    return WordProblem(name, role, item, q, ans, setup, worked)


@dataclass
class ShopScene:
    """A game-master turn: the player's gold, what they buy, and the gold left (the reference)."""

    genre: str
    setting: str
    gold: int
    inventory: dict[str, int]
    item: str
    count: int
    price: int

    @property
    def left(self) -> int:
        return self.gold - self.count * self.price

    @property
    def worked(self) -> str:
        cost, plural = self.count * self.price, self.item if self.count == 1 else f"{self.item}s"
        return (
            f"{self.count} {plural} at {self.price} gold each cost "
            f"{self.count} * {self.price} = {cost} gold. "
            f"The player has {self.gold} - {cost} = {self.left} gold left."
        )


def shop_scene(rng: random.Random) -> ShopScene:
    item, price = rng.choice(SHOP)
    count = rng.randint(1, 4)
    gold = count * price + rng.randint(0, 25)
    others = rng.sample([s for s, _ in SHOP if s != item], 3)
    inventory = {"gold": gold, **{o: rng.randint(1, 3) for o in others}}
    return ShopScene(rng.choice(GENRES), rng.choice(SETTINGS), gold, inventory, item, count, price)
