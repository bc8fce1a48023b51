from qwythos.text import distinct_n, gsm_answer, gsm_match, repetition_rate, self_bleu


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
