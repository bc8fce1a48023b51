"""Optional LLM-judge rubric for narrative generations, through any OpenAI-compatible endpoint (httpx).

Each (prompt, story) pair is sent to ``{base_url}/chat/completions`` with a fixed rubric; the judge answers
with JSON scores from 1 to 5 for coherence, creativity, fluency and instruction following. A reply that
cannot be read, or a request that fails after one retry, counts as an error: it is reported, never raised,
so a flaky judge cannot sink an evaluation.
"""

from __future__ import annotations

import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor

from .config import JudgeSection

log = logging.getLogger(__name__)

CRITERIA = ("coherence", "creativity", "fluency", "instruction_following")
RUBRIC = (
    "You are a strict judge of short creative writing. Read the request and the response, then rate the "
    "response from 1 (very poor) to 5 (excellent) on each criterion: coherence (it makes sense and hangs "
    "together), creativity (fresh, specific, surprising), fluency (grammatical, natural), "
    "instruction_following (does what the request asked). Reply with only a JSON object, e.g. "
    '{"coherence": 3, "creativity": 2, "fluency": 4, "instruction_following": 3}.'
)
_JSON = re.compile(r"\{[^{}]*\}", re.S)


def parse_scores(text: str) -> dict[str, float] | None:
    """The first JSON object in the reply with every criterion as a number in [1, 5]; None otherwise."""
    for m in _JSON.finditer(text or ""):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        try:
            scores = {c: float(obj[c]) for c in CRITERIA}
        except (KeyError, TypeError, ValueError):
            continue
        if all(1 <= v <= 5 for v in scores.values()):
            return scores
    return None


def judge(pairs: list[tuple[str, str]], cfg: JudgeSection) -> dict:
    """{judge_<criterion>: mean, judge_n, judge_errors} over (prompt, response) pairs."""
    import httpx

    headers = {"Content-Type": "application/json"}
    if key := os.environ.get(cfg.api_key_env):
        headers["Authorization"] = f"Bearer {key}"
    url = cfg.base_url.rstrip("/") + "/chat/completions"
    pairs = pairs[: cfg.max_samples]

    with httpx.Client(timeout=cfg.timeout, headers=headers) as client:

        def one(pair: tuple[str, str]) -> dict[str, float] | None:
            prompt, response = pair
            body = {
                "model": cfg.model,
                "temperature": 0,
                "max_tokens": 100,
                "messages": [
                    {"role": "system", "content": RUBRIC},
                    {"role": "user", "content": f"Request:\n{prompt}\n\nResponse:\n{response}"},
                ],
            }
            for attempt in range(2):
                try:
                    r = client.post(url, json=body)
                    r.raise_for_status()
                    return parse_scores(r.json()["choices"][0]["message"]["content"])
                except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as e:
                    log.warning("judge request failed (attempt %d): %s", attempt + 1, e)
            return None

        with ThreadPoolExecutor(max(1, cfg.concurrency)) as pool:
            scores = list(pool.map(one, pairs))
    good = [s for s in scores if s is not None]
    out: dict = {f"judge_{c}": (sum(s[c] for s in good) / len(good) if good else None) for c in CRITERIA}
    out.update(judge_n=len(good), judge_errors=len(scores) - len(good))
    return out
