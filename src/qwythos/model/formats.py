"""Model folders: build from a base, the native format (save/load), and the Mixtral export.

Native folder (no pickle; loading reads JSON and safetensors only, never code):
    qwythos.json           format, resolved ModelConfig, and the base: a verified reference (source + sha256
                           of each weight file) or an embedded copy under base/
    pathways.safetensors   per layer: router.weight and each pathway's LoRA A/B on gate/up/down
    tokenizer.json ...     tokenizer and chat template
Mixtral export ("train like LoRA, serve like Mixtral"): expert p = W + (alpha/r)·B_p·A_p in fp32, then cast,
under the legacy per-expert keys that transformers, vLLM and llama.cpp's converter read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import from_dict, to_dict
from .base import copy_tokenizer, load_hf_config, load_state_dict, load_tokenizer, resolve_base, sha256_file
from .base import weight_files as base_weight_files
from .block import LoRAPathways
from .config import ArchConfig, ModelConfig, PathwayConfig
from .transformer import PathwayLM

FORMAT, VERSION = "qwythos-pathway-model", 1
NATIVE_CONFIG, PATHWAY_WEIGHTS = "qwythos.json", "pathways.safetensors"
PROJ = ("gate_proj", "up_proj", "down_proj")


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Write into a temp folder beside ``out`` and rename it into place only if everything succeeded."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out {out} exists and is not empty; choose a new folder or delete it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- HF <-> model weights


def load_base_weights(model: PathwayLM, hf: dict[str, torch.Tensor]) -> None:
    """Copy an HF Llama/Mistral state dict into the model's frozen base (fusing qkv and gate/up)."""
    load_shared_weights(model, hf)
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            p, paths = f"model.layers.{i}.mlp.", layer.mlp.pathways
            paths.base_gate_up.copy_(
                torch.cat([_take(hf, p + "gate_proj.weight"), _take(hf, p + "up_proj.weight")])
            )
            paths.base_down.copy_(_take(hf, p + "down_proj.weight"))


def load_shared_weights(model: PathwayLM, hf: dict[str, torch.Tensor]) -> None:
    """Everything but the MLPs: embeddings, attention (q/k/v fused), norms, lm_head unless tied."""
    a = model.config.arch
    with torch.no_grad():
        model.embed_tokens.weight.copy_(_take(hf, "model.embed_tokens.weight"))
        model.norm.weight.copy_(_take(hf, "model.norm.weight"))
        if not a.tie_word_embeddings:
            model.lm_head.weight.copy_(_take(hf, "lm_head.weight"))
        for i, layer in enumerate(model.layers):
            p, attn = f"model.layers.{i}.", layer.self_attn
            attn.qkv_proj.weight.copy_(
                torch.cat([_take(hf, p + f"self_attn.{n}_proj.weight") for n in "qkv"])
            )
            if a.attention_bias:
                attn.qkv_proj.bias.copy_(
                    torch.cat([_take(hf, p + f"self_attn.{n}_proj.bias") for n in "qkv"])
                )
            attn.o_proj.weight.copy_(_take(hf, p + "self_attn.o_proj.weight"))
            if a.attention_bias:
                attn.o_proj.bias.copy_(_take(hf, p + "self_attn.o_proj.bias"))
            layer.input_layernorm.weight.copy_(_take(hf, p + "input_layernorm.weight"))
            layer.post_attention_layernorm.weight.copy_(_take(hf, p + "post_attention_layernorm.weight"))


def _take(hf: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in hf:
        raise ValueError(f"weights lack {key!r}; is this a Llama/Mistral (or Mixtral) checkpoint?")
    return hf[key]


def shared_hf_weights(model: PathwayLM) -> dict[str, torch.Tensor]:
    """Everything but the MLPs, in HF names (attention unfused); lm_head always written explicitly."""
    a = model.config.arch
    q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    out = {
        "model.embed_tokens.weight": model.embed_tokens.weight,
        "model.norm.weight": model.norm.weight,
        "lm_head.weight": model.lm_head.weight,
    }
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        for n, w in zip("qkv", layer.self_attn.qkv_proj.weight.split((q, kv, kv)), strict=True):
            out[p + f"self_attn.{n}_proj.weight"] = w
        if a.attention_bias:
            for n, b in zip("qkv", layer.self_attn.qkv_proj.bias.split((q, kv, kv)), strict=True):
                out[p + f"self_attn.{n}_proj.bias"] = b
            out[p + "self_attn.o_proj.bias"] = layer.self_attn.o_proj.bias
        out[p + "self_attn.o_proj.weight"] = layer.self_attn.o_proj.weight
        out[p + "input_layernorm.weight"] = layer.input_layernorm.weight
        out[p + "post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight
    return out


def base_hf_weights(model: PathwayLM) -> dict[str, torch.Tensor]:
    """The base model's weights in HF Llama names (what ``load_base_weights`` reads)."""
    out = shared_hf_weights(model)
    I = model.config.arch.intermediate_size
    for i, layer in enumerate(model.layers):
        p, paths = f"model.layers.{i}.mlp.", layer.mlp.pathways
        out[p + "gate_proj.weight"], out[p + "up_proj.weight"] = (
            paths.base_gate_up[:I],
            paths.base_gate_up[I:],
        )
        out[p + "down_proj.weight"] = paths.base_down
    if model.config.arch.tie_word_embeddings:
        del out["lm_head.weight"]
    return out


# ---------------------------------------------------------------- pathway weights (router + LoRA)


def pathway_weights(model: PathwayLM) -> dict[str, torch.Tensor]:
    """Router and LoRA tensors, one entry per pathway: ``layers.L.<pathway>.<proj>.lora_{A,B}``."""
    out = {}
    for i, layer in enumerate(model.layers):
        paths: LoRAPathways = layer.mlp.pathways
        out[f"layers.{i}.router.weight"] = layer.mlp.router.weight
        for p, name in enumerate(model.pathway_names):
            pre = f"layers.{i}.{name}."
            for k, proj in enumerate(PROJ[:2]):
                out[pre + f"{proj}.lora_A"] = paths.lora_A_gate_up[p, k]
                out[pre + f"{proj}.lora_B"] = paths.lora_B_gate_up[p, k]
            out[pre + "down_proj.lora_A"] = paths.lora_A_down[p]
            out[pre + "down_proj.lora_B"] = paths.lora_B_down[p]
    return {k: v.detach().contiguous() for k, v in out.items()}


def load_pathway_weights(model: PathwayLM, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Inverse of ``pathway_weights``; strict=False leaves pathways absent from ``state`` as they are."""
    expected = pathway_weights(model)
    missing = sorted(set(expected) - set(state))
    if strict and missing:
        raise ValueError(
            f"pathway weights lack {len(missing)} tensors, e.g. {missing[:3]}; the file is incomplete"
        )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(f"pathway weights have tensors this model does not: {unexpected[:3]}")
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            paths = layer.mlp.pathways
            if (key := f"layers.{i}.router.weight") in state:
                _copy(layer.mlp.router.weight, state[key], key)
            for p, name in enumerate(model.pathway_names):
                pre = f"layers.{i}.{name}."
                for k, proj in enumerate(PROJ[:2]):
                    if pre + f"{proj}.lora_A" in state:
                        _copy(paths.lora_A_gate_up[p, k], state[pre + f"{proj}.lora_A"], pre + proj)
                        _copy(paths.lora_B_gate_up[p, k], state[pre + f"{proj}.lora_B"], pre + proj)
                if pre + "down_proj.lora_A" in state:
                    _copy(paths.lora_A_down[p], state[pre + "down_proj.lora_A"], pre + "down_proj")
                    _copy(paths.lora_B_down[p], state[pre + "down_proj.lora_B"], pre + "down_proj")


def _copy(dst: torch.Tensor, src: torch.Tensor, key: str) -> None:
    if dst.shape != src.shape:
        raise ValueError(
            f"{key}: shape {tuple(src.shape)} does not match the model's {tuple(dst.shape)} "
            f"(different rank or base?)"
        )
    dst.copy_(src)


# ---------------------------------------------------------------- building and the native folder


def build_model(
    base: str | Path | None, pathways: PathwayConfig, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[PathwayLM, Path]:
    """A fresh pathway model on a base (LoRA B = 0, so it computes exactly the base); and the base folder."""
    folder = resolve_base(base)
    arch = ArchConfig.from_hf(load_hf_config(folder))
    torch.manual_seed(seed)
    model = PathwayLM(ModelConfig(arch=arch, pathways=pathways))
    load_base_weights(model, load_state_dict(folder))
    if pathways.router_init == "random":
        with torch.no_grad():
            for layer in model.layers:
                layer.mlp.router.weight.normal_(0.0, pathways.router_init_std)
    return model.to(dtype), folder


def save_model(
    model: PathwayLM, out: Path, base_source: str, base_folder: Path, embed_base: bool = False
) -> Path:
    """Write a native folder. The base is referenced by source + sha256, or embedded under base/."""
    out = Path(out)
    with atomic_folder(out) as tmp:
        if embed_base:
            (tmp / "base").mkdir()
            save_file(
                {k: v.detach().contiguous() for k, v in base_hf_weights(model).items()},
                tmp / "base" / "model.safetensors",
            )
            (tmp / "base" / "config.json").write_text(json.dumps(model.config.arch.to_hf(), indent=2))
            base = {
                "source": "base",
                "embedded": True,
                "files": {"model.safetensors": sha256_file(tmp / "base" / "model.safetensors")},
            }
        else:
            base = {
                "source": str(base_source),
                "embedded": False,
                "files": {f.name: sha256_file(f) for f in base_weight_files(base_folder)},
            }
        save_file(pathway_weights(model), tmp / PATHWAY_WEIGHTS)
        copy_tokenizer(base_folder if not (base_folder / NATIVE_CONFIG).exists() else base_folder, tmp)
        meta = {"format": FORMAT, "version": VERSION, "config": to_dict(model.config), "base": base}
        (tmp / NATIVE_CONFIG).write_text(json.dumps(meta, indent=2))
    return out


def read_native_config(folder: Path) -> tuple[ModelConfig, dict]:
    path = Path(folder) / NATIVE_CONFIG
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path} is missing or unreadable ({e}); is {folder} a Qwythos model folder?"
        ) from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{path}: format {meta.get('format')!r} v{meta.get('version')} is not {FORMAT} v{VERSION}"
        )
    cfg = meta["config"]
    config = ModelConfig(
        arch=from_dict(ArchConfig, cfg["arch"], "arch"),
        pathways=from_dict(PathwayConfig, cfg["pathways"], "pathways"),
    )
    return config, meta["base"]


def native_base_folder(folder: Path, base: dict) -> Path:
    """Locate the base a native folder refers to and verify its weight hashes."""
    src = Path(folder) / "base" if base["embedded"] else resolve_base(base["source"])
    for name, digest in base["files"].items():
        f = src / name
        if not f.is_file():
            raise FileNotFoundError(
                f"{folder}: base weight file {f} is missing; restore it or re-run `qwythos init`"
            )
        if sha256_file(f) != digest:
            raise ValueError(
                f"{folder}: base weights {f} changed since this model was made (sha256 mismatch); "
                f"restore the original base or re-run `qwythos init`"
            )
    return src


def load_native(folder: Path, dtype: torch.dtype = torch.float32) -> PathwayLM:
    folder = Path(folder)
    config, base = read_native_config(folder)
    model = PathwayLM(config)
    load_base_weights(model, load_state_dict(native_base_folder(folder, base)))
    try:
        state = load_file(folder / PATHWAY_WEIGHTS)
    except Exception as e:
        raise ValueError(
            f"{folder / PATHWAY_WEIGHTS} is missing or corrupt ({e}); re-save the model"
        ) from None
    load_pathway_weights(model, state)
    return model.to(dtype)


# ---------------------------------------------------------------- Mixtral export and load


def mixtral_config(model: PathwayLM, mode: str, dtype: torch.dtype) -> dict:
    a, names = model.config.arch, model.pathway_names
    if a.attention_bias:
        raise ValueError(
            "this base has attention biases, which Mixtral cannot hold; export needs a bias-free base"
        )
    hf = a.to_hf()
    for k in ("architectures", "model_type", "attention_bias"):
        hf.pop(k, None)
    return {
        **hf,
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "num_local_experts": len(names),
        "num_experts_per_tok": 1 if mode == "top1" else len(names),
        "sliding_window": a.sliding_window,
        "tie_word_embeddings": False,
        "output_router_logits": False,
        "router_aux_loss_coef": 0.0,
        "router_jitter_noise": 0.0,
        "dtype": str(dtype).removeprefix("torch."),
        "qwythos_pathways": list(names),
        "qwythos_mode": mode,
    }


def mixtral_checkpoint(
    model: PathwayLM, mode: str = "soft", dtype: torch.dtype = torch.float32
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The Mixtral config and state dict (legacy w1/w2/w3 keys) of a pathway model: every pathway materialised
    as one expert. Both exports, the safetensors folder and the GGUF file, write exactly these tensors."""
    if mode not in ("soft", "top1"):
        raise ValueError(f"--mode {mode!r}: export supports soft or top1")
    if len(model.pathway_names) < 2:
        raise ValueError("a Mixtral export needs at least 2 pathways")
    config = mixtral_config(model, mode, dtype)
    state = {k: v.detach().to(dtype).contiguous().clone() for k, v in shared_hf_weights(model).items()}
    for i, layer in enumerate(model.layers):
        moe = f"model.layers.{i}.block_sparse_moe."
        state[moe + "gate.weight"] = layer.mlp.router.weight.detach().to(dtype).contiguous()
        for p in range(len(model.pathway_names)):
            w = layer.mlp.pathways.materialise(p)  # fp32
            for key, proj in (("w1", "gate"), ("w3", "up"), ("w2", "down")):
                state[moe + f"experts.{p}.{key}.weight"] = w[proj].to(dtype).contiguous()
    return config, state


def export_mixtral(
    model: PathwayLM, out: Path, tokenizer_src: Path, mode: str = "soft", dtype: torch.dtype = torch.float32
) -> Path:
    """Materialise every pathway into a standard Mixtral checkpoint folder (legacy w1/w2/w3 keys)."""
    config, state = mixtral_checkpoint(model, mode, dtype)
    with atomic_folder(out) as tmp:
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        copy_tokenizer(tokenizer_src, tmp)
    return Path(out)


def load_mixtral(folder: Path, dtype: torch.dtype = torch.float32) -> tuple[PathwayLM, str]:
    """A Mixtral folder (ours or any with legacy keys) as a PathwayLM with dense experts; and its mode."""
    return mixtral_from_state(load_hf_config(folder), load_state_dict(folder), dtype, where=folder)


def mixtral_from_state(
    hf: dict, state: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32, where: Path | str = ""
) -> tuple[PathwayLM, str]:
    """A Mixtral config + state dict (legacy keys) as a PathwayLM with dense experts; and its mode."""
    n, k = hf["num_local_experts"], hf.get("num_experts_per_tok", 2)
    if k not in (1, n):
        raise ValueError(
            f"{where}: num_experts_per_tok={k}; only top-1 or all-experts Mixtrals can be loaded"
        )
    names = hf.get("qwythos_pathways") or [f"expert_{e}" for e in range(n)]
    arch = ArchConfig.from_hf({**hf, "model_type": "mistral" if hf.get("sliding_window") else "llama"})
    model = PathwayLM(ModelConfig(arch=arch, pathways=PathwayConfig(names=names)), experts=True)
    if any(".mlp.experts.gate_up_proj" in key for key in state):
        raise ValueError(
            f"{where}: fused expert keys (mlp.experts.gate_up_proj); re-save with legacy w1/w2/w3 keys"
        )
    load_shared_weights(model, state)
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            moe, experts = f"model.layers.{i}.block_sparse_moe.", layer.mlp.pathways
            layer.mlp.router.weight.copy_(_take(state, moe + "gate.weight"))
            w = {
                k: [_take(state, moe + f"experts.{e}.{k}.weight") for e in range(n)]
                for k in ("w1", "w2", "w3")
            }
            experts.gate_up.copy_(
                torch.stack([torch.cat([g, u]) for g, u in zip(w["w1"], w["w3"], strict=True)])
            )
            experts.down.copy_(torch.stack(w["w2"]))
    return model.to(dtype), "top1" if k == 1 else "soft"


# ---------------------------------------------------------------- one entry point for any model folder


def load_model(folder: str | Path, dtype: torch.dtype = torch.float32) -> tuple[PathwayLM, object, str]:
    """Load a native folder, a Mixtral folder or a Mixtral .gguf file: (model, tokenizer, routing mode)."""
    folder = Path(folder)
    if folder.suffix == ".gguf" and folder.is_file():
        from .gguf import load_gguf

        model, tokenizer, mode = load_gguf(folder, dtype)
        model.eval()
        return model, tokenizer, mode
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist; create one with `qwythos init`")
    if (folder / NATIVE_CONFIG).is_file():
        model, mode = load_native(folder, dtype), "soft"
    elif (folder / "config.json").is_file() and load_hf_config(folder).get("model_type") == "mixtral":
        model, mode = load_mixtral(folder, dtype)
    else:
        raise ValueError(
            f"{folder} is neither a Qwythos model folder ({NATIVE_CONFIG}) nor a Mixtral export (or .gguf)"
        )
    model.eval()
    return model, load_tokenizer(folder), mode
