"""Consistency over a long conversation: persona facts and world state along a scripted 10,000+-word chat.

The issue asks for this to be measured through the dialogue engine (memory, summaries, a persona card).
That engine does not exist yet, so the scripted conversation and its probes are built here and scored with
the model's *plain chat*: the system prompt (the persona card) plus as many of the latest turns as fit in
``context_tokens``, then the probe question. Persona facts live in the system prompt, so they are always
visible; world-state facts (where the key is now, how many candles burn) are only visible while the turn
that set them is in the window, and the results say which probes that held for. When the dialogue engine
lands, the same script and probes score it unchanged.

A probe is correct when the answer names the current value and none of the values it had before
(``correct_answer``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

PERSONA_NAME = "Captain Ilse Varga"
PERSONA = (
    "You are Captain Ilse Varga, the keeper of the lighthouse on Gull Rock. Stay in character and answer "
    "briefly. Facts about you: your old ship is called the Sea Lark; you were born in Tallinn; your dog is "
    "called Pepper; you are 58 years old; your favourite food is smoked herring; you are afraid of "
    "thunderstorms."
)
PERSONA_PROBES = (
    ("What was the name of your old ship?", ("sea lark",)),
    ("Where were you born?", ("tallinn",)),
    ("What is your dog called?", ("pepper",)),
    ("How old are you?", ("58", "fifty-eight", "fifty eight")),
    ("What is your favourite food?", ("herring",)),
    ("What are you afraid of?", ("thunder",)),
)

# World state: (item, question, [(event text, value), ...]) — each event moves the item to a new value.
WORLD = (
    (
        "key",
        "Where is the brass key now? Answer in a few words.",
        (
            ("I put the brass key in the blue drawer of your desk, so we don't lose it.", "drawer"),
            ("I took the brass key out of the drawer and hung it on the hook by the door.", "hook"),
            ("I moved the brass key from the hook into my coat pocket, just in case.", "pocket"),
        ),
    ),
    (
        "chart",
        "Where is the sea chart now? Answer in a few words.",
        (
            ("I left the sea chart on the kitchen table.", "table"),
            ("I rolled up the sea chart and slid it into the tin tube.", "tube"),
            ("I took the sea chart out of the tube and pinned it to the wall above the stove.", "wall"),
        ),
    ),
    (
        "candles",
        "How many candles are burning now? Answer with a number.",
        (
            ("I lit three candles in the window.", "3"),
            ("I lit two more candles, so five are burning now.", "5"),
            ("The draught blew out one candle, so four are burning.", "4"),
        ),
    ),
    (
        "boat",
        "Where is the rowing boat tied now? Answer in a few words.",
        (
            ("I tied the rowing boat at the north pier.", "north"),
            ("The tide was rising, so I moved the rowing boat to the south cove.", "south"),
        ),
    ),
    (
        "visitor",
        "Who is arriving on Friday? Answer with a name.",
        (
            ("My sister Marta is arriving on Friday on the supply ferry.", "marta"),
            ("Marta cannot come after all; my cousin Tobias is arriving on Friday instead.", "tobias"),
        ),
    ),
)
_NUMBER_WORDS = {"3": "three", "5": "five", "4": "four"}

_SMALL_TALK = (
    "The wind has changed again; I can hear it in the chimney.",
    "Tell me about the winters you spent out here.",
    "What do the gulls do when a storm is coming?",
    "I brought fresh bread from the mainland this morning.",
    "Do the fishermen still wave when they pass the rock?",
    "The stairs up to the lamp room feel longer every day.",
    "What was the strangest thing the sea ever washed up here?",
    "I found an old logbook under the bench in the workshop.",
    "How do you keep the lamp glass so clean?",
    "The radio said the fog will lift by evening.",
    "Did you ever think of leaving the rock for good?",
    "I saw seals on the far rocks when I came over.",
)
_LORE = (
    "The lamp was first lit in the spring of a year when the harbour froze solid.",
    "Every keeper before me wrote the weather in the same green ledger, in the same careful hand.",
    "On clear nights you can count the lights of the villages along the coast.",
    "The fog bell rings on its own when the swell comes from the west.",
    "The gulls gather on the gallery rail an hour before any storm, as if to warn us.",
    "Fishermen leave a bottle of cider on the landing stage at midsummer, for luck.",
    "The old foghorn was so loud that it cracked a window in the chapel on the mainland.",
    "The supply ferry comes every second Tuesday, unless the sea has other plans.",
    "There is a stone in the cellar with the names of every keeper carved into it.",
    "The lens turns on a bath of mercury, smooth and silent as a sleeping cat.",
    "In the great storm the spray reached the lamp room, sixty metres above the sea.",
    "Children from the village once rowed out to ask if the light was ever lonely.",
    "The winter nights are long, and the ledger fills with the names of passing ships.",
    "A whale once rested in the channel for days and sang through the fog.",
    "The paint on the tower is renewed every few summers, white and red in bands.",
    "We trim the wicks at dusk and again at midnight, the way it has always been done.",
    "Some nights the sea is so calm that the beam seems to walk on the water.",
    "The wreck of a schooner still lies off the far reef, visible at low tide.",
    "The workshop smells of brass polish, tar and old rope.",
    "My grandmother said the light should be kept as if every ship carried a friend.",
)


@dataclass
class Probe:
    position: int  # the probe follows this many messages of the conversation
    kind: str  # persona | world
    question: str
    expected: tuple[str, ...]  # any of these in the answer ...
    stale: tuple[str, ...] = ()  # ... and none of these (earlier values)
    fact_message: int | None = None  # message index that set the current value (world probes)
    item: str = ""


@dataclass
class Script:
    system: str
    messages: list[dict[str, str]]
    probes: list[Probe] = field(default_factory=list)

    @property
    def words(self) -> int:
        return sum(len(m["content"].split()) for m in self.messages)


def _reply(rng: random.Random) -> str:
    return " ".join(rng.sample(_LORE, 4))


def build_script(min_words: int = 10_000, seed: int = 0) -> Script:
    """The scripted conversation (both sides written here) with its world events and probes."""
    rng = random.Random(seed)
    events = [(item, i, text, value) for item, _, evs in WORLD for i, (text, value) in enumerate(evs)]
    order = sorted(range(len(events)), key=lambda k: (events[k][1], rng.random()))  # first values first
    spacing = max(2, min_words // 85 // (len(events) + 1))  # ~85 words a turn: events span the whole chat
    n_turns = 0
    messages: list[dict[str, str]] = []
    set_at: dict[str, list[tuple[int, str]]] = {item: [] for item, _, _ in WORLD}
    pending = [events[k] for k in order]
    while sum(len(m["content"].split()) for m in messages) < min_words or pending:
        n_turns += 1
        user = rng.choice(_SMALL_TALK)
        if pending and n_turns % spacing == 0:
            item, _, text, value = pending.pop(0)
            user = f"{text} {user}"
            set_at[item].append((len(messages), value))
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": _reply(rng)})
    probes = _probes(messages, set_at)
    return Script(PERSONA, messages, probes)


def _probes(messages: list[dict], set_at: dict[str, list[tuple[int, str]]]) -> list[Probe]:
    """Persona and world probes interleaved; world probes at the end (facts at every distance) and midway."""
    end = len(messages)
    persona = [
        Probe(end * (k + 1) // len(PERSONA_PROBES), "persona", q, exp)
        for k, (q, exp) in enumerate(PERSONA_PROBES)
    ]
    persona = [
        Probe(p.position - p.position % 2, p.kind, p.question, p.expected) for p in persona
    ]  # after an assistant turn
    world = []
    for item, question, _ in WORLD:
        history = set_at[item]
        for position in (end, history[-1][0] + 2 if len(history) > 1 else None):
            if position is None:
                continue
            before = [(i, v) for i, v in history if i < position]
            (fact, value), stale = before[-1], {v for _, v in before[:-1]} - {before[-1][1]}
            world.append(
                Probe(position, "world", question, _variants(value), tuple(sorted(stale)), fact, item)
            )
    out = []
    for k in range(max(len(persona), len(world))):  # interleave, so --limit keeps both kinds
        out += [p[k] for p in (persona, world) if k < len(p)]
    return out


def _variants(value: str) -> tuple[str, ...]:
    return (value, _NUMBER_WORDS[value]) if value in _NUMBER_WORDS else (value,)


def correct_answer(answer: str, probe: Probe) -> bool:
    text = answer.lower()
    stale = [v for s in probe.stale for v in _variants(s)]
    return any(e in text for e in probe.expected) and not any(s in text for s in stale)


def fit_window(
    head: list[dict], history: list[dict], question: dict, encode, budget: int
) -> tuple[list[dict], int]:
    """head + the latest whole turns of ``history`` that fit + question; (messages, first kept).

    ``encode(messages) -> token ids`` (the chat template); ``budget`` is the prompt's token limit."""
    lo, hi = 0, len(history) // 2  # the earliest whole turn (start = 2k) whose window fits
    while lo < hi:
        mid = (lo + hi) // 2
        if len(encode([*head, *history[2 * mid :], question])) <= budget:
            hi = mid
        else:
            lo = mid + 1
    start = 2 * lo
    return [*head, *history[start:], question], start


def window(script: Script, probe: Probe, encode, budget: int) -> tuple[list[dict], int]:
    """The plain-chat messages for a probe: system + the latest whole turns that fit (fit_window)."""
    head = [{"role": "system", "content": script.system}]
    question = {"role": "user", "content": probe.question}
    return fit_window(head, script.messages[: probe.position], question, encode, budget)


def summarise(results: list[tuple[Probe, str, bool]]) -> dict:
    """results: (probe, answer, whether its fact was inside the window) -> accuracies."""

    def acc(rows):
        return sum(correct_answer(a, p) for p, a, _ in rows) / len(rows) if rows else None

    persona = [r for r in results if r[0].kind == "persona"]
    world = [r for r in results if r[0].kind == "world"]
    visible = [r for r in world if r[2]]
    return {
        "consistency_persona": acc(persona),
        "consistency_world": acc(world),
        "consistency_world_in_window": acc(visible),
        "consistency_world_visible_share": len(visible) / len(world) if world else None,
        "consistency_probes": len(results),
    }
