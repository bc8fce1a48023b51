"""Grounding a turn in the game state, and checking a reply against it — deterministic, no model needed.

``detect`` reads the player's message for the world's item names (everything the event log ever named, and
priced items) and the question asked of them: how many (``inventory``), where (``where_is``), can I afford N
(``can_afford``, prices from ``set`` events keyed ``price.<item>``). ``ground`` answers each with the state's
tools into verified facts, each with the id of the event it rests on. ``check_claims`` reads a reply for
possession claims ("you have 5 gold"), item–place claims ("the key is under the mat") and the speaker's
name, and returns each that contradicts the state or the card.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .state import Fact, GameState, can_afford, inventory, norm, where_is

NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "a couple of": 2,
    "a pair of": 2,
    "no": 0,
}
_QTY = r"(\d+|" + "|".join(sorted((re.escape(w) for w in NUMBER_WORDS), key=len, reverse=True)) + r")"
PRICE_KEY = "price."  # a ``set`` event {"key": "price.lamp", "value": 7} prices a lamp at 7 (currency below)
CURRENCY_KEY = "currency"  # a ``set`` event naming the currency item; "gold" by default


@dataclass(frozen=True)
class Query:
    tool: str  # inventory | where_is | can_afford
    item: str
    qty: int | None = None  # can_afford: how many
    price_each: int | None = None  # can_afford: from price.<item>


@dataclass(frozen=True)
class Contradiction:
    claim: str  # the words of the reply that claim it
    kind: str  # quantity | location | persona
    subject: str
    said: str
    truth: str
    source_event: int | None


def quantity(word: str) -> int:
    return int(word) if word.isdigit() else NUMBER_WORDS[word.lower()]


def currency(state: GameState) -> str:
    return str(state.values.get(CURRENCY_KEY, "gold"))


def prices(state: GameState) -> dict[str, int]:
    return {
        k[len(PRICE_KEY) :].strip(): v
        for k, v in state.values.items()
        if k.startswith(PRICE_KEY) and isinstance(v, int) and not isinstance(v, bool)
    }


def known_items(state: GameState) -> list[str]:
    """Every item name the log ever used, the currency and priced items (longest first, for matching)."""
    names = set(state.names.values()) | {currency(state)} | set(prices(state))
    return sorted(names, key=len, reverse=True)


def item_pattern(name: str) -> str:
    """An item's name with a plural ending allowed ('lamp' matches 'lamps', 'torches' matches 'torch')."""
    stem = re.escape(norm(name).removesuffix("es") if norm(name).endswith("ches") else norm(name).rstrip("s"))
    return rf"\b{stem}(?:s|es)?\b"


def mentioned(text: str, state: GameState) -> list[str]:
    low, found = text.lower(), []
    for name in known_items(state):
        if re.search(item_pattern(name), low) and not any(norm(name) in norm(f) for f in found):
            found.append(name)
    return found


_WHERE = re.compile(r"\bwhere\b|\blocat|\bput\b|\bhid", re.I)
_COUNT = re.compile(r"\bhow (?:many|much)\b|\bdo i (?:have|still have|own|carry)\b|\bcount\b|\bleft\b", re.I)
_AFFORD = re.compile(r"\bafford\b|\bcan i (?:buy|get|purchase)\b|\benough\b", re.I)


_UNKNOWN_COUNT = re.compile(r"\bhow many ([a-z][\w' -]{0,30}?) do i (?:have|own|carry|hold)\b", re.I)
_UNKNOWN_WHERE = re.compile(
    r"\bwhere (?:is|are|did i (?:leave|put|hide|drop)) (?:my |the |a )?([a-z][\w' -]{0,30}?)\s*\??$", re.I
)
_MINE = re.compile(r"\bwhat(?:'s| is) my ([a-z][\w ]{0,30}?)(?: (called|named))?\s*\?", re.I)


def detect(text: str, state: GameState) -> list[Query]:
    """The state questions a player's message asks (an empty list: the turn does not touch state). A count
    or place asked of an item the log never named is answered too: nothing held, nothing recorded."""
    queries: list[Query] = []
    items = mentioned(text, state)
    if not items:
        if m := _UNKNOWN_COUNT.search(text):
            return [Query("inventory", m.group(1).strip())]
        if m := _UNKNOWN_WHERE.search(text.strip()):
            return [Query("where_is", m.group(1).strip())]
    price, low = {norm(k): v for k, v in prices(state).items()}, text.lower()
    for item in items:
        if _AFFORD.search(text) and norm(item) in price:
            m = re.search(_QTY + r"\s+(?:more\s+)?" + item_pattern(item).removeprefix(r"\b"), low)
            qty = quantity(m.group(1)) if m else 1
            queries.append(Query("can_afford", item, max(qty, 1), price[norm(item)]))
        elif _WHERE.search(text) and (state.location(item) is not None or state.held(item)):
            queries.append(Query("where_is", item))
        elif _COUNT.search(text) or text.rstrip().endswith("?"):
            queries.append(Query("inventory", item))
    return queries


def ground(queries: list[Query], state: GameState) -> list[Fact]:
    facts = []
    for q in queries:
        if q.tool == "inventory":
            facts.append(inventory(state, q.item))
        elif q.tool == "where_is":
            facts.append(where_is(state, q.item))
        else:
            facts.append(can_afford(state, q.price_each or 0, q.qty or 1, currency(state), q.item))
    return facts


def ask_ledger(text: str, ledger: list[dict]) -> list[tuple[Query, Fact]]:
    """'What is my favourite colour?', 'What is my sister called?': the player's own latest statement from
    the fact ledger, as a verified fact (nothing recorded: no fact, the model answers alone)."""
    m = _MINE.search(text)
    if not m:
        return []
    attr = m.group(1).strip().lower().replace("favorite", "favourite")
    row = next((r for r in ledger if r["subject"] == "player" and r["attribute"].lower() == attr), None)
    if row is None:
        return []
    said = f"Your {attr} is {'called ' if m.group(2) else ''}{row['value']}."
    return [(Query("player_fact", attr), Fact("player", attr, row["value"], None, said))]


# ---------------------------------------------------------------- the claim checker

_HAVE = r"\byou(?:'ve| have| hold| carry| own|'ve got| have got| still have| now have)\s+(?:only\s+|just\s+)?"
_PLACE = (
    r"\s+(?:is|lies|sits|was left|was put|rests)\s+((?:in|under|on|at|behind|beside|inside|near)\b[^.,;!?]*)"
)
_NOWHERE = "not recorded"  # the truth of a place claim about an item no event placed
_NAME = re.compile(r"\b(?:my name is|i am called|call me|i'm called)\s+([A-Z][\w'-]+)", re.I)


def _place_words(place: str) -> set[str]:
    return {
        w for w in re.findall(r"[a-z]+", place.lower()) if w not in {"the", "a", "an", "of", "my", "your"}
    }


def check_claims(
    reply: str, state: GameState, char_name: str | None = None, asked: Iterable[str] = ()
) -> list[Contradiction]:
    """Claims in ``reply`` contradicting the state (possession counts, item places) or the card (the name).
    ``asked``: the items this turn's tools were asked about, checked even when the log never named them —
    "You have 3 swords" after "You have no swords", any place for an item nothing records a place for."""
    found: list[Contradiction] = []
    low = reply.lower().replace("it's", "it is")
    names = known_items(state)
    asked, known = list(asked), {norm(n) for n in names}
    asked_keys = {norm(x) for x in asked}
    unknown = [x for x in dict.fromkeys(asked) if norm(x) not in known]
    for item in names + unknown:
        pat = item_pattern(item).removeprefix(r"\b")
        for m in re.finditer(_HAVE + _QTY + r"\s+(?:\w+\s+)?" + pat, low):
            said, held = quantity(m.group(1)), state.held(item)
            if said != held:
                source = state.source.get(("inventory", norm(item)))
                found.append(Contradiction(m.group(0), "quantity", item, str(said), str(held), source))
        place = state.location(item)
        if place is None:
            if norm(item) in asked_keys and not state.held(item):
                for m in re.finditer(rf"\b(?:(?:the|your|my)\s+{pat}|it)" + _PLACE, low):
                    found.append(
                        Contradiction(m.group(0), "location", item, m.group(1).strip(), _NOWHERE, None)
                    )
            continue
        for m in re.finditer(r"\b(?:the|your|my)\s+" + pat + _PLACE, low):
            said = m.group(1).strip()
            truth = _place_words(place)
            if truth and not (truth & _place_words(said)):
                source = state.source.get(("location", norm(item)))
                found.append(Contradiction(m.group(0), "location", item, said, place, source))
    if char_name:
        for m in _NAME.finditer(reply):
            if norm(m.group(1)) != norm(char_name.split()[0]):
                found.append(Contradiction(m.group(0), "persona", "name", m.group(1), char_name, None))
    return found
