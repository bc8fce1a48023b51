"""Text metrics and answer parsing, below the stages: curation, synthesis and evaluation all use them.

GSM8K answers: strict reads the number after ``####``; flexible takes the last number in the text
(lm-evaluation-harness's two filters). Worked solutions: ``false_steps`` finds written arithmetic that is
wrong ('12 + 7 = 20'). Narrative: distinct-n, self-BLEU and repetition rate.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from fractions import Fraction

_NUMBER = r"-?[$]?\d[\d,]*(?:\.\d+)?"
_STRICT = re.compile(r"####\s*(" + _NUMBER + r")")
_ANY = re.compile(_NUMBER)
_WORD = re.compile(r"\w+|[^\w\s]")


def normalise_number(text: str) -> str | None:
    """'$1,234.50' -> '1234.5'; None if not a number."""
    t = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    return str(value.numerator) if value.denominator == 1 else str(float(value))


def gsm_answer(text: str, strict: bool = True) -> str | None:
    """The final answer of a GSM8K-style solution: after '####' (strict) or the last number (flexible)."""
    if strict:
        m = _STRICT.search(text)
        return normalise_number(m.group(1)) if m else None
    numbers = _ANY.findall(text)
    return normalise_number(numbers[-1]) if numbers else None


def gsm_match(prediction: str, reference: str, strict: bool = True) -> bool:
    """Exact match of the prediction's answer with the reference (a solution with '####' or a number)."""
    ref = gsm_answer(reference, strict=True) or normalise_number(reference)
    pred = gsm_answer(prediction, strict=strict)
    return ref is not None and pred == ref


_NUM = r"\d(?:[\d,]*\d)?(?:\.\d+)?"
_OP, _SP = r"[-+*/×x÷]", r"[ \t]*"  # a step is one line
# 'a op b [op c ...] = d', operands may be negative ('-4 - 2 = -6', '3 - -1 = 4'); a stated value followed by
# another operation ('= 23 * 40 ...') is the start of a chain, not a result, and is not read
_STEP = re.compile(
    rf"(?<![\w.])(-?{_NUM}(?:{_SP}{_OP}{_SP}-?{_NUM})+){_SP}={_SP}\$?(-?{_NUM})(?![\d.]*{_SP}{_OP}{_SP}\d)"
)


def false_steps(text: str) -> list[str]:
    """Written arithmetic that is wrong: '19 / 7 = 2.25' (true up to rounding to the digits shown)."""
    import sympy

    bad = []
    for m in _STEP.finditer(text):
        expr = m.group(1).replace(",", "").replace("×", "*").replace("x", "*").replace("÷", "/")
        stated = m.group(2).replace(",", "")
        try:
            value = sympy.Rational(sympy.sympify(expr, rational=True))
        except (sympy.SympifyError, TypeError, ZeroDivisionError, SyntaxError):
            continue
        decimals = len(stated.split(".")[1]) if "." in stated else 0
        tolerance = sympy.Rational(1, 2 * 10**decimals) if decimals else sympy.Rational(0)
        if abs(value - sympy.Rational(stated)) > tolerance:
            bad.append(m.group(0))
    return bad


def leaks_reasoning(text: str) -> bool:
    """A story that slips into worked-solution form: a '#### N' answer line or written 'a op b = c'."""
    return bool(_STRICT.search(text) or _STEP.search(text))


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / all n-grams over the texts (Li et al., 2016)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(text: str, n: int = 4) -> float:
    """Share of n-grams in one text that repeat an earlier n-gram of the same text."""
    grams = ngrams(words(text), n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def bleu(hypothesis: list[str], references: list[list[str]], max_n: int = 4) -> float:
    """Sentence BLEU with +1 smoothing (Lin & Och) against several references."""
    if not hypothesis:
        return 0.0
    log_p = 0.0
    for n in range(1, max_n + 1):
        hyp = Counter(ngrams(hypothesis, n))
        max_ref: Counter = Counter()
        for ref in references:
            max_ref |= Counter(ngrams(ref, n))
        overlap = sum(min(c, max_ref[g]) for g, c in hyp.items())
        log_p += math.log((overlap + 1) / (sum(hyp.values()) + 1))
    closest = min((abs(len(r) - len(hypothesis)), len(r)) for r in references)[1]
    bp = 1.0 if len(hypothesis) > closest else math.exp(1 - closest / len(hypothesis))
    return bp * math.exp(log_p / max_n)


def self_bleu(texts: list[str], max_n: int = 4) -> float:
    """Mean BLEU of each text against all the others (Zhu et al., 2018): lower is more diverse."""
    toks = [words(t) for t in texts]
    if len(toks) < 2:
        return 0.0
    return sum(bleu(h, toks[:i] + toks[i + 1 :], max_n) for i, h in enumerate(toks)) / len(toks)
