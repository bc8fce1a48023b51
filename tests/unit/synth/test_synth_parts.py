"""Cache keys and persistence, config errors, task generation (seeded, prefix-stable), record assembly."""

from __future__ import annotations

import json

import pytest

from qwythos.config import ConfigError, load_config
from qwythos.synth.cache import RequestCache, request_key
from qwythos.synth.config import SynthConfig
from qwythos.synth.generators import build_tasks, reasoning_problems
from qwythos.synth.run import Candidate, Job, assemble, conversation


def test_request_key_is_canonical_and_sensitive():
    a = request_key("t", {"messages": [{"role": "user", "content": "hi"}], "seed": 1})
    assert a == request_key("t", {"seed": 1, "messages": [{"content": "hi", "role": "user"}]})
    assert a != request_key("t", {"messages": [{"role": "user", "content": "hi"}], "seed": 2})
    assert a != request_key("other", {"messages": [{"role": "user", "content": "hi"}], "seed": 1})


def test_cache_persists_across_connections(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    cache.put("k", {"text": "hello", "completion_tokens": 3})
    cache.close()
    again = RequestCache(tmp_path / "c.sqlite")
    assert again.get("k") == {"text": "hello", "completion_tokens": 3}
    assert again.get("missing") is None and len(again) == 1


def test_unknown_keys_and_bad_values_name_the_option():
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(SynthConfig, overrides=["tasks.stories=3"])
    with pytest.raises(ValueError, match="select.n"):
        load_config(SynthConfig, overrides=["select.n=0"])
    with pytest.raises(ValueError, match="roleplay_turns"):
        load_config(SynthConfig, overrides=["tasks.roleplay_turns=9"])
    with pytest.raises(ConfigError, match="teacher.kind"):
        load_config(SynthConfig, overrides=["teacher.kind=vllm"])


def cfg(**tasks) -> SynthConfig:
    return load_config(SynthConfig, overrides=[f"tasks.{k}={v}" for k, v in tasks.items()])


def test_tasks_are_seeded_and_prefix_stable():
    a = build_tasks(cfg(narrative=5, mixed_gm=3, roleplay=2, reasoning=2, reasoning_source="templates"))
    b = build_tasks(cfg(narrative=5, mixed_gm=3, roleplay=2, reasoning=2, reasoning_source="templates"))
    assert [t.turns[0].user for t in a] == [t.turns[0].user for t in b]
    more = build_tasks(cfg(narrative=8, mixed_gm=3, roleplay=2, reasoning=2, reasoning_source="templates"))
    by_id = {t.id: t.turns[0].user for t in more}
    assert all(by_id[t.id] == t.turns[0].user for t in a)  # growing one count keeps every other task
    kinds = {t.kind for t in a}
    assert {"roleplay", "mixed_gm", "reasoning"} <= kinds


def test_mixed_tasks_carry_verifiable_references():
    for t in build_tasks(cfg(mixed_story=5, mixed_gm=5)):
        pathways = [p.pathway for p in t.turns[0].parts]
        assert "reasoning" in pathways and "narrative" in pathways
        ref = next(p.reference for p in t.turns[0].parts if p.pathway == "reasoning")
        assert ref == t.meta["reference"] and int(ref) >= 0


def test_reasoning_problems_from_a_file_with_and_without_answers(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(
        json.dumps({"question": "1+1?", "answer": 2}) + "\n" + json.dumps({"question": "2+2?"}) + "\n"
    )
    assert reasoning_problems(str(f), 5, 0) == [("1+1?", "2"), ("2+2?", None)]
    with pytest.raises(FileNotFoundError, match="reasoning_source"):
        reasoning_problems(str(tmp_path / "missing.jsonl"), 1, 0)


def test_assembled_reply_records_exact_spans():
    (task,) = build_tasks(cfg(mixed_gm=1))
    jobs = []
    texts = [
        "3 * 4 = 12 and 35 - 12 = 23.\nInventory check done.",
        "The merchant grins and hands you the maps.",
    ]
    for i, (part, text) in enumerate(zip(task.turns[0].parts, texts, strict=True)):
        job = Job(task, i, part, [])
        job.chosen = Candidate(text, True, "ok")
        jobs.append(job)
    assistant, spans, rejected = {task.id: []}, {task.id: []}, {}
    assemble([task], jobs, 0, assistant, spans, rejected)
    reply = assistant[task.id][0]
    message = len(conversation(task, 0, []))  # system, user -> the reply is message 2
    assert message == 2
    got = [(reply[s["start"] : s["end"]], s["pathway"], s["message"]) for s in spans[task.id]]
    assert got == [(texts[0], "reasoning", 2), (texts[1], "narrative", 2)]


def test_a_part_without_a_passing_candidate_rejects_the_task_with_its_reason():
    (task,) = build_tasks(cfg(mixed_gm=1))
    jobs = [Job(task, i, p, []) for i, p in enumerate(task.turns[0].parts)]
    jobs[0].reason = "wrong_answer"
    jobs[1].chosen = Candidate("fine", True, "ok")
    rejected: dict = {}
    assemble([task], jobs, 0, {task.id: []}, {task.id: []}, rejected)
    assert rejected[task.id]["reason"] == "wrong_answer"


@pytest.mark.slow  # importing reasoning-gym takes a few seconds
def test_reasoning_gym_problems_come_with_numeric_references():
    problems = reasoning_problems("gsm_symbolic", 3, 0)
    assert len(problems) == 3 and all(q and ref.lstrip("-").isdigit() for q, ref in problems)
    with pytest.raises(ValueError, match="reasoning_source='no_such_set'"):
        reasoning_problems("no_such_set", 1, 0)
