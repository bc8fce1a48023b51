"""Gate losses: values against their formulas, gradients reach the right parameters, they train the gate."""

from __future__ import annotations

import pytest
import torch

from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model
from qwythos.model.losses import (
    IGNORE,
    LossConfig,
    entropy,
    gate_accuracy,
    gate_loss,
    lm_loss,
    total_loss,
    usage_kl,
    z_loss,
)


def test_terms_match_their_formulas():
    logits = torch.randn(2, 3, 4, 2)
    assert torch.isclose(z_loss(logits), (torch.logsumexp(logits, -1) ** 2).mean())
    uniform = torch.full((2, 3, 4, 2), 0.5)
    assert torch.isclose(usage_kl(uniform), torch.tensor(0.0), atol=1e-7)
    assert torch.isclose(entropy(uniform), torch.log(torch.tensor(2.0)))
    skewed = torch.tensor([0.9, 0.1]).expand(2, 3, 4, 2)
    assert usage_kl(skewed) > 0.3
    labels = torch.tensor([[0, 1, IGNORE], [1, IGNORE, IGNORE]])
    manual = torch.nn.functional.cross_entropy(
        logits[labels != IGNORE].reshape(-1, 2), labels[labels != IGNORE].repeat_interleave(4)
    )
    assert torch.isclose(gate_loss(logits, labels), manual)


def test_no_supervised_tokens_is_an_error():
    with pytest.raises(ValueError, match="no supervised tokens"):
        lm_loss(torch.randn(1, 4, 10), torch.full((1, 4), IGNORE))


def test_gate_loss_gradients_reach_routers_only(tiny_base):
    model, _ = build_model(tiny_base, PathwayConfig(rank=2))
    ids = torch.randint(0, 300, (2, 6))
    out = model(ids, return_router_logits=True)
    gate_loss(out.router_logits, torch.randint(0, 2, (2, 6))).backward()
    for name, p in model.named_parameters():
        if ".router." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None or p.grad.abs().sum() == 0, name


def test_supervised_gate_loss_teaches_the_gate(tiny_base):
    """A few optimiser steps on the total loss raise gate accuracy on per-token labels."""
    torch.manual_seed(0)
    model, _ = build_model(tiny_base, PathwayConfig(rank=2))
    a, b = torch.randint(3, 150, (4, 10)), torch.randint(150, 300, (4, 10))  # two "domains"
    ids = torch.cat([a, b])
    gate_labels = torch.cat([torch.zeros(4, 10), torch.ones(4, 10)]).long()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=5e-2)
    cfg = LossConfig(gate_weight=1.0, z_weight=1e-3, entropy_weight=0.01, usage_weight=0.1)
    out = model(ids, return_router_logits=True)
    before = gate_accuracy(out.router_logits, gate_labels)
    for _ in range(40):
        out = model(ids, return_router_logits=True)
        loss, parts = total_loss(cfg, out.logits, out.router_logits, ids, gate_labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert {"lm_loss", "gate_loss", "z_loss", "entropy", "usage"} <= set(parts)
    after = gate_accuracy(model(ids, return_router_logits=True).router_logits, gate_labels)
    assert after > 0.95 and after > before
