"""The dialogue benchmark (DIALOGUE.md, "How it is judged"): a scripted conversation of 10,000+ words with a
shopkeeper NPC, the game's typed events along it, and probes of eight kinds asked at three distances from the
turn that set their fact; every arm answers every probe as a fork (nothing is appended), inside one prompt
budget, and answers are scored by rules (no LLM judge).

The script (``build_script``) is both sides of the conversation, written here: player small talk and
beats (purchases, moves, trades, planted player facts and their later updates) whose text also describes
the event, so an arm without the event log can still read them while they are in its window; the NPC's
lines are authored (``Dialogue.record``), so every arm sees the same history. Distances are in turns (a turn
= the player's message and the reply): near = 2 (inside an 8-message window), far = 8 (2x), very far = 20
(5x).

Arms (``ARMS``): ``plain`` — the card as a system prompt plus the latest whole turns that fit, the model
alone; ``anchor`` — the SillyTavern recipe on our engine: card, lorebook and rolling recap, no tools, no
fact ledger, no recall; ``one_pathway`` — the full engine with the voice forced onto the narrative
pathway; ``engine`` — the full engine (tools, pinned facts on the reasoning gear, ledger, recall, repair).
The decode settings (reply length, gear sampling, repetition penalty, seed) are the same for all.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..dialogue.cards import parse_card
from ..dialogue.context import card_text
from ..dialogue.state import EventLog, parse_event
from ..dialogue.style import example_lines, similarity
from ..dialogue.turn import Dialogue
from ..inference.engine import Request
from ..inference.sampling import SamplingParams, for_model, parse_gear_sampling
from .consistency import fit_window

KINDS = ("state", "persona", "player_fact", "update", "multi_hop", "temporal", "logic", "abstain")
DISTANCES = {"near": 2, "far": 8, "very_far": 20}  # turns from the fact to the probe (window: 4 turns)
ARMS = ("plain", "anchor", "one_pathway", "engine")
STEERING = {  # the dialogue arms: settings for the probe turn
    "anchor": {"grounding": False, "ledger": False, "recall": 0, "repair": False},
    "one_pathway": {"routing": "force=narrative"},
    "engine": {},
}
OWNER = "bench"

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Mira",
        "description": "{{char}} keeps the lamp shop at the crossroads of the old road. She sells lamps, "
        "lamp oil, rope and candles, and she greets {{user}} by name.",
        "personality": "wry, thrifty, warm under the dry humour, fond of travellers' stories",
        "mes_example": "<START>\n{{char}}: Lamps for the dark road, seven gold apiece, and I won't haggle.\n"
        "{{char}}: Mind the step, {{user}}. The last one who didn't is still limping.",
        "character_book": {
            "entries": [
                {"keys": ["road"], "content": "The old road is haunted after dark.", "insertion_order": 1},
                {
                    "keys": ["lamp", "lamps"],
                    "content": "Mira's lamps burn a whole night.",
                    "insertion_order": 2,
                },
                {
                    "keys": ["oil"],
                    "content": "The oil comes from the olive groves south.",
                    "insertion_order": 3,
                },
                {
                    "keys": ["rope"],
                    "content": "Mira's rope is hemp, braided by her uncle.",
                    "insertion_order": 4,
                },
                {"keys": ["ferry"], "content": "The ferryman takes only gold.", "insertion_order": 5},
                {"keys": ["storm"], "content": "Storms come from the western hills.", "insertion_order": 6},
                {"keys": ["well"], "content": "The well behind the shop is dry.", "insertion_order": 7},
                {
                    "keys": ["bridge"],
                    "content": "The river bridge fell two winters ago.",
                    "insertion_order": 8,
                },
                {"keys": ["wolves"], "content": "Wolves keep to the pine wood.", "insertion_order": 9},
                {"keys": ["market"], "content": "Market day is every seventh day.", "insertion_order": 10},
                {"keys": ["candle", "candles"], "content": "Candles are beeswax.", "insertion_order": 11},
                {"keys": [], "content": "The shop is called The Last Light.", "constant": True},
            ]
        },
    },
}
SMALL_TALK = (
    "The wind is picking up out on the road tonight.",
    "Tell me about the travellers who came through this week.",
    "Have you heard anything about the wolves in the pine wood?",
    "The market was crowded this morning, I could barely move.",
    "How long have you kept this shop?",
    "Do people still cross where the bridge used to be?",
    "I passed the dry well behind your shop on my way in.",
    "The storm clouds over the western hills look heavy.",
    "What is the strangest thing a traveller ever traded you?",
    "My boots are soaked through from the river path.",
    "Is the road north any safer than it was last winter?",
    "I saw a fox watching me from the hedge by the crossroads.",
)
NPC_LINES = (
    "Travellers come and go, and every one of them swears the road is longer than it looks.",
    "I keep the lamps trimmed and the shutters oiled, and I do not ask where people are going.",
    "My uncle braided rope in the back room for forty years, and his knots still hold.",
    "The wolves keep to the pine wood unless the winter is hard, and this one looks hard.",
    "Market day brings more gossip than coin, but I listen to both.",
    "The bridge fell two winters ago and nobody has found the money to raise it again.",
    "The well behind the shop has been dry since before I was born, so do not bother with a bucket.",
    "Storms roll in from the western hills, and you can smell them an hour before the rain.",
    "A tinker once traded me a clock that only ran backwards, and I still have it on the shelf.",
    "The crossroads sees everyone sooner or later, which is why I built the shop here.",
    "I light the window lamp at dusk so nobody walks past the door in the dark.",
    "Some nights the road is so quiet that I can hear the river from the counter.",
    "People think a lamp shop is a simple trade, but oil, wick and glass all have their moods.",
    "The ferryman takes only gold, and he counts it twice, and he never smiles.",
    "I have sold lamps to soldiers, pilgrims and one very polite thief.",
    "Bring the lamp back if the wick smokes, and I will trim it for nothing.",
)


@dataclass
class Turn:
    message: str
    reply: str
    events: list[dict] = field(default_factory=list)  # pushed by the game before the player's message


@dataclass
class Probe:
    after_turn: int  # asked once this many turns of the script are in the history
    kind: str
    distance: str  # near | far | very_far
    question: str
    expected: tuple[str, ...] = ()  # contains: any of these ...
    wrong: tuple[str, ...] = ()  # ... and none of these; yesno: expected = ("yes",) or ("no",)
    rule: str = "contains"  # contains | yesno | abstain

    @property
    def key(self) -> str:
        return f"{self.after_turn}:{self.kind}:{self.question}"


@dataclass
class Script:
    player: str
    initial: list[dict]
    turns: list[Turn]
    probes: list[Probe]

    @property
    def words(self) -> int:
        return sum(len(t.message.split()) + len(t.reply.split()) for t in self.turns)


def _beats(candles: int, colour: tuple[str, str]) -> dict[int, tuple[str, list[dict]]]:
    """turn -> (what the player says, the events the game pushes): ~25 events over the conversation."""
    return {
        5: ("My sister is called Marta, and she sends her regards.", []),
        10: ("I will buy a coil of rope, please. Here are three gold.", [_take("gold", 3), _give("rope", 1)]),
        11: ("And two flasks of lamp oil, two gold each.", [_take("gold", 4), _give("oil", 2)]),
        20: ("One lamp, please, for seven gold.", [_take("gold", 7), _give("lamp", 1)]),
        25: ("The reeve asked me to find the lost pilgrim.", [_quest("pilgrim", "started")]),
        30: (f"My cousin gave me {candles} candles for the road.", [_give("candles", candles)]),
        35: ("A storm flattened the hedge by the crossroads.", [{"type": "happening", "text": "a storm"}]),
        40: ("I put the brass key in the drawer of your counter.", [_move("key", "in the drawer")]),
        41: ("I left the map on the table by the window.", [_move("map", "on the table")]),
        52: ("I took the key out of the drawer and hung it on the hook.", [_move("key", "on the hook")]),
        56: ("I hung the map on the hook too, next to the key.", [_move("map", "on the hook")]),
        60: (f"My favourite colour is {colour[0]}, by the way.", []),
        70: ("I traded my lamp to a pilgrim for a compass.", [_take("lamp", 1), _give("compass", 1)]),
        80: ("I paid the ferryman twenty gold to carry a letter.", [_take("gold", 20)]),
        90: (f"Actually, my favourite colour is {colour[1]}.", []),
        95: ("I found the pilgrim sleeping in the chapel.", [_quest("pilgrim", "found")]),
        106: ("I sold both flasks of oil back for four gold.", [_take("oil", 2), _give("gold", 4)]),
    }


def _give(item: str, qty: int) -> dict:
    return {"type": "inventory.add", "item": item, "qty": qty}


def _take(item: str, qty: int) -> dict:
    return {"type": "inventory.remove", "item": item, "qty": qty}


def _move(item: str, where: str) -> dict:
    return {"type": "move", "item": item, "location": where}


def _quest(quest: str, flag: str) -> dict:
    return {"type": "quest", "quest": quest, "flag": flag, "value": True}


def _at(fact_turn: int, kind: str, question: str, **kw) -> list[Probe]:
    return [Probe(fact_turn + d, kind, name, question, **kw) for name, d in DISTANCES.items()]


def build_script(seed: int = 0, min_words: int = 10_000) -> Script:
    """Both sides of the conversation, its events and its probes; ``seed`` varies the amounts, the planted
    values and the small talk."""
    rng = random.Random(seed)
    gold, candles = rng.randint(44, 52), rng.choice((4, 5, 6))
    colour = tuple(rng.sample(("green", "red", "blue", "yellow"), 2))
    spent = 3 + 4 + 7 + 20
    left = gold - spent  # after the ferry (turn 80), before the oil is sold back (turn 106)
    initial = [
        _give("gold", gold),
        {"type": "set", "key": "price.lamp", "value": 7},
        {"type": "set", "key": "price.rope", "value": 3},
        {"type": "set", "key": "price.oil", "value": 2},
        _give("key", 1),
        _give("map", 1),
    ]
    beats = _beats(candles, colour)
    word = {4: "four", 5: "five", 6: "six"}
    can = max(1, left // 7)  # lamps at 7 the purse still covers after the ferry (left is 10..18)
    probes = [
        *_at(3, "persona", "What is your name?", expected=("mira",)),
        *_at(4, "persona", "What do you sell in this shop?", expected=("lamp", "lamps")),
        *_at(5, "player_fact", "What is my sister called?", expected=("marta",)),
        *_at(11, "temporal", "What did I buy first?", expected=("rope",), wrong=("oil", "lamp")),
        *_at(30, "state", "How many candles do I have?", expected=(str(candles), word[candles])),
        *_at(52, "update", "Where is the key now?", expected=("hook",), wrong=("drawer",)),
        *_at(56, "multi_hop", "Is the key in the same place as the map?", expected=("yes",), rule="yesno"),
        *_at(80, "state", "How much gold do I have?", expected=(str(left),), wrong=(str(left + 20),)),
        *_at(80, "logic", f"Can I afford {left // 7 + 1} lamps?", expected=("no",), rule="yesno"),
        *_at(
            80, "logic", f"Can I afford {can} lamp{'s' if can > 1 else ''}?", expected=("yes",), rule="yesno"
        ),
        *_at(82, "abstain", "How many swords do I have?", rule="abstain"),
        *_at(83, "abstain", "Where did I leave my silver ring?", rule="abstain"),
        *_at(90, "update", "What is my favourite colour?", expected=(colour[1],), wrong=(colour[0],)),
    ]
    opening = f"Good evening, Mira. My name is Arin, and I have {gold} gold in my purse."
    turns, n = [], 0
    while n < max(max(beats), max(p.after_turn for p in probes)) or _words(turns) < min_words:
        n += 1
        said, events = beats.get(n, ("", []))
        talk = rng.choice(SMALL_TALK)
        message = opening if n == 1 else f"{said} {talk}".strip()
        turns.append(Turn(message, " ".join(rng.sample(NPC_LINES, 4)), list(events)))
    return Script("Arin", initial, turns, sorted(probes, key=lambda p: p.after_turn))


def _words(turns: list[Turn]) -> int:
    return sum(len(t.message.split()) + len(t.reply.split()) for t in turns)


# ---------------------------------------------------------------- scoring (rules, no judge)

_NUMBER = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
_AFFIRM = re.compile(r"\b(?:yes|yeah|you can|can afford|would be left|same place|both)\b", re.I)
_DENY = re.compile(r"\b(?:no|not|cannot|can't|short|too little|isn't|aren't|different)\b", re.I)
_ENUMERATOR = re.compile(r"(?:^|(?<=[\s;:]))\d+[.)](?=\s|$)", re.M)  # list markers: "1." / "2)"
_PLACES = re.compile(r"\b(?:drawer|hook|table|pocket|chest|shelf|well|bag|box|under|behind|inside)\b", re.I)


def _has(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", text, re.I) is not None


def correct(answer: str, p: Probe) -> bool:
    if p.rule == "yesno":
        yes, no = bool(_AFFIRM.search(answer)), bool(_DENY.search(answer))
        return (yes and not no) if p.expected == ("yes",) else (no and not yes)
    if p.rule == "abstain":  # correct unless it asserts a count above zero or a place
        if "how many" in p.question.lower():
            counted = _ENUMERATOR.sub(" ", answer)  # "1. You have no swords." numbers a list, not swords
            counts = [int(x) for x in re.findall(r"\b\d+\b", counted)]
            counts += [v for w, v in _NUMBER.items() if _has(counted, w)]
            return not any(c > 0 for c in counts)
        return not _PLACES.search(answer)
    return any(_has(answer, e) for e in p.expected) and not any(_has(answer, w) for w in p.wrong)


# ---------------------------------------------------------------- running the arms


@dataclass
class Answer:
    arm: str
    probe: Probe
    text: str
    correct: bool
    seconds: float
    processed_tokens: int | None = None
    tool_calls: list[dict] = field(default_factory=list)
    contradictions: int = 0
    seed: int = 0
    style: float | None = None  # similarity to the card's example lines (dialogue/style.py)

    @property
    def key(self) -> str:  # the same probe of the same seed across arms (the pairing)
        return f"{self.seed}:{self.probe.key}"


class Bench:
    """One seed's run: the script replayed into a session, every arm asked every probe at its turn."""

    def __init__(self, dialogue: Dialogue, settings: dict, budget: int = 1024):
        self.d, self.engine = dialogue, dialogue.engine
        self.settings = {"budget": budget, **settings}
        self.budget = budget

    def run(
        self, script: Script, arms=ARMS, progress: Callable[[int, int], None] | None = None
    ) -> list[Answer]:
        cid = self.d.store.add_character(OWNER, parse_card(CARD))
        sid = self.d.create_session(OWNER, cid, script.player, script.initial, self.settings)
        st = self.d.settings(self.settings)
        card = parse_card(CARD)
        answers: list[Answer] = []
        due = list(script.probes)
        total = len(due) * len(arms)
        for n, turn in enumerate(script.turns, 1):
            if turn.events:
                self.d.push_events(OWNER, sid, turn.events)
            self.d.record(OWNER, sid, turn.message, turn.reply)
            while due and due[0].after_turn == n:
                p = due.pop(0)
                for arm in arms:
                    answers.append(self._ask(arm, sid, card, st, p))
                    if progress:
                        progress(len(answers), total)
        return answers

    def _ask(self, arm: str, sid: int, card, st, p: Probe) -> Answer:
        t0 = time.perf_counter()
        lines = example_lines(card, "Arin")
        if arm == "plain":
            text = self.plain(sid, card, st, p.question)
            seconds = time.perf_counter() - t0
            return Answer(arm, p, text, correct(text, p), seconds, style=similarity(text, lines))
        r = self.d.turn(OWNER, sid, p.question, probe=True, steering=STEERING[arm])
        x = r.x_qwythos
        return Answer(
            arm,
            p,
            r.reply,
            correct(r.reply, p),
            time.perf_counter() - t0,
            x["context"]["processed_tokens"],
            x["grounding"]["tool_calls"],
            len(x["consistency"]["contradictions"]),
            style=similarity(r.reply, lines),
        )

    def plain(self, sid: int, card, st, question: str) -> str:
        """The model alone: the card as the system prompt and the latest whole turns that fit the budget."""
        history = [{"role": m["role"], "content": m["content"]} for m in self.d.store.messages(sid)]
        head = [{"role": "system", "content": card_text(card, "Arin")}]
        ask = {"role": "user", "content": question}
        messages, _ = fit_window(head, history, ask, self.engine.encode_chat, self.budget)
        ids = self.engine.encode_chat(messages)
        gs = for_model(parse_gear_sampling(st.gear_sampling), self.engine.pathways)  # the engine's decode
        params = SamplingParams(
            max_new_tokens=st.reply_tokens, repetition_penalty=st.repetition_penalty, seed=st.seed
        )
        routing, _ = self.engine.routing(st.routing)
        (c,) = self.engine.generate([Request(ids, params, gear_sampling=gs)], routing, trace=False)
        return c.text


def live_contradictions(dialogue: Dialogue, script: Script, settings: dict, turns: int = 40) -> dict:
    """Live mode: the script's events and player lines, the NPC's own replies (the full engine) for
    ``turns`` turns; how many replies still contradict the state after the engine's repair."""
    cid = dialogue.store.add_character(OWNER, parse_card(CARD))
    sid = dialogue.create_session(OWNER, cid, script.player, script.initial, settings)
    bad, per_turn = 0, []
    for turn in script.turns[:turns]:
        if turn.events:
            dialogue.push_events(OWNER, sid, turn.events)
        r = dialogue.turn(OWNER, sid, turn.message)
        bad += bool(r.x_qwythos["consistency"]["contradictions"])  # the engine's check, after its repair
        per_turn.append(r.x_qwythos["context"]["processed_tokens"])
    return {"turns": turns, "contradicting_replies": bad, "rate": bad / max(1, turns), "processed": per_turn}


def valid_tool_call(call: dict) -> bool:
    """A tool call the engine made is schema-valid: a known tool, an item name, whole-number arguments."""
    if call.get("tool") not in ("inventory", "where_is", "can_afford", "player_fact") or not isinstance(
        call.get("item"), str
    ):
        return False
    if call["tool"] == "can_afford":
        return all(isinstance(call.get(k), int) and call[k] >= 0 for k in ("qty", "price_each"))
    return True


def check_script(script: Script) -> None:
    """Every event of the script replays on the state (the script is consistent with the game rules)."""
    log = EventLog()
    for e in script.initial + [e for t in script.turns for e in t.events]:
        log.append(parse_event(e))
