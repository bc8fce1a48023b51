"""What a pathway model is: the base architecture (read from the base's HF config) and the pathways."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_BASES = ("llama", "mistral")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass
class ArchConfig:
    """The shared base LM (a Llama/Mistral decoder), mirroring the HF config fields we use."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_parameters: dict[str, Any] = field(
        default_factory=lambda: {"rope_type": "default", "rope_theta": 1e4}
    )
    max_position_embeddings: int = 2048
    attention_bias: bool = False
    sliding_window: int | None = None
    tie_word_embeddings: bool = False
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.model_type not in SUPPORTED_BASES:
            raise ValueError(
                f"base model_type {self.model_type!r} is not supported; use a Llama or Mistral "
                f"architecture base ({', '.join(SUPPORTED_BASES)})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> ArchConfig:
        """Read an HF ``config.json`` dict (Llama or Mistral); reject anything else with a clear error."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_BASES:
            raise ValueError(
                f"base model_type {model_type!r} is not supported; Qwythos needs a Llama or Mistral "
                f"architecture base ({', '.join(SUPPORTED_BASES)})"
            )
        if hf.get("mlp_bias"):
            raise ValueError("bases with mlp_bias=true are not supported (Mixtral experts have no bias)")
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {hf.get('hidden_act')!r} is not supported; Llama/Mistral use silu")
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        rope.setdefault("rope_type", rope.pop("type", "default"))
        rope.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
        heads = hf["num_attention_heads"]
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-5),
            rope_parameters=rope,
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            attention_bias=bool(hf.get("attention_bias", False)),
            sliding_window=hf.get("sliding_window") if model_type == "mistral" else None,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            model_type=model_type,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
        )

    def to_hf(self) -> dict[str, Any]:
        """The HF config dict of the base (what transformers' LlamaConfig/MistralConfig read)."""
        out = {
            "model_type": self.model_type,
            "architectures": ["MistralForCausalLM" if self.model_type == "mistral" else "LlamaForCausalLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": dict(self.rope_parameters),
            "rope_theta": self.rope_parameters.get("rope_theta", 10000.0),
            "max_position_embeddings": self.max_position_embeddings,
            "attention_bias": self.attention_bias,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }
        if self.model_type == "mistral":
            out["sliding_window"] = self.sliding_window
        return out


DEFAULT_PATHWAYS = ("reasoning", "narrative")  # the names a model gets unless told otherwise


@dataclass
class PathwayConfig:
    """The pathways grafted onto every decoder layer's MLP, and how their gate starts."""

    names: list[str] = field(default_factory=lambda: list(DEFAULT_PATHWAYS))  # one LoRA per name
    rank: int = 16  # LoRA rank of each pathway
    alpha: float = 32.0  # LoRA scale is alpha / rank
    dropout: float = 0.0  # dropout on the LoRA input (training only)
    router_init: str = "zero"  # zero | random | prompts (set by `init_router_from_prompts`)
    router_init_std: float = 0.02  # std of the random router init

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("pathways.names is empty; name at least one pathway, e.g. reasoning,narrative")
        for n in self.names:
            if not _NAME.match(n):
                raise ValueError(
                    f"pathway name {n!r} is invalid; use lowercase letters, digits and _ (e.g. reasoning)"
                )
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"pathway names must be unique, got {self.names}")
        if self.rank <= 0:
            raise ValueError(f"rank ({self.rank}) must be > 0, e.g. --rank 16")
        if self.alpha <= 0:
            raise ValueError(f"alpha ({self.alpha}) must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout ({self.dropout}) must be in [0, 1)")
        if self.router_init not in ("zero", "random", "prompts"):
            raise ValueError(f"router_init {self.router_init!r} must be zero, random or prompts")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def index(self, name: str) -> int:
        """Index of pathway ``name``; a clear error lists the valid names."""
        if name not in self.names:
            raise ValueError(f"unknown pathway {name!r}; this model's pathways are {self.names}")
        return self.names.index(name)


@dataclass
class ModelConfig:
    arch: ArchConfig
    pathways: PathwayConfig = field(default_factory=PathwayConfig)
