"""The verifier on right, wrong and unparseable answers; narrative checks; self-consistency."""

from __future__ import annotations

import pytest

from qwythos.synth.config import ScoreConfig
from qwythos.synth.verify import (
    check_narrative,
    equivalent,
    extract_answer,
    majority,
    parse_judge,
    trim_to_sentence,
    verify_solution,
    with_final_line,
)
from qwythos.text import false_steps

RIGHT = "Tom starts with 12 apples and buys 7 more, so 12 + 7 = 19.\n#### 19"


def test_right_answer_is_verified():
    v = verify_solution(RIGHT, "19")
    assert (v.ok, v.reason, v.answer) == (True, "verified", "19")


def test_wrong_answer_is_rejected():
    v = verify_solution(RIGHT.replace("#### 19", "#### 18"), "19")
    assert (v.ok, v.reason, v.answer) == (False, "wrong_answer", "18")


@pytest.mark.parametrize("text", ["I am not sure how to do this.", "", "#### N."])
def test_unparseable_answer_is_rejected(text):
    v = verify_solution(text, "19")
    assert (v.ok, v.reason) == (False, "no_answer")


def test_strict_extraction_needs_the_marker():
    text = "12 + 7 = 19, so the answer is 19."
    assert extract_answer(text, "flexible") == "19"
    assert extract_answer(text, "strict") is None
    assert verify_solution(text, "19", extract="strict").reason == "no_answer"
    assert verify_solution(text, "19", extract="flexible").ok


def test_a_false_step_rejects_a_lucky_answer():
    text = "3 + 28 = 66, and then 66 - 35 = 31.\n#### 31"
    assert false_steps(text) == ["3 + 28 = 66"]
    assert verify_solution(text, "31").reason == "wrong_step"
    assert verify_solution(text, "31", check_steps=False).ok


@pytest.mark.parametrize(
    "pred, ref, same",
    [
        ("$1,234", "1234", True),
        ("1234.0", "1234", True),
        ("0.5", "1/2", True),
        ("\\frac{1}{2}", "0.5", True),
        ("x+1", "1+x", True),
        ("2x+2", "2(x+1)", True),
        ("2", "3", False),
        ("banana", "3", False),
    ],
)
def test_equivalence_by_number_or_math_verify(pred, ref, same):
    assert equivalent(pred, ref) is same


def test_self_consistency_majority():
    texts = ["so #### 7", "#### 7", "#### 8", "no idea"]
    assert majority(texts, min_agreement=0.4) == ("7", 0.5)
    assert majority(texts, min_agreement=0.5) == (None, 0.5)  # needs more than half
    assert majority(["#### 7", "#### 8"], min_agreement=0.0)[0] is None  # one vote is no consensus


def test_final_line_is_rewritten_once():
    assert with_final_line("a so 4.\n#### 4.\n", "4") == "a so 4.\n#### 4"
    assert with_final_line("2 + 2 = 4", "4") == "2 + 2 = 4\n#### 4"


STORY = (
    "The old keeper climbed the stairs with a lantern in her hand. Snow tapped on the glass, and far "
    "below a small boat fought the waves. She lit the great lamp, counted the seconds between flashes, "
    "and waited. At dawn the boat was safe in the harbour, and a boy waved a red scarf at the tower."
)


def test_narrative_checks_each_have_a_reason():
    cfg = ScoreConfig(min_words=20, max_words=120)
    assert check_narrative(STORY, cfg, 20, "lantern").reason == "ok"
    assert check_narrative(STORY, cfg, 20, "violin").reason == "missing_word"
    assert check_narrative("Too short.", cfg, 20).reason == "too_short"
    assert check_narrative(" ".join([STORY] * 3), cfg, 20).reason == "too_long"
    assert check_narrative("the cat sat on the mat " * 8, cfg, 20).reason == "repetitive"
    assert check_narrative("I'm sorry, but as an AI I cannot write " + STORY, cfg, 20).reason == "refusal"
    assert check_narrative("", cfg, 0).reason == "empty"


def test_trim_drops_an_unfinished_sentence():
    assert trim_to_sentence('She smiled. "Go on!" he said. And then the') == 'She smiled. "Go on!" he said.'
    assert trim_to_sentence("no end at all") == "no end at all"


def test_judge_scores_parse():
    assert parse_judge("8") == 8.0
    assert parse_judge("Score: 10/10") == 10.0
    assert parse_judge("great story") is None
