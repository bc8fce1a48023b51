"""Checking candidates: reasoning answers programmatically, narrative replies by cheap metrics.

Reasoning: the final answer (after '####', or the last number with ``extract='flexible'``) must equal the
reference under math-verify / sympy, and every written step like '12 + 7 = 19' must be true; without a
reference, a self-consistency majority over k samples decides. Narrative: length, repetition, distinct
bigrams, the required word, refusals, coherence (mean token loss under a reference model), an optional
judge score. Every check returns a reason when it fails.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from ..text import distinct_n, false_steps, gsm_answer, normalise_number, repetition_rate
from .config import ScoreConfig

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- reasoning answers


def extract_answer(text: str, mode: str = "flexible") -> str | None:
    """The final answer as written: '#### N' first, then (flexible) the last number in the text."""
    strict = gsm_answer(text, strict=True)
    if strict is not None or mode == "strict":
        return strict
    return gsm_answer(text, strict=False)


def equivalent(prediction: str, reference: str) -> bool:
    """Numbers compare exactly ('1,234' == '1234.0'); anything else by math-verify (sympy) equivalence."""
    a, b = normalise_number(prediction), normalise_number(reference)
    if a is not None and b is not None:
        return a == b
    try:
        from math_verify import parse, verify
    except ImportError:  # the [synth] extra is missing: fall back to plain sympy
        return _sympy_equal(prediction, reference)

    def parsed(text: str) -> list:  # a bare expression parses as LaTeX math; prose parses to nothing
        return (
            parse(text if "$" in text or "\\" in text else f"${text}$") if re.search(r"\d|\\", text) else []
        )

    gold, pred = parsed(reference), parsed(prediction)
    return bool(gold and pred and verify(gold, pred))


def _sympy_equal(a: str, b: str) -> bool:
    import sympy

    try:
        return sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0
    except (sympy.SympifyError, TypeError, SyntaxError):
        return False


@dataclass
class Verdict:
    ok: bool
    reason: str  # "verified" or why not: no_answer | wrong_answer | wrong_step | no_consensus | ...
    answer: str | None = None


def verify_solution(
    text: str, reference: str, extract: str = "flexible", check_steps: bool = True
) -> Verdict:
    """Right, wrong or unparseable: the answer against the reference, then the written steps."""
    answer = extract_answer(text, extract)
    if answer is None:
        return Verdict(False, "no_answer")
    if not equivalent(answer, reference):
        return Verdict(False, "wrong_answer", answer)
    if check_steps and false_steps(text):
        return Verdict(False, "wrong_step", answer)
    return Verdict(True, "verified", answer)


def majority(
    texts: list[str], min_agreement: float = 0.5, extract: str = "flexible"
) -> tuple[str | None, float]:
    """Self-consistency: the most common answer and its share of all k samples, if it clears the bar."""
    answers = [extract_answer(t, extract) for t in texts]
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, 0.0
    top, votes = counts.most_common(1)[0]
    share = votes / len(texts)
    return (top if votes >= 2 and share > min_agreement else None), share


def strip_final_line(text: str) -> str:
    """The solution without its '#### ...' line (and anything after it)."""
    return re.sub(r"\n?\s*####.*$", "", text.strip(), flags=re.S).rstrip()


def with_final_line(text: str, answer: str) -> str:
    """The solution ending in exactly one '#### N' line with the verified answer."""
    return f"{strip_final_line(text)}\n#### {answer}"


# ---------------------------------------------------------------- narrative replies

_REFUSAL = re.compile(r"\b(as an ai|i'm sorry|i am sorry|i cannot|i can't help|language model)\b", re.I)
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)*]*(?=\s|$)")


def trim_to_sentence(text: str) -> str:
    """Drop an unfinished last sentence (a reply cut by the token budget)."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].rstrip() if ends else text


@dataclass
class Scored:
    ok: bool
    reason: str  # "ok" or the first failed check
    metrics: dict[str, float] = field(default_factory=dict)


def narrative_score(m: dict[str, float]) -> float:
    """Best-of-n order: diverse, not repetitive, fluent (low loss), judged well when judged."""
    s = m.get("distinct2", 0.0) - m.get("repetition", 0.0) - 0.25 * m.get("loss", 0.0)
    return s + 0.1 * m["judge"] if "judge" in m else s


def check_narrative(text: str, cfg: ScoreConfig, min_words: int, word: str | None = None) -> Scored:
    """The cheap checks, in order; coherence and the judge are added later by the caller."""
    n_words = len(text.split())
    metrics = {
        "words": float(n_words),
        "repetition": repetition_rate(text, 4),
        "distinct2": distinct_n([text], 2),
    }
    checks = [
        (not text.strip(), "empty"),
        (n_words < min_words, "too_short"),
        (n_words > cfg.max_words, "too_long"),
        (_REFUSAL.search(text) is not None, "refusal"),
        (metrics["repetition"] > cfg.max_repetition, "repetitive"),
        (metrics["distinct2"] < cfg.min_distinct2, "low_diversity"),
        (word is not None and word.lower() not in text.lower(), "missing_word"),
    ]
    for failed, reason in checks:
        if failed:
            return Scored(False, reason, metrics)
    return Scored(True, "ok", metrics)


JUDGE_PROMPT = (
    "Rate the following text from 1 to 10 for fluency, coherence and creativity. "
    "Reply with the number only.\n\nTask: {task}\n\nText:\n{text}"
)


def parse_judge(text: str) -> float | None:
    m = re.search(r"\b(10|[1-9])(?:\.\d+)?\b", text)
    return float(m.group(0)) if m else None


class CoherenceScorer:
    """Mean token loss (nats) of a reply given its prompt under a reference model: high = incoherent."""

    def __init__(self, engine, batch_size: int = 4):
        self.engine, self.batch_size = engine, batch_size

    def losses(self, items: list[tuple[list[dict[str, str]], str]]) -> list[float]:
        import torch
        import torch.nn.functional as F

        tok, model = self.engine.tokenizer, self.engine.model
        seqs = []
        for messages, reply in items:
            prompt = self.engine.encode_chat(messages)
            response = tok.encode(reply, add_special_tokens=False)[: self.engine.max_len - len(prompt)]
            seqs.append((prompt, response))
        out = [0.0] * len(items)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]) + len(seqs[i][1]))
        starts = range(0, len(order), self.batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc="coherence", unit="batch", mininterval=5, disable=len(starts) < 8):
                chunk = order[start : start + self.batch_size]
                T = max(len(seqs[i][0]) + len(seqs[i][1]) for i in chunk)
                ids = torch.zeros(len(chunk), T, dtype=torch.long)  # right padding: causal, so harmless
                target = torch.full((len(chunk), T), -100, dtype=torch.long)
                for row, i in enumerate(chunk):
                    p, r = seqs[i]
                    ids[row, : len(p) + len(r)] = torch.tensor(p + r)
                    target[row, len(p) : len(p) + len(r)] = torch.tensor(r, dtype=torch.long)
                logits = model(ids).logits[:, :-1].float()  # (B, T-1, V)
                nll = F.cross_entropy(logits.transpose(1, 2), target[:, 1:], reduction="none")  # (B, T-1)
                counts = (target[:, 1:] != -100).sum(1).clamp_min(1)
                for row, i in enumerate(chunk):
                    out[i] = float(nll[row].sum() / counts[row])
        return out
