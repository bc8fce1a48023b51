"""The pathway language model: a Llama/Mistral decoder whose MLPs are pathway blocks.

Read top to bottom: norm, rotary embedding, masks, attention, decoder layer, the model (the KV cache is
``cache.BatchCache``).
Weights use the HF Llama names except two fusions made at load time (``formats.py``):
q/k/v -> ``self_attn.qkv_proj`` and the MLP's gate/up -> ``mlp.pathways.base_gate_up``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .block import ExpertPathways, LoRAPathways, PathwayBlock, Router, Routing
from .cache import BatchCache
from .config import ArchConfig, ModelConfig

SOFT = Routing()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x if x.dtype == torch.float32 else x.float()  # (the casts cost a dispatch each in decoding)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * (xf if xf.dtype == x.dtype else xf.to(x.dtype))


class RotaryEmbedding(nn.Module):
    """cos/sin tables for RoPE; frequencies (incl. llama3/yarn/linear scaling) come from transformers."""

    def __init__(self, arch: ArchConfig):
        super().__init__()
        from transformers import LlamaConfig
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        rope_type = arch.rope_parameters.get("rope_type", "default")
        if rope_type in ("dynamic", "longrope"):
            raise ValueError(f"rope_type {rope_type!r} changes with length and is not supported")
        hf = LlamaConfig(
            **{k: v for k, v in arch.to_hf().items() if k not in ("model_type", "architectures")}
        )
        if rope_type == "default":
            dim = arch.head_dim
            inv_freq = 1.0 / (arch.rope_parameters["rope_theta"] ** (torch.arange(0, dim, 2).float() / dim))
            scaling = 1.0
        else:
            inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](hf, torch.device("cpu"))
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        self.attention_scaling = float(scaling)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (B, 1, T, D): broadcast over heads."""
        freqs = position_ids[:, None, :, None].float() * self.inv_freq  # (B, 1, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(dtype), (emb.sin() * self.attention_scaling).to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, T, D); cos/sin (B, 1, T, D)."""
    return x * cos + _rotate_half(x) * sin


def build_mask(
    q_len: int,
    past: int,
    *,
    key_valid: torch.Tensor | None = None,
    seq_ids: torch.Tensor | None = None,
    sliding_window: int | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor | None:
    """Boolean attention mask (B or 1, 1, q_len, past+q_len), True = may attend; None = plain causal.

    key_valid (B, past+q_len): False for padding slots. seq_ids (B, q_len): packed-sample ids; tokens attend
    only within their own sample. A query whose every key is masked (a padding slot) attends to itself so
    that no NaN is produced.
    """
    total = past + q_len
    if key_valid is None and seq_ids is None and (sliding_window is None or total <= sliding_window):
        return None if past == 0 or q_len == 1 else _causal(q_len, past, device)[None, None]
    qi = torch.arange(past, total, device=device)[:, None]
    ki = torch.arange(total, device=device)[None, :]
    mask = (ki <= qi)[None]  # (1, q, k)
    if sliding_window is not None:
        mask = mask & (qi - ki < sliding_window)[None]
    if seq_ids is not None:
        assert past == 0, "packed sequences are a training feature: no KV cache"
        mask = mask & (seq_ids[:, :, None] == seq_ids[:, None, :])
    if key_valid is not None:
        mask = mask & key_valid[:, None, :].bool()
    mask = mask | (ki == qi)[None]
    return mask[:, None]


def _causal(q_len: int, past: int, device) -> torch.Tensor:
    qi = torch.arange(past, past + q_len, device=device)[:, None]
    return torch.arange(past + q_len, device=device)[None, :] <= qi


class Attention(nn.Module):
    def __init__(self, arch: ArchConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv, self.head_dim = (
            arch.num_attention_heads,
            arch.num_key_value_heads,
            arch.head_dim,
        )
        q, kv = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        self.qkv_proj = nn.Linear(arch.hidden_size, q + 2 * kv, bias=arch.attention_bias)
        self.o_proj = nn.Linear(q, arch.hidden_size, bias=arch.attention_bias)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: BatchCache | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        qk, v = self.qkv_proj(x).split((q_dim + kv_dim, kv_dim), dim=-1)
        qk = apply_rope(qk.reshape(B, T, self.n_heads + self.n_kv, self.head_dim).transpose(1, 2), cos, sin)
        q, k = qk.split((self.n_heads, self.n_kv), dim=1)  # queries and keys rotated in one pass
        v = v.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(self.layer, k, v)
        rep = self.n_heads // self.n_kv
        if rep > 1 and T == 1:  # GQA decode: each kv head's query heads become its query rows, no copy
            m = None if mask is None else mask.expand(B, 1, 1, k.shape[2])
            qg = q.reshape(B, self.n_kv, rep, self.head_dim)  # heads are grouped by kv head
            y = F.scaled_dot_product_attention(qg, k, v, attn_mask=m)  # (B, KVH, rep, D)
            return self.o_proj(y.reshape(B, 1, q_dim))
        if rep > 1:  # GQA prefill: SDPA's math path wants equal heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        causal = mask is None and past == 0 and T > 1
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (B, heads, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, q_dim))


class DecoderLayer(nn.Module):
    def __init__(self, arch: ArchConfig, layer: int, mlp: PathwayBlock):
        super().__init__()
        self.input_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.self_attn = Attention(arch, layer)
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.mlp = mlp

    def forward(self, x, cos, sin, mask, cache, routing):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        y, logits, gates = self.mlp(self.post_attention_layernorm(x), routing)
        return x + y, logits, gates


@dataclass
class Output:
    logits: torch.Tensor  # (B, T, V), or (B, 1, V) with last_only
    router_logits: torch.Tensor | None = None  # (B, T, L, P) before gear bias; with return_router_logits
    gates: torch.Tensor | None = None  # (B, T, L, P) gate weights actually used; with trace


class PathwayLM(nn.Module):
    """Decoder-only LM with pathway blocks. ``experts=True`` builds dense experts (a loaded Mixtral)."""

    def __init__(self, config: ModelConfig, experts: bool = False):
        super().__init__()
        self.config = config
        a, pw = config.arch, config.pathways
        P = len(pw.names)

        def block() -> PathwayBlock:
            if experts:
                paths = ExpertPathways(a.hidden_size, a.intermediate_size, P)
            else:
                paths = LoRAPathways(a.hidden_size, a.intermediate_size, P, pw.rank, pw.scale, pw.dropout)
            return PathwayBlock(Router(a.hidden_size, P), paths)

        self.embed_tokens = nn.Embedding(a.vocab_size, a.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(a, i, block()) for i in range(a.num_hidden_layers))
        self.norm = RMSNorm(a.hidden_size, a.rms_norm_eps)
        self.lm_head = nn.Linear(a.hidden_size, a.vocab_size, bias=False)
        if a.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = RotaryEmbedding(a)
        self.gradient_checkpointing = False
        for name, param in self.named_parameters():  # only the pathways' LoRA and the routers train
            param.requires_grad_(".lora_" in name or ".router." in name)

    @property
    def pathway_names(self) -> list[str]:
        return self.config.pathways.names

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        key_valid: torch.Tensor | None = None,
        seq_ids: torch.Tensor | None = None,
        cache: BatchCache | None = None,
        routing: Routing = SOFT,
        last_only: bool = False,
        trace: bool = False,
        return_router_logits: bool = False,
    ) -> Output:
        """input_ids (B, T). position_ids (B, T) default past..past+T-1. key_valid (B, past+T) marks real
        (non-padding) slots. seq_ids (B, T) separates packed samples. last_only: logits of the last
        position only. trace/return_router_logits: also return per-layer gates / router logits."""
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device).expand(B, T)
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary(position_ids, x.dtype)
        mask = build_mask(
            T,
            past,
            key_valid=key_valid,
            seq_ids=seq_ids,
            sliding_window=self.config.arch.sliding_window,
            device=x.device,
        )
        all_logits, all_gates = [], []
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x, r_logits, gates = checkpoint(layer, x, cos, sin, mask, cache, routing, use_reentrant=False)
            else:
                x, r_logits, gates = layer(x, cos, sin, mask, cache, routing)
            all_logits.append(r_logits)
            all_gates.append(gates)
        if cache is not None:
            cache.length += T
        x = self.norm(x[:, -1:] if last_only else x)
        return Output(
            logits=self.lm_head(x),
            router_logits=torch.stack(all_logits, dim=2) if return_router_logits else None,
            gates=torch.stack(all_gates, dim=2) if trace else None,
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def new_cache(self, batch: int, max_len: int) -> BatchCache:
        """An empty cache for ``batch`` rows and up to ``max_len`` tokens each (the engine also grows it)."""
        p = self.embed_tokens.weight
        return BatchCache(self.config.arch, batch, max_len, p.dtype, p.device)
