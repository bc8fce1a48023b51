"""The voice lock's measure: how close a reply's style is to the card's example lines.

Character-trigram profiles (lower-cased, punctuation kept: "seven gold apiece" and "won't haggle" are style)
compared by cosine — deterministic, cheap, no model. A reply under the session's ``voice_floor`` has drifted:
the next turn raises the narrative bias and re-injects the example lines into the post-history note.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from .cards import Card, expand_macros

_SPEAKER = re.compile(r"^\s*(?:\{\{char\}\}|\{\{user\}\}|[\w ]{1,30}):\s*", re.M)


def example_lines(card: Card, user: str = "you") -> list[str]:
    """The character's own example lines: mes_example's {{char}} lines, then first_mes."""
    lines = []
    for raw in card.mes_example.splitlines():
        if raw.strip().startswith("{{char}}:") or raw.strip().startswith(f"{card.name}:"):
            lines.append(expand_macros(_SPEAKER.sub("", raw, count=1).strip(), card.name, user))
    if card.first_mes.strip():
        lines.append(expand_macros(card.first_mes.strip(), card.name, user))
    return [x for x in lines if x]


def _profile(text: str) -> Counter:
    t = " " + re.sub(r"\s+", " ", text.lower()).strip() + " "
    return Counter(t[i : i + 3] for i in range(len(t) - 2))


def similarity(text: str, lines: list[str]) -> float | None:
    """Cosine of the reply's trigram profile with the example lines' (None: no examples or no text)."""
    if not lines or not text.strip():
        return None
    a, b = _profile(text), _profile(" ".join(lines))
    dot = sum(v * b[k] for k, v in a.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return round(dot / norm, 4) if norm else None
