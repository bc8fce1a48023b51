"""`qwythos synth` with the real embedded SmolLM2-135M as the local teacher: a few tasks end to end."""

from __future__ import annotations

import json

import pytest

from qwythos.synth.run import synth

pytestmark = pytest.mark.slow


def test_a_small_seed_run_with_the_embedded_base(tmp_path):
    overrides = [
        "tasks.narrative=2",
        "tasks.mixed_gm=2",
        "select.n=2",
        "select.k=3",
        "sampling.story_tokens=96",
        "sampling.reply_tokens=64",
        "sampling.solution_tokens=48",
        "score.min_words=20",
        "teacher.batch_size=16",
    ]
    report = json.loads(synth(tmp_path / "run", overrides=overrides).read_text())
    assert report["tasks"] == 4 and report["accepted"] + report["rejected"] == 4
    assert report["requests"]["paid"] == 2 * 2 + 2 * (3 + 2)
    assert report["tokens"]["paid_completion"] > 0 and report["wall_s"] > 0
    reasons = set(report["candidates"])  # every candidate was judged: passed, or rejected with a reason
    assert reasons <= {
        "ok", "verified", "wrong_answer", "no_answer", "wrong_step", "too_short", "too_long", "repetitive",
        "low_diversity", "missing_word", "refusal", "incoherent", "empty",
    }  # fmt: skip
    for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        for s in record["spans"]:
            assert 0 <= s["start"] < s["end"] <= len(record["messages"][s["message"]]["content"])
    again = json.loads(synth(tmp_path / "run", overrides=overrides).read_text())
    assert again["requests"]["paid"] == 0 and again["accepted"] == report["accepted"]
