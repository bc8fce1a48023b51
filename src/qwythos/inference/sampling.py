"""Turning next-token logits into tokens: greedy, temperature, top-k, top-p, repetition penalty, seeds."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # CTRL-style: >1 discourages tokens already in the context
    stop: list[str] = field(default_factory=list)  # generation ends before any of these strings
    seed: int | None = None
    ignore_eos: bool = False
    logprobs: int | None = None  # per generated token: its log-probability and this many top alternatives
    prompt_logprobs: int | None = None  # the same for every prompt token after the first (echo scoring)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens ({self.max_new_tokens}) must be >= 0")
        if self.temperature < 0:
            raise ValueError(f"temperature ({self.temperature}) must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p ({self.top_p}) must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k ({self.top_k}) must be >= 0")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty ({self.repetition_penalty}) must be > 0")
        for name in ("logprobs", "prompt_logprobs"):
            if (v := getattr(self, name)) is not None and v < 0:
                raise ValueError(f"{name} ({v}) must be >= 0 (0 = only the chosen token's log-probability)")


def make_generator(seed: int | None) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    return g


def apply_repetition_penalty(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (V,); context (n,) token ids already seen."""
    if penalty == 1.0 or context.numel() == 0:
        return logits
    logits = logits.clone()
    seen = logits[context]
    logits[context] = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) all outside top-k and the top-p nucleus; logits (V,) already temperature-scaled."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, -1) >= top_p  # keep the token that crosses top_p
        logits = logits.clone()
        logits[order[drop]] = float("-inf")
    return logits


def top_logprobs(logprobs: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """The k most likely (token_id, logprob) pairs of logprobs (V,)."""
    if k <= 0:
        return []
    values, ids = torch.topk(logprobs, k)
    return list(zip(ids.tolist(), values.tolist(), strict=True))


def sample_token(
    logits: torch.Tensor, params: SamplingParams, context: torch.Tensor, generator: torch.Generator
) -> int:
    """One token from logits (V,) fp32."""
    logits = apply_repetition_penalty(logits, context, params.repetition_penalty)
    if params.temperature == 0:
        return int(logits.argmax())
    logits = filter_logits(logits / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(logits, -1)
    return int(torch.multinomial(probs, 1, generator=generator))
