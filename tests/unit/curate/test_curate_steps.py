"""The per-record steps: normalise, quality filters, pathway labels, decontamination, exact and near dedup."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from qwythos.curate.config import LabelConfig, NearDedupConfig, NormaliseConfig, QualityConfig
from qwythos.curate.decontam import EvalIndex, contamination
from qwythos.curate.dedup import ExactDedup, NearDedup, optimal_bands, signatures, text_hash
from qwythos.curate.filters import first_failure, quality_score
from qwythos.curate.label import PathwayClassifier, label_rules, mixed_spans
from qwythos.curate.normalise import normalise
from qwythos.records import Record


def rec(prompt: str, response: str, **meta) -> Record:
    msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return Record("t/0", "t", msgs, meta=dict(meta))


# ---------------------------------------------------------------- normalise


def test_normalise_repairs_unicode_whitespace_and_calculator_marks():
    r = rec(
        "Itâ€™s   a  test\r\n\r\n\r\n\r\nok  ", "She has 5 + 7 = <<5+7=12>>12 pens.\n#### 12", schema="gsm8k"
    )
    normalise(r, NormaliseConfig())
    assert r.prompt == "It's a test\n\nok"  # ftfy also uncurls quotes
    assert r.response == "She has 5 + 7 = 12 pens.\n#### 12"


def test_normalise_moves_spans_with_the_text():
    content = "Itâ€™s a tale.  Then 2 + 2 = <<2+2=4>>4."
    r = rec("q", content, schema="gsm8k")
    cut = content.index("Then")
    r.spans = [
        {"message": 1, "start": 0, "end": cut, "pathway": "narrative"},
        {"message": 1, "start": cut, "end": len(content), "pathway": "reasoning"},
    ]
    normalise(r, NormaliseConfig())
    text = r.messages[1]["content"]
    assert text[r.spans[0]["start"] : r.spans[0]["end"]] == "It's a tale.  "
    assert text[r.spans[1]["start"] : r.spans[1]["end"]] == "Then 2 + 2 = 4."


# ---------------------------------------------------------------- quality filters


@pytest.mark.parametrize(
    "prompt,response,meta,reason,evidence",
    [
        (
            "Tell me a joke.",
            "As an AI language model, I cannot tell jokes.",
            {},
            "refusal",
            "As an AI language model",
        ),
        ("Say it.", "the cat sat on the mat " * 20, {}, "repetitive", None),
        (
            "Tom has 3 apples and buys 4 more. How many?",
            "3 + 4 = 7 apples in the basket.",
            {"schema": "gsm8k"},
            "no_final_answer",
            None,
        ),
        (
            "Tom has 3 apples and buys 4 more. How many?",
            "3 + 4 = 8\n#### 8",
            {"answer": 7},
            "wrong_answer",
            "final answer 8 != reference 7",
        ),
        (
            "Quelle heure est-il?",
            "Il est trois heures et demie, mon ami, je pense que nous devons partir bientôt.",
            {},
            "not_english",
            None,
        ),
        ("Hi", "", {}, "too_short", None),
    ],
)
def test_filters_name_reason_and_evidence(prompt, response, meta, reason, evidence):
    r = rec(prompt, response, **meta)
    label_rules(r, LabelConfig())
    verdict = first_failure(r, QualityConfig())
    assert verdict is not None and verdict[0] == reason
    if evidence:
        assert evidence in verdict[1]


def test_good_records_pass_and_score_higher_than_boilerplate():
    good = rec(
        "Tom has 3 apples and buys 4 more. How many?", "He has 3 + 4 = 7 apples.\n#### 7", schema="gsm8k"
    )
    label_rules(good, LabelConfig())
    assert good.pathway == "reasoning" and first_failure(good, QualityConfig()) is None
    plain = rec("Name a colour.", "Blue is a calm colour that many people like to paint with at home.")
    fluff = rec("Name a colour.", "Sure! Blue is a calm colour. I hope this helps! Feel free to ask more.")
    assert quality_score(plain) > quality_score(fluff)
    assert first_failure(rec("Q?", "The strict mode wants ####", schema="gsm8k"), QualityConfig()) is None
    assert first_failure(fluff, QualityConfig()) is None  # boilerplate only lowers quality by default
    assert first_failure(fluff, QualityConfig(boilerplate=2)) == (
        "boilerplate",
        "Sure!; I hope this helps; Feel free to ask",
    )


# ---------------------------------------------------------------- pathway labels


def test_rules_and_priors_label_pathways():
    cfg = LabelConfig()
    math = rec("A shop sells 4 pens at 3 dollars each. How much in total?", "4 * 3 = 12 dollars.\n#### 12")
    story = rec("Write a short story about a dragon.", "Once upon a time a dragon smiled at the village.")
    neutral = rec(
        "Tell me about the weather.", "It is mild today.", schema="dolly", category="creative_writing"
    )
    for r in (math, story, neutral):
        label_rules(r, cfg)
    assert (math.pathway, story.pathway, neutral.pathway) == ("reasoning", "narrative", "narrative")
    assert math.pathway_confidence > 0.99 and story.pathway_confidence > 0.95
    assert neutral.meta["label"]["prior"] == -cfg.prior_strength


def test_mixed_response_gets_spans_over_its_parts():
    tale = "Once upon a time a knight walked into the village. She smiled and whispered to the dragon."
    work = "Then, 3 * 4 = 12 coins and 12 + 5 = 17 coins in total.\n#### 17"
    r = rec("Tell a story, then count the coins.", tale + "\n\n" + work)
    label_rules(r, LabelConfig())
    assert r.pathway == "mixed"
    content = r.messages[1]["content"]
    assert [(s["pathway"], content[s["start"] : s["end"]]) for s in r.spans] == [
        ("narrative", tale),
        ("reasoning", work),
    ]
    assert mixed_spans(rec("q", tale), LabelConfig()) is None


def test_source_labels_are_kept_when_trusted():
    r = rec("Write a story.", "Once upon a time.")
    r.pathway, r.pathway_confidence, r.meta["pathway_from"] = "reasoning", 0.7, "source"
    assert label_rules(r, LabelConfig()) is False and r.pathway == "reasoning"
    label_rules(r, LabelConfig(trust_source=False))
    assert r.pathway == "narrative"


def test_logistic_classifier_separates_two_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(1, 0.3, (40, 8)), rng.normal(-1, 0.3, (40, 8))])
    y = np.concatenate([np.ones(40), np.zeros(40)])
    z = PathwayClassifier().fit(x, y).logodds(x)
    assert ((z > 0) == (y == 1)).mean() == 1.0


# ---------------------------------------------------------------- decontamination


def test_decontam_keeps_the_matched_13_gram_as_evidence():
    eval_q = (
        "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins."
    )
    evals = [
        Record(
            "gsm8k_test/0",
            "gsm8k_test",
            [{"role": "user", "content": eval_q}, {"role": "assistant", "content": "16 - 3 = 13\n#### 13"}],
        )
    ]
    index = EvalIndex.build(evals, 13)
    assert index.skipped == 1  # the 6-word answer is too short to index
    leaked = rec("Hello! " + eval_q.upper() + " How much does she make?", "Some answer that is new.")
    clean = rec("Janet's ducks lay 17 eggs per day and she sells them at the market for money.", "ok")
    result = contamination(index, [clean, leaked])
    assert result[0] is None
    reason, evidence = result[1]
    ev = json.loads(evidence)
    assert reason == "contaminated_prompt" and ev["eval"] == "gsm8k_test/0" and ev["field"] == "prompt"
    assert ev["ngram"] == "janet s ducks lay 16 eggs per day she eats three for breakfast"
    assert len(ev["ngram"].split()) == 14 - 1 or len(ev["ngram"].split()) == 13


def test_decontam_index_round_trips(tmp_path):
    evals = [
        Record(
            "e/0",
            "e",
            [
                {"role": "user", "content": " ".join(f"w{i}" for i in range(30))},
                {"role": "assistant", "content": "x"},
            ],
        )
    ]
    index = EvalIndex.build(evals, 13)
    index.save(tmp_path / "ix")
    again = EvalIndex.load(tmp_path / "ix")
    assert np.array_equal(again.grams, index.grams) and again.names == ["e/0"]
    assert again.find(["w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17"])[0]["eval"] == "e/0"
    assert again.find(["w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w99"])[0] is None


# ---------------------------------------------------------------- dedup


def test_exact_dedup_checks_prompt_and_response_separately():
    d = ExactDedup()
    assert d.check("a", text_hash("What is 2+2?"), text_hash("4")) is None
    assert d.check("b", text_hash("what  is 2+2?"), text_hash("four")) == ("exact_dup_prompt", "a")
    assert d.check("c", text_hash("Other question"), text_hash(" 4 ")) == ("exact_dup_response", "a")
    assert d.check("d", text_hash("Other question"), text_hash("five")) is None  # c was not kept
    only_response = ExactDedup(prompt=False)
    only_response.check("a", text_hash("same"), text_hash("x"))
    assert only_response.check("b", text_hash("same"), text_hash("y")) is None


def _docs(n: int, seed: int = 0) -> tuple[list[str], set[int]]:
    """n random 300-word docs; every 5th copies an earlier original with 2 words changed (Jaccard ~0.94)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    docs, dups = [], set()
    for i in range(n):
        if i % 5 == 4:
            words = docs[rng.choice([k for k in range(i) if k not in dups])].split()  # copy an original
            for _ in range(2):
                words[rng.randrange(len(words))] = rng.choice(vocab)
            docs.append(" ".join(words))
            dups.add(i)
        else:
            docs.append(" ".join(rng.choice(vocab) for _ in range(300)))
    return docs, dups


def _datasketch_reference(docs: list[str], threshold: float, num_perm: int) -> set[int]:
    """The reference: datasketch MinHash + MinHashLSH, query-then-insert, on string 5-gram shingles."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[str, MinHash] = {}
    dups = set()
    for i, doc in enumerate(docs):
        w = doc.split()
        m = MinHash(num_perm=num_perm)
        m.update_batch([" ".join(w[k : k + 5]).encode() for k in range(len(w) - 4)])
        if any(kept[c].jaccard(m) >= threshold for c in lsh.query(m)):
            dups.add(i)
        else:
            lsh.insert(str(i), m)
            kept[str(i)] = m
    return dups


@pytest.mark.parametrize("engine", ["rensa", "datasketch"])
def test_near_dedup_agrees_with_datasketch_reference(engine):
    docs, planted = _docs(150)
    cfg = NearDedupConfig(engine=engine, threshold=0.7, num_perm=128)
    result = NearDedup(cfg).add(signatures(docs, cfg), [str(i) for i in range(len(docs))])
    found = {i for i, hit in enumerate(result) if hit is not None}
    assert found == planted == _datasketch_reference(docs, 0.7, 128)
    for i in planted:  # the evidence names a kept document that really is similar
        j = int(result[i][0])
        a, b = set(docs[i].split()), set(docs[j].split())
        assert len(a & b) / len(a | b) > 0.8 and result[j] is None


def test_near_dedup_threshold_and_core_seeding():
    base = " ".join(f"w{i}" for i in range(200))
    half = " ".join(f"w{i}" for i in range(100)) + " " + " ".join(f"x{i}" for i in range(100))
    cfg = NearDedupConfig(threshold=0.8)
    index = NearDedup(cfg)
    index.add(signatures([base], cfg), ["core:c1"])  # what we already have
    hits = index.add(signatures([base + " extra", half], cfg), ["new1", "new2"])
    assert hits[0][0] == "core:c1" and hits[0][1] > 0.9
    assert hits[1] is None  # Jaccard about 1/3: not a duplicate


def test_optimal_bands_match_datasketch():
    from datasketch.lsh import _optimal_param

    for t in (0.5, 0.7, 0.8):  # (at 0.9 the two numerical integrations pick 24 vs 25 rows)
        assert optimal_bands(t, 128) == _optimal_param(t, 128, 0.5, 0.5)
