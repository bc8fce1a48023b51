"""Worked solutions for reasoning-gym generators (checked by the step checker), generator arguments, and the
held-out sets curation and evaluation draw from them."""

from __future__ import annotations

import json

import pytest

from qwythos import gym
from qwythos.config import ConfigError
from qwythos.curate.config import InputConfig
from qwythos.curate.run import materialise
from qwythos.eval import data as evdata
from qwythos.records import Record
from qwythos.text import false_steps, gsm_answer

THESIS = {  # the generator settings THESIS.md names as learnable by a 135M model
    "leg_counting": {"min_animals": 2, "max_animals": 4, "max_instances": 9},
    "chain_sum": {"min_terms": 3, "max_terms": 5, "min_digits": 1, "max_digits": 2},
    "products": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 3},
}


def test_solutions_are_pinned_against_hand_worked_ones():
    legs = gym.problems("leg_counting", 2, 1, THESIS["leg_counting"])[1]
    assert "3 chickens, 5 beetles" in legs.question
    assert legs.solution == ("3 chickens: 3 * 2 = 6 legs\n5 beetles: 5 * 6 = 30 legs\n6 + 30 = 36\n#### 36")
    item = {"question": "q", "answer": "-4", "metadata": {"expression": "4 - 1 - 7"}}
    assert gym.render("chain_sum", item) == "4 - 1 = 3\n3 - 7 = -4\n#### -4"
    item = {"question": "q", "answer": "1035", "metadata": {"expression": "23 * 45"}}
    assert gym.render("products", item) == "23 * 40 = 920\n23 * 5 = 115\n920 + 115 = 1035\n#### 1035"
    item = {"question": "q", "answer": "-42", "metadata": {"expression": "-6 * 7"}}
    assert gym.render("products", item) == "-6 * 7 = -42\n#### -42"


@pytest.mark.parametrize("name", sorted(THESIS))
@pytest.mark.parametrize("negation", [False, True])
def test_every_rendered_step_is_checked_and_true(name, negation):
    args = dict(THESIS[name], **({"allow_negation": True} if negation and name != "leg_counting" else {}))
    for p in gym.problems(name, 200, 31, args):
        lines = p.solution.splitlines()
        assert lines[-1] == f"#### {p.answer}" and len(lines) >= 2
        assert gsm_answer(p.solution) == p.answer.lstrip("+")
        assert false_steps(p.solution) == []
        assert all("=" in line for line in lines[:-1])  # every line before the answer is a checkable step
        assert p.meta["verified"]


def test_a_wrong_renderer_is_caught(monkeypatch):
    monkeypatch.setitem(gym.RENDERERS, "chain_sum", lambda item: ["4 - 1 = 2"])
    with pytest.raises(AssertionError, match="wrong steps"):
        gym.problems("chain_sum", 1, 0)


def test_other_generators_keep_their_own_solution_or_the_bare_answer():
    (p,) = gym.problems("gsm_symbolic", 1, 0)
    assert p.solution.endswith(f"#### {p.answer}") and "\n" in p.solution and not p.meta["verified"]
    (p,) = gym.problems("basic_arithmetic", 1, 0)
    assert p.solution == f"#### {p.answer}"


def test_bad_generator_arguments_name_the_option():
    with pytest.raises(ValueError, match=r"args: reasoning-gym rejects leg_counting .*min_animalz"):
        gym.problems("leg_counting", 2, 0, {"min_animalz": 2})
    with pytest.raises(ValueError, match="args: .*max_animals must be >= min_animals"):
        gym.problems("leg_counting", 2, 0, {"min_animals": 4, "max_animals": 2})


def test_curate_generates_worked_solutions_with_arguments(tmp_path):
    inp = InputConfig(generator="reasoning_gym:leg_counting", size=5, seed=3, args=THESIS["leg_counting"])
    path = materialise(inp, tmp_path)
    assert gym.args_digest(THESIS["leg_counting"]) in path.name  # other arguments, another file
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(rows) == 5
    assert [r["answer"] for r in rows] == [p.solution for p in gym.problems("leg_counting", 5, 3, inp.args)]
    assert all(2 <= r["answer"].count(" legs\n") <= 4 for r in rows)  # 2-4 animals, as asked
    bad = InputConfig(generator="reasoning_gym:leg_counting", size=5, seed=3, args={"legs": 2})
    with pytest.raises(ConfigError, match="inputs: generator reasoning_gym:leg_counting args:"):
        materialise(bad, tmp_path)
    with pytest.raises(ConfigError, match="`args` configure a generator"):
        InputConfig(path="x.jsonl", args={"min_animals": 2})


def _trained(problems) -> list[Record]:
    return [
        Record(p.id, "gym", [{"role": "user", "content": p.question}], pathway="reasoning") for p in problems
    ]


def test_heldout_problems_come_from_the_generator_and_skip_what_was_trained():
    args = THESIS["chain_sum"]
    trained = _trained(gym.problems("chain_sum", 40, 100, args))
    # seed 120 shares items 20..39 of seed 100's set: those are dropped and counted, the rest stand
    problems, shots, info = evdata.heldout_gsm(30, 120, trained, generator="chain_sum", args=args)
    seen = {evdata.normalise_text(r.messages[0]["content"]) for r in trained}
    assert len(problems) == 30 and not shots
    assert not any(evdata.normalise_text(p.question) in seen for p in problems)
    assert info["overlap_dropped"] >= 20 and info["source"] == "reasoning_gym:chain_sum"
    assert info["args"] == args and problems[0].solution.endswith(f"#### {problems[0].answer}")
    with pytest.raises(ConfigError, match="gsm.args: reasoning-gym rejects chain_sum"):
        evdata.heldout_gsm(3, 1, [], generator="chain_sum", args={"terms": 3})


def test_a_user_file_is_checked_for_overlap_with_the_training_set():
    ps = [evdata.GsmProblem(f"f{i}", q, "1") for i, q in enumerate(["What is 1+0?", "Fresh question"])]
    trained = _trained([gym.Problem("t", "  what is 1+0? ", "1", "#### 1")])
    assert evdata.file_overlap(ps, trained) == 1
    assert evdata.file_overlap(ps, []) == 0
