"""The model verbs as typed functions: ``init_model`` and ``export_model`` (the CLI calls these)."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import DEFAULT_BASE
from .config import DEFAULT_PATHWAYS, PathwayConfig
from .formats import (
    build_model,
    export_mixtral,
    load_native,
    native_base_folder,
    read_native_config,
    save_model,
)
from .router_init import init_router_from_prompts

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def init_model(
    out: Path,
    base: str | Path | None = None,
    pathways: list[str] | tuple[str, ...] = DEFAULT_PATHWAYS,
    rank: int = 16,
    alpha: float | None = None,
    dropout: float = 0.0,
    router_init: str = "zero",
    router_prompts: dict[str, list[str]] | None = None,
    embed_base: bool = False,
    seed: int = 0,
) -> Path:
    """Write an untrained pathway model folder (LoRA B = 0: it computes exactly the base)."""
    cfg = PathwayConfig(
        names=[p.strip() for p in pathways if p.strip()],
        rank=rank,
        alpha=float(alpha if alpha is not None else 2 * rank),
        dropout=dropout,
        router_init=router_init,
    )
    if Path(out).exists() and any(Path(out).iterdir()):  # fail before the (slow) base load
        raise FileExistsError(f"--out {out} exists and is not empty; choose a new folder or delete it")
    model, folder = build_model(base, cfg, seed=seed)
    if router_prompts is not None:
        from .base import load_tokenizer

        init_router_from_prompts(model, load_tokenizer(folder), router_prompts)
    return save_model(
        model, Path(out), base_source=str(base or DEFAULT_BASE), base_folder=folder, embed_base=embed_base
    )


def export_model(
    model_dir: Path,
    out: Path,
    mode: str = "soft",
    dtype: str | None = None,
    to: str = "mixtral",
    quant: str | None = None,
) -> Path:
    """Export a native pathway folder as a standard Mixtral checkpoint folder or one Mixtral GGUF file."""
    if to not in ("mixtral", "gguf"):
        raise ValueError(f"--to {to!r} must be mixtral (a safetensors folder) or gguf (one llama.cpp file)")
    if to == "mixtral" and quant is not None:
        raise ValueError("--quant is for --to gguf; a Mixtral folder takes --dtype float32|bfloat16|float16")
    if to == "gguf" and dtype is not None:
        raise ValueError("--dtype is for --to mixtral; a GGUF file takes --quant f32|f16|bf16|q8_0|q4_0")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} must be one of {sorted(DTYPES)}")
    if to == "gguf":
        from .gguf import QUANTS, export_gguf

        if (quant := quant or "f16") not in QUANTS:
            raise ValueError(f"--quant {quant!r} must be one of {', '.join(QUANTS)}")
    model_dir = Path(model_dir)
    config, base = read_native_config(model_dir)  # validates before loading weights
    if config.arch.model_type not in ("llama", "mistral"):
        raise ValueError(f"export needs a Llama/Mistral base, this model's base is {config.arch.model_type}")
    native_base_folder(model_dir, base)
    model = load_native(model_dir)
    if to == "gguf":
        return export_gguf(model, Path(out), model_dir, mode=mode, quant=quant, pre=_base_pre_tokenizer(base))
    dt = DTYPES[dtype or "float32"]
    return export_mixtral(model, Path(out), tokenizer_src=model_dir, mode=mode, dtype=dt)


def _base_pre_tokenizer(base: dict) -> str | None:
    """A base converted from a GGUF keeps that file's pre-tokenizer name (SmolLM2: smollm); else None: the
    exporter reads it off tokenizer.json."""
    from gguf import GGUFReader

    from .base import base_gguf

    if base["embedded"] or (gguf := base_gguf(base["source"])) is None:
        return None

    field = GGUFReader(gguf).fields.get("tokenizer.ggml.pre")
    return field.contents() if field is not None else None
