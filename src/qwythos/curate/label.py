"""Step 5, pathway labelling: rules + dataset category priors, then an embedding classifier for the unsure.

Log-odds for "reasoning" add up: a prior from the dataset (GSM8K, Dolly's category, a named source), and
weighted cue counts (calculations, '####', step words vs. story words, dialogue, past-tense narration). A
response whose paragraphs split clearly into both pathways becomes ``mixed`` and keeps character spans.
Records still unsure after the rules (confidence < ``embed_below``) get the log-odds of a logistic
classifier on sentence embeddings, trained on this run's confident records plus built-in prototypes.
A label the input already carries (the synthetic set) is kept when ``trust_source`` is on.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources

import numpy as np

from ..records import MIXED, Record
from .config import LabelConfig
from .ngrams import tokens_bytes

# Cues: (log-odds per hit, max hits counted). Single words are counted from the word list in one pass;
# phrases by substring counts; only the few real patterns are regexes (on the lower-cased text).
REASONING_WORDS = {
    w.encode(): (weight, 3)
    for words, weight in (
        ("therefore thus hence altogether solve calculate compute define", 0.6),
        ("equation formula prove proof theorem", 1.0),
        ("percent average total sum difference ratio", 0.4),
    )
    for w in words.split()
}
NARRATIVE_WORDS = {
    w.encode(): (weight, 3)
    for words, weight in (
        ("story tale poem chapter character fairy dragon princess knight wizard kingdom village", 0.6),
        ("imagine describe once suddenly", 0.4),
    )
    for w in words.split()
}
REASONING_PHRASES = [
    ("```", 1.5, 1),
    ("\\boxed", 1.0, 1),
    ("\\frac", 1.0, 1),
    ("first,", 0.6, 3),
    ("then,", 0.6, 3),
    ("next,", 0.6, 3),
    ("so the answer", 0.6, 1),
    ("in total", 0.6, 3),
    ("how many", 0.7, 3),
    ("how much", 0.7, 3),
    ("what is the", 0.7, 3),
    ("find the", 0.7, 3),
    ("explain why", 0.7, 3),
    ("per hour", 0.4, 3),
    ("per day", 0.4, 3),
    ("per week", 0.4, 3),
    ("%", 0.4, 3),
]
NARRATIVE_PHRASES = [("once upon a time", 3.0, 1), ("long ago", 0.4, 3), ("the end", 0.4, 3)]
REASONING_PATTERNS = [
    (re.compile(r"####\s*-?\$?\d"), 3.0, 1),
    (re.compile(r"\d[\d.,]*\s*[-+*/×x÷]\s*\(?\d[\d.,]*\)?\s*="), 1.0, 3),
    (re.compile(r"\bstep \d"), 0.6, 3),
]
NARRATIVE_PATTERNS = [
    (
        re.compile(
            r"\bwrite (?:me )?(?:a|an|the)? ?(?:short |funny |sad )?(?:story|poem|tale|scene|dialogue|fable)"
        ),
        2.0,
        1,
    ),
    (
        re.compile(
            r"[\"\u201c][a-z][^\"\u201d]{2,}[,.!?][\"\u201d]\s*(?:said|asked|whispered|replied|shouted|cried)"
        ),
        1.0,
        3,
    ),
]
_DIGIT = re.compile(r"\d")
PRONOUNS = {b"she", b"he", b"they", b"i"}
NARRATION = {
    w.encode() for w in "walked looked smiled whispered ran turned felt wondered sighed laughed".split()
}
_CUE_WORDS = set(REASONING_WORDS) | set(NARRATIVE_WORDS)


def rule_score(text: str) -> float:
    """Log-odds that ``text`` is reasoning (positive) rather than narrative (negative), from the cues."""
    low = text.lower()
    z = 0.0
    ws = tokens_bytes(low).split()
    present = _CUE_WORDS.intersection(ws)  # set operations and list.count stay in C
    for w in present:
        n = min(ws.count(w), 3)
        z += REASONING_WORDS[w][0] * n if w in REASONING_WORDS else -NARRATIVE_WORDS[w][0] * n
    if NARRATION.intersection(ws) and PRONOUNS.intersection(ws):
        narration = sum(1 for a, b in zip(ws, ws[1:], strict=False) if a in PRONOUNS and b in NARRATION)
        z -= 0.6 * min(narration, 3)
    for phrases, sign in ((REASONING_PHRASES, 1.0), (NARRATIVE_PHRASES, -1.0)):
        for phrase, weight, cap in phrases:
            if phrase in low:
                z += sign * weight * min(low.count(phrase), cap)
    digits = _DIGIT.search(low) is not None
    for patterns, sign in ((REASONING_PATTERNS, 1.0), (NARRATIVE_PATTERNS, -1.0)):
        for pattern, weight, cap in patterns:
            if sign > 0 and not digits:
                continue
            if sign < 0 and '"' not in low and "\u201c" not in low and "write" not in low:
                continue
            z += sign * weight * min(len(pattern.findall(low)), cap)
    return z


def prior_score(record: Record, cfg: LabelConfig) -> float:
    schema = record.meta.get("schema", "")
    keys = [schema, f"{schema}:{record.meta.get('category', '')}", f"source:{record.source}"]
    z = 0.0
    for key in keys:
        if key in cfg.priors:
            z += cfg.prior_strength * (1.0 if cfg.priors[key] == "reasoning" else -1.0)
    return z


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def segments(text: str) -> list[tuple[int, int]]:
    """Paragraph (or line) spans of a response, as character offsets."""
    return [(m.start(), m.end()) for m in re.finditer(r"[^\n]+(?:\n(?!\s*\n)[^\n]+)*", text)]


def mixed_spans(record: Record, cfg: LabelConfig, sure: float = 1.0) -> list[dict] | None:
    """Spans over the last assistant message when its paragraphs clearly split into both pathways."""
    index = max(i for i, m in enumerate(record.messages) if m["role"] == "assistant")
    content = record.messages[index]["content"]
    if "\n" not in content.strip():
        return None  # one paragraph: nothing to split
    labelled = []
    for a, b in segments(content):
        z = rule_score(content[a:b])
        labelled.append((a, b, "reasoning" if z >= sure else "narrative" if z <= -sure else None))
    total = max(1, len(content))
    share = {p: sum(b - a for a, b, q in labelled if q == p) / total for p in ("reasoning", "narrative")}
    if min(share.values()) < cfg.mixed_min_share:
        return None
    spans: list[dict] = []
    last = next(q for _, _, q in labelled if q is not None)
    for a, b, q in labelled:  # unsure paragraphs join the pathway before them
        q = q or last
        if spans and spans[-1]["pathway"] == q:
            spans[-1]["end"] = b
        else:
            spans.append({"message": index, "start": a, "end": b, "pathway": q})
        last = q
    return spans


def label_rules(record: Record, cfg: LabelConfig) -> bool:
    """Label ``record`` in place from priors and rules; True if it still needs the embedding classifier."""
    if cfg.trust_source and record.meta.get("pathway_from") == "source":
        return False
    z_prior = prior_score(record, cfg)
    z_rules = rule_score(record.prompt + "\n" + record.response)
    record.meta["label"] = {"prior": round(z_prior, 3), "rules": round(z_rules, 3)}
    spans = mixed_spans(record, cfg)
    if spans is not None:
        record.pathway, record.spans = MIXED, spans
        covered = sum(s["end"] - s["start"] for s in spans)
        record.pathway_confidence = round(min(1.0, covered / max(1, len(record.response))), 4)
        return False
    record.pathway, record.pathway_confidence = from_logodds(z_prior + z_rules)
    return record.pathway_confidence < cfg.embed_below


def from_logodds(z: float) -> tuple[str, float]:
    """(pathway, confidence) from the log-odds of reasoning."""
    p = sigmoid(z)
    return ("reasoning" if z >= 0 else "narrative"), round(max(p, 1 - p), 4)


# ---------------------------------------------------------------- the embedding classifier


def prototypes() -> dict[str, list[str]]:
    """Built-in example prompts per pathway (the router-initialisation prompts shipped with qwythos)."""
    return json.loads(resources.files("qwythos.data").joinpath("router_prompts.json").read_text())


def embed_text(prompt: str, response: str) -> str:
    return (prompt[:400] + "\n" + response[:400]).strip()


class PathwayClassifier:
    """L2-regularised logistic regression on embeddings: log-odds of reasoning."""

    def __init__(self, steps: int = 300, lr: float = 0.5, l2: float = 1e-3):
        self.steps, self.lr, self.l2 = steps, lr, l2
        self.w: np.ndarray | None = None
        self.b = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> PathwayClassifier:
        w, b = np.zeros(x.shape[1], dtype=np.float64), 0.0
        pos = max(1.0, float(y.sum()))
        neg = max(1.0, float(len(y) - y.sum()))
        weight = np.where(y == 1, len(y) / (2 * pos), len(y) / (2 * neg))  # balanced classes
        for _ in range(self.steps):
            p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
            g = weight * (p - y)
            w -= self.lr * (x.T @ g / len(y) + self.l2 * w)
            b -= self.lr * float(g.mean())
        self.w, self.b = w, b
        return self

    def logodds(self, x: np.ndarray) -> np.ndarray:
        assert self.w is not None, "fit first"
        return x @ self.w + self.b
