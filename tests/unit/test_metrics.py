from qwythos.text import (
    distinct_n,
    false_steps,
    gsm_answer,
    gsm_match,
    leaks_reasoning,
    repetition_rate,
    self_bleu,
)


def test_gsm_strict_and_flexible():
    text = "She pays 3 * 4 = 12 dollars.\n#### 12"
    assert gsm_answer(text) == "12" and gsm_answer(text, strict=False) == "12"
    assert gsm_answer("The answer is $1,200.") is None
    assert gsm_answer("The answer is $1,200.", strict=False) == "1200"
    assert gsm_match("so #### 7.0", "#### 7") and not gsm_match("#### 8", "#### 7")
    assert gsm_match("it is 7", "7", strict=False) and not gsm_match("it is 7", "7", strict=True)
    assert gsm_answer("no numbers here", strict=False) is None


def test_diversity_metrics_order_texts_sensibly():
    same = ["the cat sat on the mat"] * 3
    varied = ["the cat sat on the mat", "a dragon slept under old hills", "rain fell over the quiet harbour"]
    assert distinct_n(varied, 2) > distinct_n(same, 2)
    assert self_bleu(same) > 0.9 > self_bleu(varied)
    assert repetition_rate("go go go go go go go") > repetition_rate("one two three four five six seven")


def test_steps_allow_rounding_to_the_digits_shown():
    assert false_steps("19 / 7 = 2.71 and 2 x 3 = 6 and 1,200 * 2 = 2,400") == []
    assert false_steps("19 / 7 = 2.25") == ["19 / 7 = 2.25"]


def test_steps_read_negative_operands_and_skip_chains():
    assert false_steps("4 - 1 = 3\n3 - 7 = -4\n-4 - 2 = -6\n3 - -1 = 4") == []
    assert false_steps("-4 - 2 = -2") == ["-4 - 2 = -2"]
    assert false_steps("-4 - 2 = 2") == ["-4 - 2 = 2"]  # passed as '4 - 2 = 2' when the sign was not read
    assert false_steps("23 * 45 = 23 * 40 + 23 * 5") == []  # a chain's middle is not a stated result


def test_story_leakage_is_worked_solution_form_in_a_story():
    assert leaks_reasoning("The fox had 3 hens. 3 + 4 = 7, so she had seven.")
    assert leaks_reasoning("And so it ended.\n#### 12")
    assert not leaks_reasoning("The fox counted 3 hens and 4 geese by the river, seven in all.")
    assert not leaks_reasoning("In 1999 the war ended; the year 2001 - a new age.")
