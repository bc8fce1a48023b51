"""GGUF export and load: the Mixtral export as one file that llama.cpp, Ollama and LM Studio load unchanged.

    qwythos export MODEL --to gguf --out model.gguf [--mode soft|top1] [--quant f32|f16|bf16|q8_0|q4_0]
    qwythos generate model.gguf --prompt "..."     # Qwythos reads its own GGUF back (dequantised to fp32)

The file is what llama.cpp's convert_hf_to_gguf.py writes for a Mixtral checkpoint: architecture "llama" with
expert_count / expert_used_count (top1: 1, soft: every expert, i.e. softmax over all router logits), each
layer's experts stacked into ffn_{gate,up,down}_exps (E, out, in), the router as ffn_gate_inp, q/k rows
permuted into llama.cpp's rope layout, the GPT-2 byte-level BPE tokenizer (tokens, types, merges, special
ids, pre-tokenizer) and the chat template. Its tensors are ``mixtral_checkpoint``'s, the ones the Mixtral
folder export writes, so the two exports cannot disagree.

Quant types (the converter's rules): norms, the router and 1-D tensors stay f32; every other matrix,
token_embd and output included, is f32 / f16 / bf16 / q8_0 / q4_0 (q8_0 and q4_0 quantised in numpy by
gguf.quants). q4_0 keeps output.weight at q8_0: llama-quantize gives it q6_K, which gguf.quants cannot write.
K-quants come from a llama.cpp build: export f16 (or f32), then ``llama-quantize model.gguf out.gguf Q4_K_M``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from gguf import (
    GGML_QUANT_VERSION,
    GGMLQuantizationType,
    GGUFReader,
    GGUFType,
    GGUFValueType,
    GGUFWriter,
    LlamaFileType,
    RopeScalingType,
    SpecialVocab,
    TokenType,
)
from gguf.quants import QuantError, dequantize, quantize

from .base import load_tokenizer
from .formats import mixtral_checkpoint, mixtral_from_state
from .transformer import PathwayLM

log = logging.getLogger(__name__)

ARCH = "llama"  # llama.cpp writes Mixtral as llama + experts
Q = GGMLQuantizationType
QUANTS: dict[str, tuple[GGMLQuantizationType, LlamaFileType]] = {
    "f32": (Q.F32, LlamaFileType.ALL_F32),
    "f16": (Q.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (Q.Q4_0, LlamaFileType.MOSTLY_Q4_0),
}
GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
          "lm_head.weight": "output.weight"}  # fmt: skip
LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "block_sparse_moe.gate.weight": "ffn_gate_inp.weight",
}
EXPERTS = {"w1": "ffn_gate_exps.weight", "w3": "ffn_up_exps.weight", "w2": "ffn_down_exps.weight"}
F32_ALWAYS = ("_norm.weight", "ffn_gate_inp.weight")  # llama.cpp keeps these (and every 1-D tensor) f32


# ---------------------------------------------------------------- rope layout of q/k rows


def rope_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """HF rows (rotate-half: the two halves of each head) -> llama.cpp rows (interleaved pairs)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of ``rope_permute`` (what transformers' GGUF loader does for a Llama GGUF)."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------- Mixtral state dict <-> GGUF tensors


def gguf_tensors(config: dict, state: dict[str, torch.Tensor]) -> Iterator[tuple[str, np.ndarray]]:
    """The Mixtral state dict as GGUF tensors (fp32 numpy, numpy axis order), in llama.cpp's names."""
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    for hf, name in GLOBAL.items():
        yield name, _np(state[hf])
    for i in range(config["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        for hf, name in LAYER.items():
            w = _np(state[pre + hf])
            if hf == "self_attn.q_proj.weight":
                w = rope_permute(w, heads)
            elif hf == "self_attn.k_proj.weight":
                w = rope_permute(w, kv_heads)
            yield f"blk.{i}.{name}", w
        for key, name in EXPERTS.items():
            experts = [state[pre + f"block_sparse_moe.experts.{e}.{key}.weight"] for e in range(_n(config))]
            yield f"blk.{i}.{name}", _np(torch.stack(experts))  # (E, out, in)


def mixtral_state(config: dict, tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The inverse of ``gguf_tensors``: GGUF tensors back into the Mixtral state dict."""
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    state = {hf: _torch(_need(tensors, name)) for hf, name in GLOBAL.items()}
    for i in range(config["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        for hf, name in LAYER.items():
            w = _need(tensors, f"blk.{i}.{name}")
            if hf == "self_attn.q_proj.weight":
                w = rope_unpermute(w, heads)
            elif hf == "self_attn.k_proj.weight":
                w = rope_unpermute(w, kv_heads)
            state[pre + hf] = _torch(w)
        for key, name in EXPERTS.items():
            for e, w in enumerate(_need(tensors, f"blk.{i}.{name}")):
                state[pre + f"block_sparse_moe.experts.{e}.{key}.weight"] = _torch(w)
    return state


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).contiguous().numpy()


def _torch(w: np.ndarray) -> torch.Tensor:  # a writable fp32 copy (the reader's arrays map the file)
    return torch.from_numpy(np.array(w, dtype=np.float32, order="C"))


def _n(config: dict) -> int:
    return config["num_local_experts"]


def _need(tensors: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in tensors:
        raise ValueError(
            f"the GGUF file lacks tensor {name!r}; is it a file from `qwythos export --to gguf`?"
        )
    return tensors[name]


def tensor_type(name: str, w: np.ndarray, quant: str) -> GGMLQuantizationType:
    """The type one tensor is stored as under ``--quant`` (convert_hf_to_gguf.py's rules)."""
    if w.ndim <= 1 or name.endswith(F32_ALWAYS):
        return Q.F32
    if quant == "q4_0" and name == "output.weight":
        return Q.Q8_0
    return QUANTS[quant][0]


# ---------------------------------------------------------------- tokenizer metadata


def pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp's name for how a byte-level BPE tokenizer splits text before merging."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [(s.get("type"), s.get("individual_digits"), s.get("use_regex")) for s in steps]
    if kinds == [("ByteLevel", None, True)]:
        return "gpt-2"
    if kinds == [("Digits", True, None), ("ByteLevel", None, True)]:
        return "smollm"
    raise ValueError(
        f"the tokenizer's pre-tokenizer {pre} has no known llama.cpp name; pass pre_tokenizer= "
        f"(llama.cpp's tokenizer.ggml.pre, e.g. gpt-2, smollm, llama-bpe)"
    )


def add_tokenizer(w: GGUFWriter, folder: Path, vocab_size: int, pre: str | None = None) -> None:
    """Vocabulary, token types, merges, special ids, add-bos/eos and chat template, as llama.cpp reads it."""
    folder = Path(folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    if spec.get("model", {}).get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise ValueError(
            f"{folder}: GGUF export writes byte-level BPE (GPT-2 style) tokenizers; this one is "
            f"{spec.get('model', {}).get('type')}. Export --to mixtral and convert with llama.cpp instead"
        )
    tok = load_tokenizer(folder)
    vocab = tok.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ValueError(f"{folder}: the tokenizer has ids >= the model's vocab_size {vocab_size}")
    by_id, added = {i: t for t, i in vocab.items()}, tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        if i not in added:
            types.append(TokenType.NORMAL)
        elif added[i].special or (by_id[i].startswith("<|") and by_id[i].endswith("|>")):
            types.append(TokenType.CONTROL)
        else:
            types.append(TokenType.USER_DEFINED)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre or pre_tokenizer(spec))
    w.add_add_space_prefix('"add_prefix_space": true' in json.dumps(spec.get("pre_tokenizer")))
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise ValueError(f"{folder}/tokenizer.json has no BPE merges; llama.cpp cannot tokenise without them")
    plain, full = tok.encode("a", add_special_tokens=False), tok.encode("a")  # what Qwythos itself adds
    special.add_special_token = {"bos": full[:1] != plain[:1], "eos": full[-1:] != plain[-1:]}
    if special.chat_template is None and getattr(tok, "chat_template", None):
        special.chat_template = tok.chat_template
    special.add_to_gguf(w, quiet=True)


# ---------------------------------------------------------------- export


def export_gguf(
    model: PathwayLM,
    out: Path,
    tokenizer_src: Path,
    mode: str = "soft",
    quant: str = "f16",
    pre: str | None = None,
) -> Path:
    """Write the model's Mixtral export as one GGUF file (atomically: a temp file beside ``out``, renamed)."""
    if quant not in QUANTS:
        raise ValueError(f"--quant {quant!r} must be one of {', '.join(QUANTS)}")
    out = Path(out)
    if out.suffix != ".gguf":
        raise ValueError(f"--out {out}: a GGUF export is one file ending in .gguf, e.g. --out model.gguf")
    if out.exists():
        raise FileExistsError(f"--out {out} exists; choose a new file name or delete it")
    config, state = mixtral_checkpoint(model, mode, torch.float32)
    if config.get("sliding_window"):
        raise ValueError("this base uses sliding-window attention, which llama.cpp's llama arch cannot hold")
    w = GGUFWriter(None, ARCH)
    _add_hparams(w, config, quant, name=out.stem)
    add_tokenizer(w, tokenizer_src, config["vocab_size"], pre)
    for name, t in gguf_tensors(config, state):
        qtype = tensor_type(name, t, quant)
        try:
            data = quantize(t, qtype)
        except QuantError as e:  # a row not a multiple of the block size: the converter falls back to f16
            log.warning("%s: %s; writing it as f16", name, e)
            qtype, data = Q.F16, quantize(t, Q.F16)
        w.add_tensor(name, data, raw_dtype=qtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        w.write_header_to_file(path=tmp)
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _add_hparams(w: GGUFWriter, c: dict, quant: str, name: str) -> None:
    """The keys convert_hf_to_gguf.py writes for a Llama/Mixtral, plus the pathway names and mode."""
    w.add_type(GGUFType.MODEL)
    w.add_name(name)
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_key_length(c["head_dim"])
    w.add_value_length(c["head_dim"])
    w.add_rope_dimension_count(c["head_dim"])
    rope = c.get("rope_parameters") or {}
    w.add_rope_freq_base(rope.get("rope_theta", c.get("rope_theta", 10000.0)))
    if rope.get("rope_type", "default") == "linear":
        w.add_rope_scaling_type(RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    elif rope.get("rope_type", "default") != "default":
        raise ValueError(
            f"rope_type {rope['rope_type']!r}: GGUF export writes default or linear RoPE; "
            f"export --to mixtral and convert with llama.cpp's convert_hf_to_gguf.py"
        )
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_expert_count(c["num_local_experts"])
    w.add_expert_used_count(c["num_experts_per_tok"])
    w.add_vocab_size(c["vocab_size"])
    w.add_file_type(QUANTS[quant][1])
    w.add_quantization_version(GGML_QUANT_VERSION)
    w.add_array("qwythos.pathways", list(c["qwythos_pathways"]))
    w.add_string("qwythos.mode", c["qwythos_mode"])


# ---------------------------------------------------------------- load


def read_gguf(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A Mixtral-architecture GGUF (llama + experts) as the Mixtral config and fp32 state dict it holds."""
    path = Path(path)
    try:
        reader = GGUFReader(path)
    except Exception as e:  # the reader raises ValueError/struct errors on a truncated or foreign file
        raise ValueError(f"{path} is not a readable GGUF file ({e}); re-export it") from None
    meta = {k: _value(f) for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    meta.update({k: _value(reader.fields[k]) for k in reader.fields if k.endswith("_token_id")})
    if meta.get("general.architecture") != ARCH or f"{ARCH}.expert_count" not in meta:
        raise ValueError(
            f"{path}: architecture {meta.get('general.architecture')!r} without experts; Qwythos loads "
            f"Mixtral-architecture GGUFs (llama + expert_count), as `qwythos export --to gguf` writes"
        )

    def hp(key: str, default=None):
        return meta.get(f"{ARCH}.{key}", default)

    tensors = {t.name: dequantize(t.data, t.tensor_type) for t in reader.tensors}
    n = hp("expert_count")
    rope = {"rope_type": "default", "rope_theta": hp("rope.freq_base", 10000.0)}
    if hp("rope.scaling.type") == "linear":
        rope.update(rope_type="linear", factor=hp("rope.scaling.factor"))
    config = {
        "model_type": "mixtral",
        "vocab_size": tensors["token_embd.weight"].shape[0],
        "hidden_size": hp("embedding_length"),
        "intermediate_size": hp("feed_forward_length"),
        "num_hidden_layers": hp("block_count"),
        "num_attention_heads": hp("attention.head_count"),
        "num_key_value_heads": hp("attention.head_count_kv"),
        "head_dim": hp("attention.key_length") or hp("embedding_length") // hp("attention.head_count"),
        "rms_norm_eps": hp("attention.layer_norm_rms_epsilon"),
        "rope_parameters": rope,
        "max_position_embeddings": hp("context_length"),
        "num_local_experts": n,
        "num_experts_per_tok": hp("expert_used_count", n),
        "tie_word_embeddings": False,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "qwythos_pathways": meta.get("qwythos.pathways"),
    }
    return config, mixtral_state(config, tensors)


def _value(field):
    """A metadata field as a Python value (arrays as lists)."""
    if field.types and field.types[0] == GGUFValueType.ARRAY:
        return list(field.contents())
    return field.contents()


def load_gguf(path: Path, dtype: torch.dtype = torch.float32) -> tuple[PathwayLM, object, str]:
    """A GGUF file from ``export_gguf`` as (model with dense experts, tokenizer, routing mode)."""
    path = Path(path)
    config, state = read_gguf(path)
    model, mode = mixtral_from_state(config, state, dtype, where=path)
    return model, load_tokenizer(path.parent, gguf_file=path.name), mode
