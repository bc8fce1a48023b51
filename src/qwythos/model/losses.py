"""Losses that train the pathway model and its gate.

With 2 pathways the Switch/Mixtral load-balancing loss is useless (top-2 of 2: constant; top-1: the LM loss
sends the router no gradient), so the gate is trained soft and supervised by the data's pathway labels:

    loss = lm + w_gate * CE(router_logits, pathway label)      per token, ignore -100
              + w_z * mean(logsumexp(router_logits)^2)          ST-MoE router z-loss
              + w_entropy * mean H(g)                           > 0 sharpens gates, < 0 spreads them
              + w_usage * KL(mean g || usage_target)            keeps pathway usage near a prior
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

IGNORE = -100


@dataclass
class LossConfig:
    gate_weight: float = 1.0  # supervised gate loss from pathway labels
    z_weight: float = 1e-3  # router z-loss
    entropy_weight: float = 0.0  # per-token gate entropy (positive: decisive gates)
    usage_weight: float = 0.0  # KL of mean usage from usage_target
    usage_target: list[float] = field(default_factory=list)  # empty: uniform


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, normaliser: float | None = None) -> torch.Tensor:
    """Next-token CE; labels (B, T) aligned with input_ids, IGNORE where not supervised.

    Mean over supervised tokens, or their sum / ``normaliser`` (e.g. the count over all micro-batches and
    processes of one optimiser step, so accumulation and data parallelism give the global mean)."""
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    if not bool((shift_labels != IGNORE).any()):
        raise ValueError("the batch has no supervised tokens (every label is masked); check the loss mask")
    flat = (shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1))
    if normaliser is None:
        return F.cross_entropy(*flat, ignore_index=IGNORE)
    return F.cross_entropy(*flat, ignore_index=IGNORE, reduction="sum") / normaliser


def gate_loss(router_logits: torch.Tensor, gate_labels: torch.Tensor) -> torch.Tensor:
    """CE of every layer's router logits (B, T, L, P) against pathway labels (B, T), IGNORE = unlabelled."""
    B, T, L, P = router_logits.shape
    labels = gate_labels[:, :, None].expand(B, T, L)
    if not bool((labels != IGNORE).any()):
        return router_logits.sum() * 0.0
    return F.cross_entropy(router_logits.float().reshape(-1, P), labels.reshape(-1), ignore_index=IGNORE)


def z_loss(router_logits: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    z = torch.logsumexp(router_logits.float(), dim=-1).pow(2)  # (B, T, L)
    return _masked_mean(z, valid)


def entropy(gates: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    h = -(gates * torch.log(gates.clamp_min(1e-9))).sum(-1)  # (B, T, L)
    return _masked_mean(h, valid)


def usage_kl(
    gates: torch.Tensor, target: torch.Tensor | None = None, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(mean gate usage || target) over the batch's valid tokens, per layer, averaged."""
    P = gates.shape[-1]
    g = gates.reshape(-1, gates.shape[-2], P)  # (N, L, P)
    if valid is not None:
        g = g[valid.reshape(-1)]
    usage = g.mean(0).clamp_min(1e-9)  # (L, P)
    target = torch.full((P,), 1.0 / P) if target is None else target
    target = target.to(usage)
    return (usage * (usage.log() - target.log())).sum(-1).mean()


def _masked_mean(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return x.mean()
    w = valid[:, :, None].to(x.dtype).expand_as(x)
    return (x * w).sum() / w.sum().clamp_min(1.0)


def total_loss(
    cfg: LossConfig,
    logits: torch.Tensor,
    router_logits: torch.Tensor,
    labels: torch.Tensor,
    gate_labels: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    temperature: float = 1.0,
    lm_normaliser: float | None = None,
    aux_scale: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """All terms; returns the loss and a dict of detached parts for metrics.

    router_logits (B, T, L, P) before gear bias; valid (B, T) marks real (non-padding) tokens.
    aux_scale multiplies the gate terms (1 / micro-batches under gradient accumulation)."""
    parts = {"lm_loss": lm_loss(logits, labels, lm_normaliser)}
    P = router_logits.shape[-1]
    if P > 1:
        gates = torch.softmax(router_logits.float() / temperature, dim=-1)
        if cfg.gate_weight and gate_labels is not None:
            parts["gate_loss"] = cfg.gate_weight * gate_loss(router_logits, gate_labels)
        if cfg.z_weight:
            parts["z_loss"] = cfg.z_weight * z_loss(router_logits, valid)
        if cfg.entropy_weight:
            parts["entropy"] = cfg.entropy_weight * entropy(gates, valid)
        if cfg.usage_weight:
            target = torch.tensor(cfg.usage_target) if cfg.usage_target else None
            parts["usage"] = cfg.usage_weight * usage_kl(gates, target, valid)
    for k in parts:
        if k != "lm_loss":
            parts[k] = parts[k] * aux_scale
    loss = sum(parts.values())
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def gate_accuracy(router_logits: torch.Tensor, gate_labels: torch.Tensor) -> float | None:
    """Share of labelled tokens whose layer-mean gate picks the labelled pathway."""
    mask = gate_labels != IGNORE
    if not bool(mask.any()):
        return None
    pred = torch.softmax(router_logits.float(), -1).mean(2).argmax(-1)  # (B, T)
    return float((pred[mask] == gate_labels[mask]).float().mean())
