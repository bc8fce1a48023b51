"""The local teacher (batched, reordered by length) and the coherence scorer on a tiny random model."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from qwythos.model.api import init_model
from qwythos.synth.cache import RequestCache
from qwythos.synth.run import synth
from qwythos.synth.teachers import CachedTeacher, ChatRequest, LocalTeacher, complete
from qwythos.synth.verify import CoherenceScorer

PROMPTS = [
    "Tom has 3 apples.",
    "Once upon a time a dragon guarded a quiet village by the sea.",
    "Solve",
    "hi",
]


@pytest.fixture(scope="module")
def model_dir(tiny_base, tmp_path_factory):
    return init_model(out=tmp_path_factory.mktemp("synth") / "m", base=tiny_base)


def chats(temperature: float = 0.0) -> list[ChatRequest]:
    return [
        ChatRequest([{"role": "user", "content": p}], max_tokens=6 + 2 * i, temperature=temperature, seed=i)
        for i, p in enumerate(PROMPTS)
    ]


def test_batched_replies_come_back_in_request_order(model_dir):
    alone = complete(LocalTeacher(model_dir, batch_size=1), chats())
    batched = complete(LocalTeacher(model_dir, batch_size=3), chats())
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in alone]
    assert all(r.error is None for r in batched)


def test_a_bfloat16_teacher_is_another_teacher_in_the_cache(model_dir):
    fp32, bf16 = LocalTeacher(model_dir), LocalTeacher(model_dir, dtype="bfloat16")
    assert bf16.name == fp32.name + ":bfloat16"  # its replies differ: never served from fp32's cache
    assert bf16.engine.model.embed_tokens.weight.dtype == torch.bfloat16
    replies = complete(bf16, chats())
    assert all(r.error is None and r.completion_tokens > 0 for r in replies)


def test_retrained_weights_are_another_teacher_in_the_cache(model_dir, tmp_path):
    """Same config files, other pathways.safetensors: the old model's cached replies are not served."""
    import shutil

    from safetensors.torch import load_file, save_file

    other = shutil.copytree(model_dir, tmp_path / "copy" / model_dir.name)
    weights = load_file(other / "pathways.safetensors")
    save_file({k: v + 0.5 for k, v in weights.items()}, other / "pathways.safetensors")
    assert [f.read_bytes() for f in sorted(other.glob("*.json"))] == [
        f.read_bytes() for f in sorted(model_dir.glob("*.json"))
    ]
    assert LocalTeacher(other).name != LocalTeacher(model_dir).name
    cache = RequestCache(tmp_path / "c.sqlite")
    CachedTeacher(LocalTeacher(model_dir), cache).complete(chats())
    retrained = CachedTeacher(LocalTeacher(other), cache)
    retrained.complete(chats())
    assert retrained.stats["cached"] == 0 and retrained.stats["paid"] == len(PROMPTS)
    assert LocalTeacher(model_dir).name == LocalTeacher(model_dir).name  # and stable for the same weights


def test_local_replies_are_cached(model_dir, tmp_path):
    cached = CachedTeacher(LocalTeacher(model_dir, batch_size=4), RequestCache(tmp_path / "c.sqlite"))
    first = cached.complete(chats(temperature=1.0))
    again = cached.complete(chats(temperature=1.0))
    assert cached.stats["paid"] == len(PROMPTS) and all(r.cached for r in again)
    assert [r.text for r in again] == [r.text for r in first]


def test_coherence_is_the_reply_loss_and_batching_does_not_change_it(model_dir):
    teacher = LocalTeacher(model_dir)
    items = [([{"role": "user", "content": p}], "The knight counted the coins.") for p in PROMPTS]
    batched = CoherenceScorer(teacher.engine, batch_size=4).losses(items)
    single = CoherenceScorer(teacher.engine, batch_size=1).losses(items)
    assert batched == pytest.approx(single, abs=1e-4)
    engine = teacher.engine  # the reference: cross-entropy of the reply tokens after the chat prompt
    prompt = engine.encode_chat(items[0][0])
    reply = engine.tokenizer.encode(items[0][1], add_special_tokens=False)
    with torch.inference_mode():
        logits = engine.model(torch.tensor([prompt + reply])).logits[0, len(prompt) - 1 : -1]
    assert single[0] == pytest.approx(float(F.cross_entropy(logits, torch.tensor(reply))), abs=1e-4)


def test_synth_with_the_local_teacher_resumes_from_its_cache(model_dir, tmp_path):
    overrides = [
        f"teacher.model_dir={model_dir}",
        "tasks.narrative=2",
        "tasks.roleplay=1",
        "sampling.story_tokens=12",
        "sampling.reply_tokens=8",
        "sampling.solution_tokens=8",
        "score.min_words=1",
        "score.max_loss=100",
    ]
    first = json.loads(synth(tmp_path / "run", overrides=overrides).read_text())
    assert first["tasks"] == 3 and first["accepted"] + first["rejected"] == 3
    assert first["requests"]["paid"] == first["requests"]["requests"] >= 2 * 2 + 2
    again = json.loads(synth(tmp_path / "run", overrides=overrides).read_text())
    assert again["requests"]["paid"] == 0 and again["requests"]["cached"] == first["requests"]["requests"]
    assert again["rejected_by_reason"] == first["rejected_by_reason"]


def test_worked_mixed_reasoning_asks_the_teacher_only_for_the_narration(model_dir, tmp_path):
    overrides = [
        f"teacher.model_dir={model_dir}",
        "tasks.mixed_gm=2",
        "tasks.mixed_reasoning=worked",
        "sampling.reply_tokens=8",
        "score.min_words=1",
        "score.max_loss=100",
        "score.max_repetition=1",
        "score.min_distinct2=0",
        "compress=false",
    ]
    report = json.loads(synth(tmp_path / "run", overrides=overrides).read_text())
    assert report["requests"]["requests"] == 2 * 2  # n narration candidates per task, no solution samples
    records = [json.loads(x) for x in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert report["accepted"] == len(records) >= 1
    for r in records:
        reply, reasoning = r["messages"][-1]["content"], r["spans"][0]
        solution = reply[reasoning["start"] : reasoning["end"]]
        assert reasoning["pathway"] == "reasoning" and r["meta"]["reasoning_part"] == "worked"
        left = r["meta"]["reference"]
        assert f"= {left} gold left." in solution and solution.endswith(f"you have {left} gold left.")
        assert r["spans"][1]["pathway"] == "narrative" and r["spans"][1]["start"] > reasoning["end"]
