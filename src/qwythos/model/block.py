"""The pathway block that replaces each decoder layer's MLP: a router and P pathways, blended per token.

    g = softmax((router(x) + gear_bias) / temperature)         # (N, P), soft mode
    y = sum_p g_p * FFN_p(x)                                    # FFN_p = base FFN + pathway p's LoRA

LoRA pathways share the frozen base projections: W_gate·x and W_up·x are computed once and each pathway
adds its low-rank delta; because the down projection is linear, the base down projection is applied
once to sum_p g_p * h_p. `top1` and `force` compute only the chosen pathway for each token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("soft", "top1", "force")


@dataclass(frozen=True)
class Routing:
    """How the gate is applied in one forward: an inference control, not a parameter."""

    mode: str = "soft"  # soft: blend all pathways | top1: only the argmax pathway | force: one named pathway
    force: int | None = None  # pathway index for mode="force"
    gear_bias: torch.Tensor | None = None  # (P,) or (B, P): logit offset per pathway (a "gear" nudge)
    temperature: float = 1.0  # soft-mode softmax temperature (annealing toward top1 uses < 1)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"routing mode {self.mode!r} must be one of {MODES}")
        if (self.mode == "force") != (self.force is not None):
            raise ValueError("mode='force' needs force=<pathway index>, and force needs mode='force'")
        if self.temperature <= 0:
            raise ValueError(f"temperature ({self.temperature}) must be > 0")

    def gate(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Gate weights (B, T, P) from router logits (B, T, P); the chosen pathway (B, T) for top1/force."""
        if self.gear_bias is not None:
            bias = self.gear_bias.to(logits)
            logits = logits + (bias[:, None, :] if bias.dim() == 2 else bias)
        P = logits.shape[-1]
        if self.mode == "soft":
            return torch.softmax(
                logits if self.temperature == 1.0 else logits / self.temperature, dim=-1
            ), None
        if self.mode == "top1":
            choice = logits.argmax(dim=-1)
        else:
            choice = torch.full(logits.shape[:-1], self.force, dtype=torch.long, device=logits.device)
        return F.one_hot(choice, P).to(logits.dtype), choice


class Router(nn.Module):
    """Linear(hidden, P, bias=False) on the post-attention-norm hidden state, computed in fp32."""

    def __init__(self, hidden: int, num_pathways: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_pathways, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:
            return F.linear(x, self.weight)  # (..., P)
        return F.linear(x.float(), self.weight.float())


def _by_choice(n: int, choice: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn(rows, p)`` to the rows (of n) that chose pathway p, for each chosen p; (n, H) out."""
    first = int(choice[0])
    if n == 1 or bool((choice == first).all()):  # the common case in decoding: no gather/scatter
        return fn(slice(None), first)
    out = None
    for p in choice.unique().tolist():
        rows = (choice == p).nonzero().squeeze(1)
        y = fn(rows, p)
        if out is None:
            out = y.new_empty(n, y.shape[1])
        out[rows] = y
    return out


class LoRAPathways(nn.Module):
    """Frozen base SwiGLU FFN + one LoRA per pathway on gate_proj, up_proj and down_proj.

    Parameters (P pathways, rank r, hidden H, intermediate I):
      base_gate_up (2I, H) frozen: [W_gate; W_up]     base_down (H, I) frozen
      lora_A_gate_up (P, 2, r, H)   lora_B_gate_up (P, 2, I, r)
      lora_A_down (P, r, I)         lora_B_down (P, H, r)
    FFN_p(x) = (W_d + s B_dp A_dp) (silu((W_g + s B_gp A_gp) x) * (W_u + s B_up A_up) x), s = alpha / r.
    """

    def __init__(
        self, hidden: int, intermediate: int, num_pathways: int, rank: int, scale: float, dropout: float = 0.0
    ):
        super().__init__()
        H, I, P, r = hidden, intermediate, num_pathways, rank
        self.hidden, self.intermediate, self.num_pathways, self.rank, self.scale = H, I, P, r, scale
        self.base_gate_up = nn.Parameter(torch.empty(2 * I, H), requires_grad=False)
        self.base_down = nn.Parameter(torch.empty(H, I), requires_grad=False)
        self.lora_A_gate_up = nn.Parameter(torch.empty(P, 2, r, H))
        self.lora_B_gate_up = nn.Parameter(torch.zeros(P, 2, I, r))
        self.lora_A_down = nn.Parameter(torch.empty(P, r, I))
        self.lora_B_down = nn.Parameter(torch.zeros(P, H, r))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_lora()

    @torch.no_grad()
    def reset_lora(self) -> None:
        """peft's default LoRA init: A kaiming-uniform, B zero (so the model starts as the base)."""
        for A in (self.lora_A_gate_up, self.lora_A_down):
            bound = 1.0 / math.sqrt(A.shape[-1])  # kaiming_uniform_(a=sqrt(5)) on (r, in)
            A.uniform_(-bound, bound)
        self.lora_B_gate_up.zero_()
        self.lora_B_down.zero_()

    def forward(self, x: torch.Tensor, gates: torch.Tensor, choice: torch.Tensor | None) -> torch.Tensor:
        """x (N, H), gates (N, P); with ``choice`` (N,) only that pathway is computed for each token."""
        gu = F.linear(x, self.base_gate_up)  # (N, 2I), shared by every pathway
        xa = self.dropout(x)
        if choice is not None:
            return _by_choice(x.shape[0], choice, lambda rows, p: self._one(xa[rows], gu[rows], p))
        return self._soft(xa, gu, gates if gates.dtype == x.dtype else gates.to(x.dtype))

    def _soft(self, xa: torch.Tensor, gu: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        N, (P, r, I, H, s) = (
            xa.shape[0],
            (self.num_pathways, self.rank, self.intermediate, self.hidden, self.scale),
        )
        a = F.linear(xa, self.lora_A_gate_up.reshape(P * 2 * r, H))  # (N, P*2*r)
        a = a.view(N, P * 2, r).transpose(0, 1)  # (2P, N, r)
        d = torch.bmm(a, self.lora_B_gate_up.reshape(P * 2, I, r).transpose(1, 2))  # (2P, N, I)
        d = d.view(P, 2, N, I)
        h = F.silu(torch.add(gu[:, :I], d[:, 0], alpha=s)) * torch.add(gu[:, I:], d[:, 1], alpha=s)  # (P,N,I)
        g = gates.t().unsqueeze(-1)  # (P, N, 1)
        h_mix = (g * h).sum(0)  # (N, I)
        z = g * torch.bmm(h, self.lora_A_down.transpose(1, 2))  # (P, N, r)
        y = F.linear(h_mix, self.base_down)
        if N <= 16:  # decoding: per-pathway products summed, no copy of B (a copy costs more than the math)
            return torch.add(y, torch.bmm(z, self.lora_B_down.transpose(1, 2)).sum(0), alpha=s)
        B_down = self.lora_B_down.permute(1, 0, 2).reshape(H, P * r)  # many tokens: one product, all ranks
        return torch.addmm(y, z.transpose(0, 1).reshape(N, P * r), B_down.t(), alpha=s)

    def _one(self, xa: torch.Tensor, gu: torch.Tensor, p: int) -> torch.Tensor:
        r, I, s = self.rank, self.intermediate, self.scale
        a = F.linear(xa, self.lora_A_gate_up[p].reshape(2 * r, self.hidden))  # (n, 2r)
        gate = torch.addmm(gu[:, :I], a[:, :r], self.lora_B_gate_up[p, 0].t(), alpha=s)  # W_g x + s B A x
        up = torch.addmm(gu[:, I:], a[:, r:], self.lora_B_gate_up[p, 1].t(), alpha=s)
        h = F.silu(gate) * up  # (n, I)
        y = F.linear(h, self.base_down)
        return torch.addmm(y, F.linear(h, self.lora_A_down[p]), self.lora_B_down[p].t(), alpha=s)

    @torch.no_grad()
    def materialise(self, p: int) -> dict[str, torch.Tensor]:
        """Pathway p as dense fp32 weights W + s·B·A: {'gate': (I, H), 'up': (I, H), 'down': (H, I)}."""
        I, s = self.intermediate, self.scale
        W = self.base_gate_up.float()
        A, B = self.lora_A_gate_up[p].float(), self.lora_B_gate_up[p].float()
        return {
            "gate": W[:I] + s * B[0] @ A[0],
            "up": W[I:] + s * B[1] @ A[1],
            "down": self.base_down.float() + s * self.lora_B_down[p].float() @ self.lora_A_down[p].float(),
        }


class ExpertPathways(nn.Module):
    """P independent dense SwiGLU experts (what an exported Mixtral checkpoint holds)."""

    def __init__(self, hidden: int, intermediate: int, num_pathways: int):
        super().__init__()
        self.hidden, self.intermediate, self.num_pathways = hidden, intermediate, num_pathways
        self.gate_up = nn.Parameter(torch.empty(num_pathways, 2 * intermediate, hidden), requires_grad=False)
        self.down = nn.Parameter(torch.empty(num_pathways, hidden, intermediate), requires_grad=False)

    def forward(self, x: torch.Tensor, gates: torch.Tensor, choice: torch.Tensor | None) -> torch.Tensor:
        if choice is not None:
            return _by_choice(x.shape[0], choice, lambda rows, p: self._one(x[rows], p))
        g = gates.to(x.dtype)
        return sum(g[:, p : p + 1] * self._one(x, p) for p in range(self.num_pathways))

    def _one(self, x: torch.Tensor, p: int) -> torch.Tensor:
        gate, up = F.linear(x, self.gate_up[p]).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.down[p])

    @torch.no_grad()
    def materialise(self, p: int) -> dict[str, torch.Tensor]:
        I = self.intermediate
        W = self.gate_up[p].float()
        return {"gate": W[:I], "up": W[I:], "down": self.down[p].float()}


class PathwayBlock(nn.Module):
    """Router + pathways. Returns the blended output, the router logits and the gate weights used."""

    def __init__(self, router: Router, pathways: LoRAPathways | ExpertPathways):
        super().__init__()
        self.router = router
        self.pathways = pathways

    def forward(self, x: torch.Tensor, routing: Routing) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, H = x.shape
        logits = self.router(x)  # (B, T, P) fp32
        gates, choice = routing.gate(logits)
        P = gates.shape[-1]
        flat_choice = None if choice is None else choice.reshape(-1)
        y = self.pathways(x.reshape(-1, H), gates.reshape(-1, P), flat_choice)
        return y.view(B, T, H), logits, gates
