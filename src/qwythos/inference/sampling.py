"""Turning next-token logits into tokens: greedy, temperature, top-k, top-p, repetition penalty, seeds —
and gear-conditioned sampling, which only a gated model can do.

``GearSampling`` gives each pathway its own temperature / top-p / top-k (e.g. reasoning greedy, narrative
T = 0.8, top-p 0.95) and picks them per token from the gate at the position that produces the logits (the
mean over layers): ``policy="argmax"`` takes the most-weighted pathway's settings; ``"blend"`` takes the
gate-weighted mean temperature and top-p (and the argmax pathway's top-k). A monolith has one temperature
per request; the hybrid can work a sum out greedily inside a sampled story.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

# Temperatures below this decode greedily (vLLM's convention): logits / 1e-300 overflows to inf and the
# softmax to NaN, and any temperature this small is greedy in effect anyway.
GREEDY_BELOW = 1e-5


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 (or anything below GREEDY_BELOW) = greedy
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


@dataclass(frozen=True)
class PathwaySampling:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)  # same checks


POLICIES = ("argmax", "blend")


@dataclass(frozen=True)
class GearSampling:
    per_pathway: dict[str, PathwaySampling]
    policy: str = "argmax"

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"gear sampling policy {self.policy!r} must be one of {list(POLICIES)}")
        if not self.per_pathway:
            raise ValueError("gear sampling needs settings for at least one pathway, e.g. narrative:t=0.8")

    def check(self, pathways: list[str]) -> None:
        unknown = sorted(set(self.per_pathway) - set(pathways))
        if unknown:
            raise ValueError(f"gear sampling names unknown pathways {unknown}; the model has {pathways}")

    def params_for(self, base: SamplingParams, weights: torch.Tensor, pathways: list[str]) -> SamplingParams:
        """``base`` with the sampling settings the gate ``weights`` (P,) choose for this token; a pathway
        without settings keeps the request's own."""
        own = PathwaySampling(base.temperature, base.top_p, base.top_k)
        per = [self.per_pathway.get(p, own) for p in pathways]
        top = per[int(weights.argmax())]
        if self.policy == "argmax":
            t, top_p = top.temperature, top.top_p
        else:
            w = (weights.float() / weights.float().sum()).tolist()
            t = sum(wi * s.temperature for wi, s in zip(w, per, strict=True))
            top_p = min(1.0, sum(wi * s.top_p for wi, s in zip(w, per, strict=True)))
        return dataclasses.replace(base, temperature=t, top_p=top_p, top_k=top.top_k)


def parse_gear_sampling(text: str, policy: str = "argmax") -> GearSampling:
    """'reasoning:t=0;narrative:t=0.8,top_p=0.95' -> GearSampling (the CLI's --gear-sampling)."""
    keys = {"t": "temperature", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k"}
    per = {}
    for part in filter(None, (x.strip() for x in text.split(";"))):
        name, _, settings = part.partition(":")
        values: dict = {}
        for item in filter(None, (x.strip() for x in settings.split(","))):
            k, _, v = item.partition("=")
            if k not in keys or not v:
                raise ValueError(
                    f"--gear-sampling {part!r}: use pathway:t=T,top_p=P,top_k=K (narrative:t=0.8,top_p=0.95)"
                )
            values[keys[k]] = int(v) if keys[k] == "top_k" else float(v)
        per[name.strip()] = PathwaySampling(**values)
    return GearSampling(per, policy)


# the default of chat, generate --chat, the quickstart demo: sums greedily, stories sampled, a mild penalty
DEFAULT_GEAR_SAMPLING = GearSampling(
    {"reasoning": PathwaySampling(0.0), "narrative": PathwaySampling(0.8, 0.95)}, "argmax"
)
CHAT_REPETITION_PENALTY = 1.1


def for_model(gs: GearSampling, pathways: list[str]) -> GearSampling | None:
    """The default's settings for the pathways this model has (None when it has none of them)."""
    per = {p: s for p, s in gs.per_pathway.items() if p in pathways}
    return GearSampling(per, gs.policy) if per and len(pathways) > 1 else None


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
        drop[0] = False  # and always the most likely one (a top_p of 5e-324 is 0 in float32)
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
    if params.temperature < GREEDY_BELOW:
        return int(logits.argmax())
    logits = filter_logits(logits / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(logits, -1)
    return int(torch.multinomial(probs, 1, generator=generator))
