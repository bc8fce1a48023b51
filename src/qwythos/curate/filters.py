"""Step 4, heuristic quality filters fit for chat data, and the soft quality score used by selection.

Each filter looks at one record and returns None (keep) or (reason, evidence). They run in the order of
FILTERS; the first that fires names the reject. The quality score in [0, 1] multiplies mild penalties
(repetition, boilerplate, odd characters, very short answers) and an input's own ``meta.quality``.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable

from ..records import Record
from ..text import gsm_answer, normalise_number
from .config import QualityConfig
from .ngrams import tokens_bytes

Verdict = tuple[str, str] | None

REFUSALS = re.compile(
    r"\bas an ai(?: language)? model\b|\bas a (?:large )?language model\b"
    r"|\bi(?:'m| am) (?:sorry|afraid),? but i (?:can(?:no|')t|am unable|'m unable|won't)\b"
    r"|\bi (?:cannot|can't|am unable to|'m unable to|am not able to) (?:help|assist|provide|comply|fulfil)"
    r"|\bi do not have (?:personal )?(?:opinions|feelings|emotions|the ability)\b",
    re.IGNORECASE,
)
BOILERPLATE = re.compile(
    r"\bi hope this helps\b|\bfeel free to ask\b|\blet me know if you have any (?:other |more )?questions\b"
    r"|^(?:sure|certainly|of course)[!,.]|\bgreat question\b",
    re.IGNORECASE | re.MULTILINE,
)
_BOILERPLATE_KEYS = (
    "hope this helps",
    "feel free",
    "let me know",
    "sure",
    "certainly",
    "of course",
    "great question",
)
_NUMBER = re.compile(r"\d")
_CALC = re.compile(r"\d\s*[-+*/×x÷]\s*\(?\d[\d.,]*\)?\s*=")
_ANSWER_PHRASE = re.compile(r"\banswer(?: is|:)\s*\**\s*\$?(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_LETTER = re.compile(r"[^\W\d_]")
_NON_LATIN = re.compile(r"[^\W\d_A-Za-z\u00c0-\u024f]")
_PLAIN = (string.ascii_letters + string.digits + string.whitespace + ".,;:!?'\"()$%-").encode()
ENGLISH = frozenset(
    w.encode()
    for w in (
        "the a an and or but of to in on at for with by from as is are was were be been it its this that "
        "these those he she they we you i his her their our your my me him them us not no so if then than "
        "there what which who when where how why all any some can will would should could do does did have "
        "has had"
    ).split()
)


@functools.lru_cache(maxsize=8)
def repetition(text: str, n: int = 4) -> float:
    """Share of the word n-grams that repeat an earlier one (metrics.repetition_rate, on plain words)."""
    w = tokens_bytes(text).split()
    grams = list(zip(*(w[k:] for k in range(n)), strict=False))
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def is_math_reasoning(record: Record) -> bool:
    """A reasoning sample that should end in a final number: a GSM8K row, or numbers in and a calculation."""
    if record.meta.get("schema") == "gsm8k" or "answer" in record.meta:
        return True
    return len(_NUMBER.findall(record.prompt)) >= 2 and bool(_CALC.search(record.response))


def final_answer(text: str, mode: str) -> str | None:
    """The final answer: '#### N' (strict); flexible also reads '\\boxed{N}' and 'The answer is N'."""
    strict = gsm_answer(text, strict=True)
    if strict is not None or mode == "strict":
        return strict
    for pattern in (_BOXED, _ANSWER_PHRASE):
        found = pattern.findall(text)
        if found and (value := normalise_number(found[-1])) is not None:
            return value
    return None


# ---------------------------------------------------------------- the filters


def too_long(r: Record, cfg: QualityConfig) -> Verdict:
    n = sum(len(m["content"]) for m in r.messages)
    return ("too_long", f"{n} chars > quality.max_chars={cfg.max_chars}") if n > cfg.max_chars else None


def too_short(r: Record, cfg: QualityConfig) -> Verdict:
    n = len(r.response.split())
    return ("too_short", f"{n} response words") if n < cfg.min_response_words else None


def length_ratio(r: Record, cfg: QualityConfig) -> Verdict:
    p, a = len(r.prompt.split()), len(r.response.split())
    if not p:
        return None
    ratio = a / p
    if cfg.min_length_ratio and ratio < cfg.min_length_ratio:
        return "length_ratio_low", f"response/prompt words {ratio:.3f} < {cfg.min_length_ratio}"
    if cfg.max_length_ratio and ratio > cfg.max_length_ratio:
        return "length_ratio_high", f"response/prompt words {ratio:.1f} > {cfg.max_length_ratio}"
    return None


def repetitive(r: Record, cfg: QualityConfig) -> Verdict:
    rate = repetition(r.response)
    return ("repetitive", f"{rate:.2f} of 4-grams repeat") if rate > cfg.max_repetition else None


def refusal(r: Record, cfg: QualityConfig) -> Verdict:
    m = REFUSALS.search(r.response) if cfg.refusals else None
    return ("refusal", m.group(0)) if m else None


def boilerplate(r: Record, cfg: QualityConfig) -> Verdict:
    if not cfg.boilerplate:
        return None
    found = BOILERPLATE.findall(r.response)
    return ("boilerplate", "; ".join(found)) if len(found) >= cfg.boilerplate else None


def not_english(r: Record, cfg: QualityConfig) -> Verdict:
    if cfg.language == "any":
        return None
    text = r.text
    if not text.isascii():
        letters = len(_LETTER.findall(text))
        if letters and len(_NON_LATIN.findall(text)) / letters > 0.3:
            return "not_english", "mostly non-Latin letters"
    ws = tokens_bytes(text).split()
    n = len(ws) - sum(map(bytes.isdigit, ws))  # numbers are neither English nor not
    if n < 8:
        return None
    share = sum(map(ENGLISH.__contains__, ws)) / n
    return ("not_english", f"{share:.2f} English function words") if share < cfg.min_english else None


def no_final_answer(r: Record, cfg: QualityConfig) -> Verdict:
    if cfg.final_answer == "off" or r.pathway != "reasoning" or not is_math_reasoning(r):
        return None
    if final_answer(r.response, cfg.final_answer) is None:
        return "no_final_answer", r.response[-120:]
    return None


def wrong_answer(r: Record, cfg: QualityConfig) -> Verdict:
    ref = r.meta.get("answer")
    if not cfg.reference_answer or ref is None:
        return None
    expected = normalise_number(str(ref))
    got = final_answer(r.response, "flexible") or gsm_answer(r.response, strict=False)
    if expected is not None and got != expected:
        return "wrong_answer", f"final answer {got} != reference {expected}"
    return None


FILTERS: list[Callable[[Record, QualityConfig], Verdict]] = [
    too_long,
    too_short,
    length_ratio,
    not_english,
    refusal,
    boilerplate,
    repetitive,
    no_final_answer,
    wrong_answer,
]


def first_failure(record: Record, cfg: QualityConfig) -> Verdict:
    for f in FILTERS:
        if (verdict := f(record, cfg)) is not None:
            return verdict
    return None


def quality_score(record: Record) -> float:
    """Soft quality in [0, 1] of a record that passed the filters."""
    response = record.response
    q = (1.0 - repetition(response)) ** 2
    low = response.lower()
    if any(k in low for k in _BOILERPLATE_KEYS):
        q *= 0.9 ** min(3, len(BOILERPLATE.findall(response)))
    n = len(response.split())
    q *= min(1.0, 0.5 + n / 40)  # answers of a few words are worth less
    raw = response.encode("utf-8", "surrogatepass")
    odd = len(raw.translate(None, _PLAIN))  # bytes that are not letters, digits, spaces or common punctuation
    q *= 0.7 if response and odd / len(response) > 0.3 else 1.0
    given = record.meta.get("quality")
    if isinstance(given, (int, float)) and 0 <= given <= 1:
        q = (q * given) ** 0.5
    return float(max(0.0, min(1.0, q)))
