"""Chat rendering with completion-only masks, gate labels from pathways and spans, and packing."""

from __future__ import annotations

import pytest
import torch

from fixtures import records
from qwythos.chat import render
from qwythos.model.base import load_tokenizer
from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model
from qwythos.model.losses import IGNORE
from qwythos.records import Record
from qwythos.train.config import DataSection
from qwythos.train.data import collate, pack, plan_steps

NAMES = ["reasoning", "narrative"]


@pytest.fixture(scope="module")
def tok(tiny_base):
    return load_tokenizer(tiny_base)


def rec(d: dict) -> Record:
    return Record(**d)


def test_only_assistant_tokens_and_end_of_turn_are_supervised(tok):
    r = rec(records()[0])
    ex = render(r, tok, NAMES, DataSection())
    supervised = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE]
    assert tok.decode(supervised) == r.messages[1]["content"] + tok.eos_token
    assert all(lab in (IGNORE, t) for t, lab in zip(ex.input_ids, ex.labels, strict=True))


def test_gate_labels_from_pathway_and_mixed_spans(tok):
    reasoning = render(rec(records()[0]), tok, NAMES, DataSection())
    assert set(reasoning.gate_labels) - {IGNORE} == {0}
    no_prompt = render(rec(records()[0]), tok, NAMES, DataSection(label_prompt=False))
    assert sum(g != IGNORE for g in no_prompt.gate_labels) < sum(g != IGNORE for g in reasoning.gate_labels)
    mixed = rec(records(0, 0, 1)[0])
    ex = render(mixed, tok, NAMES, DataSection())
    by_label = {
        lab: tok.decode([t for t, g in zip(ex.input_ids, ex.gate_labels, strict=True) if g == lab])
        for lab in (0, 1)
    }
    assert "12 + 5 = 17." in by_label[0] and "knight" not in by_label[0]
    assert "rode into the storm" in by_label[1]
    assert all(
        g == IGNORE
        for g, t in zip(ex.gate_labels, ex.input_ids, strict=True)
        if t == tok.convert_tokens_to_ids("<|im_start|>")
    )


def test_truncation_without_answer_is_an_error(tok):
    with pytest.raises(ValueError, match="no assistant tokens within max_seq_len"):
        render(rec(records()[0]), tok, NAMES, DataSection(max_seq_len=4))


def test_packed_rows_give_each_sample_its_own_loss(tiny_base, tok):
    """Per-token losses of samples packed in one row equal the losses of each sample alone."""
    model, _ = build_model(tiny_base, PathwayConfig(rank=2))
    exs = [render(rec(r), tok, NAMES, DataSection()) for r in records(2, 2, 1)]
    rows = pack(exs, max_len=10_000)
    assert len(rows) == 1
    b = collate(rows, tok.pad_token_id, packed=True)
    with torch.no_grad():
        logits = model(b.input_ids, position_ids=b.position_ids, seq_ids=b.seq_ids).logits[0]
        t = 0
        for e in exs:
            n = len(e.input_ids)
            alone = model(torch.tensor([e.input_ids])).logits[0]
            torch.testing.assert_close(logits[t : t + n], alone, atol=1e-5, rtol=1e-5)
            t += n
        # without the sample boundaries the later samples would see the earlier ones
        leaky = model(b.input_ids, position_ids=b.position_ids).logits[0]
    n0 = len(exs[0].input_ids)
    assert not torch.allclose(leaky[n0 : n0 + len(exs[1].input_ids)], logits[n0 : n0 + len(exs[1].input_ids)])


def test_plan_is_deterministic_and_keeps_curriculum_order(tok):
    exs = [render(rec(r), tok, NAMES, DataSection()) for r in records(6, 6, 0)]
    cfg = DataSection(max_seq_len=64, pack=True)
    a, b = plan_steps(exs, cfg, 2.0, 2, seed=1), plan_steps(exs, cfg, 2.0, 2, seed=1)
    ids = lambda plan: [e.id for step in plan for row in step for e in row]  # noqa: E731
    assert ids(a) == ids(b)
    first_epoch = ids(a)[: len(exs)]
    assert first_epoch == [e.id for e in exs]  # curriculum order kept
    shuffled = plan_steps(exs, DataSection(max_seq_len=64, shuffle=True), 1.0, 2, seed=1)
    assert sorted(ids(shuffled)) == sorted(e.id for e in exs) and ids(shuffled) != [e.id for e in exs]
    assert all(sum(len(e.input_ids) for e in row) <= 64 for step in a for row in step if len(row) > 1)
