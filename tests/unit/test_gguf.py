"""GGUF export pinned against the Mixtral folder export (every tensor, within its format's own error bound),
llama.cpp's names and layout (gguf.TensorNameMap, transformers' GGUF reader) and the native model's logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gguf import MODEL_ARCH, GGMLQuantizationType, GGUFReader, GGUFWriter, TensorNameMap, TokenType
from safetensors.torch import load_file

from conftest import CHAT_TEMPLATE, CORPUS, randomise
from qwythos.cli import main
from qwythos.model.api import export_model
from qwythos.model.block import Routing
from qwythos.model.config import PathwayConfig
from qwythos.model.formats import build_model, load_model, load_native, save_model
from qwythos.model.gguf import (
    GLOBAL,
    LAYER,
    QUANTS,
    gguf_tensors,
    pre_tokenizer,
    rope_permute,
    rope_unpermute,
)

Q = GGMLQuantizationType
QUANT_NAMES = list(QUANTS)


@pytest.fixture(scope="module")
def trained_dir(tiny_base, tmp_path_factory):
    """A native folder whose pathways have non-zero, different LoRAs and a random router."""
    model, folder = build_model(tiny_base, PathwayConfig(rank=4, alpha=8))
    randomise(model, seed=7, router_std=1.0)
    return save_model(model, tmp_path_factory.mktemp("m") / "model", str(tiny_base), folder)


@pytest.fixture(scope="module")
def mixtral(trained_dir, tmp_path_factory):
    """The Mixtral folder export: the reference every GGUF tensor is compared with."""
    out = export_model(trained_dir, tmp_path_factory.mktemp("mx") / "mixtral", mode="soft")
    return json.loads((out / "config.json").read_text()), load_file(out / "model.safetensors")


@pytest.fixture(scope="module")
def exported(trained_dir, tmp_path_factory):
    """One GGUF per (quant, mode), written once for the module."""
    root, files = tmp_path_factory.mktemp("gguf"), {}

    def get(quant: str, mode: str = "soft"):
        if (quant, mode) not in files:
            files[quant, mode] = export_model(
                trained_dir, root / f"m-{quant}-{mode}.gguf", mode=mode, to="gguf", quant=quant
            )
        return files[quant, mode]

    return get


def _field(reader: GGUFReader, key: str):
    return reader.fields[key].contents()


# ---------------------------------------------------------------- tensors


def _bound(t, ref: np.ndarray) -> np.ndarray:
    """Each element's worst-case error for the tensor's stored type, from the format and its block scales."""
    if t.tensor_type == Q.F32:
        return np.zeros_like(ref)
    if t.tensor_type == Q.F16:  # round to nearest: half an ulp, 2^-11 relative (plus the subnormal step)
        return np.abs(ref) * 2**-11 + 2**-25
    if t.tensor_type == Q.BF16:  # 8 significant bits: 2^-8 relative
        return np.abs(ref) * 2**-8 + 1e-38
    size, qk = {Q.Q8_0: (34, 32), Q.Q4_0: (18, 32)}[t.tensor_type]
    d = np.abs(
        np.ascontiguousarray(t.data).reshape(-1, size)[:, :2].copy().view(np.float16).astype(np.float32)
    )
    # q8_0: x ~ q*d with |q| <= 127 rounded to nearest: d/2, plus |q| times the scale's own f16 rounding.
    # q4_0: q in [-8, 7] with d = max/-8, so the top of the range clips: up to d, plus 8 x the f16 rounding.
    per_block = d * (0.5 + 127 * 2**-11) if t.tensor_type == Q.Q8_0 else d * (1 + 8 * 2**-11)
    return np.repeat(per_block, qk, axis=1).reshape(ref.shape) * (1 + 1e-6) + 1e-9


@pytest.mark.parametrize("quant", QUANT_NAMES)
def test_every_tensor_matches_the_mixtral_export_within_its_format(exported, mixtral, quant):
    config, state = mixtral
    reader = GGUFReader(exported(quant))
    got = {t.name: t for t in reader.tensors}
    want = dict(gguf_tensors(config, state))
    assert set(got) == set(want)
    from gguf.quants import dequantize

    worst = {}
    for name, ref in want.items():
        t = got[name]
        if ref.ndim == 1 or name.endswith(("_norm.weight", "ffn_gate_inp.weight")):
            assert t.tensor_type == Q.F32, name  # norms, router, 1-D: always f32
        elif quant == "q4_0" and name == "output.weight":
            assert t.tensor_type == Q.Q8_0
        else:
            assert t.tensor_type == QUANTS[quant][0], name
        x = dequantize(t.data, t.tensor_type).reshape(ref.shape)
        err, bound = np.abs(x - ref), _bound(t, ref)
        assert (err <= bound).all(), f"{name}: max error {err.max()} exceeds the {t.tensor_type.name} bound"
        if t.tensor_type in (Q.Q8_0, Q.Q4_0):
            worst[t.tensor_type.name] = max(worst.get(t.tensor_type.name, 0), float((err / bound).max()))
    # the bound is tight, not vacuous: the worst element uses most of it
    assert all(v > 0.5 for v in worst.values()), worst
    assert int(_field(reader, "general.file_type")) == int(QUANTS[quant][1])


def test_names_are_llama_cpps_and_rope_permutation_is_the_one_transformers_undoes(mixtral):
    config, _ = mixtral
    names = TensorNameMap(MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    for hf, ours in GLOBAL.items():
        assert names.get_name(hf, try_suffixes=(".weight",)) == ours
    for hf, ours in LAYER.items():
        assert names.get_name(f"model.layers.1.{hf}", try_suffixes=(".weight",)) == f"blk.1.{ours}"
    for w, ours in (("w1", "ffn_gate_exps"), ("w3", "ffn_up_exps"), ("w2", "ffn_down_exps")):
        # the merged name llama.cpp's LlamaModel gives a layer's stacked experts
        assert (
            names.get_name(f"layers.2.feed_forward.experts.{w}.weight", (".weight",))
            == f"blk.2.{ours}.weight"
        )

    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    x = np.random.default_rng(0).standard_normal((4 * 16, 64)).astype(np.float32)
    hf_cfg = {"num_attention_heads": 4, "num_key_value_heads": 2}
    for heads, name in ((4, "blk.0.attn_q.weight"), (2, "blk.0.attn_k.weight")):
        w = x[: heads * 16]
        undone = LlamaTensorProcessor(config=hf_cfg).process(rope_permute(w, heads), name).weights
        np.testing.assert_array_equal(undone, w)
        np.testing.assert_array_equal(rope_unpermute(rope_permute(w, heads), heads), w)
        assert not np.array_equal(rope_permute(w, heads), w)


# ---------------------------------------------------------------- metadata


@pytest.mark.parametrize("mode", ["soft", "top1"])
def test_metadata_holds_hyperparameters_experts_and_tokenizer(exported, mixtral, tiny_base, mode):
    config, _ = mixtral
    path = exported("f32", mode)
    r = GGUFReader(path)
    assert _field(r, "general.architecture") == "llama"
    expect = {
        "llama.context_length": config["max_position_embeddings"],
        "llama.embedding_length": config["hidden_size"],
        "llama.block_count": config["num_hidden_layers"],
        "llama.feed_forward_length": config["intermediate_size"],
        "llama.attention.head_count": config["num_attention_heads"],
        "llama.attention.head_count_kv": config["num_key_value_heads"],
        "llama.attention.key_length": config["head_dim"],
        "llama.rope.dimension_count": config["head_dim"],
        "llama.vocab_size": config["vocab_size"],
        "llama.expert_count": 2,
        "llama.expert_used_count": 1 if mode == "top1" else 2,
    }
    assert {k: int(_field(r, k)) for k in expect} == expect
    assert _field(r, "llama.rope.freq_base") == pytest.approx(config["rope_parameters"]["rope_theta"])
    assert _field(r, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(config["rms_norm_eps"])
    assert _field(r, "qwythos.pathways") == ["reasoning", "narrative"] and _field(r, "qwythos.mode") == mode

    spec = json.loads((tiny_base / "tokenizer.json").read_text())
    vocab = {**spec["model"]["vocab"], **{a["content"]: a["id"] for a in spec["added_tokens"]}}
    tokens = _field(r, "tokenizer.ggml.tokens")
    assert _field(r, "tokenizer.ggml.model") == "gpt2" and _field(r, "tokenizer.ggml.pre") == "gpt-2"
    assert len(tokens) == config["vocab_size"] and all(tokens[i] == t for t, i in vocab.items())
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    assert _field(r, "tokenizer.ggml.merges") == merges
    types = _field(r, "tokenizer.ggml.token_type")
    specials = {a["id"] for a in spec["added_tokens"]}
    assert all((types[i] == TokenType.CONTROL) == (i in specials) for i in range(len(tokens)))
    ids = {k: int(_field(r, f"tokenizer.ggml.{k}_token_id")) for k in ("bos", "eos", "padding")}
    assert ids == {
        "bos": config["bos_token_id"],
        "eos": config["eos_token_id"],
        "padding": config["pad_token_id"],
    }
    assert _field(r, "tokenizer.ggml.add_bos_token") is False  # a GPT-2 style tokenizer adds no BOS
    assert _field(r, "tokenizer.ggml.add_space_prefix") is False
    assert _field(r, "tokenizer.chat_template") == CHAT_TEMPLATE

    # an independent reader of llama.cpp's keys: transformers' GGUF config parser
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    hf = load_gguf_checkpoint(str(path))["config"]
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim"):
        assert hf[key] == config[key], key
    assert hf["tie_word_embeddings"] is False  # output.weight is written explicitly


def test_pre_tokenizer_names():
    bl = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    assert pre_tokenizer({"pre_tokenizer": bl}) == "gpt-2"
    digits = {"type": "Digits", "individual_digits": True}
    assert pre_tokenizer({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [digits, bl]}}) == "smollm"
    with pytest.raises(ValueError, match="no known llama.cpp name"):
        pre_tokenizer({"pre_tokenizer": {"type": "Metaspace"}})


# ---------------------------------------------------------------- loading it back


@pytest.mark.parametrize("mode", ["soft", "top1"])
def test_f32_gguf_loads_with_the_native_logits_and_gates(exported, trained_dir, mode):
    model, tok, got_mode = load_model(exported("f32", mode))
    native = load_native(trained_dir)
    assert got_mode == mode and model.pathway_names == ["reasoning", "narrative"]
    ids = torch.randint(0, 300, (2, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(ids, routing=Routing(mode), trace=True), native(ids, routing=Routing(mode), trace=True)
    torch.testing.assert_close(a.logits, b.logits, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(a.gates, b.gates, atol=1e-5, rtol=1e-5)
    # the tokenizer rebuilt from the file's metadata tokenises and templates like the original
    ref = load_model(trained_dir)[1]
    assert [tok(t)["input_ids"] for t in CORPUS] == [ref(t)["input_ids"] for t in CORPUS]
    chat = [{"role": "user", "content": CORPUS[0]}]
    assert tok.apply_chat_template(chat, tokenize=False) == ref.apply_chat_template(chat, tokenize=False)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (ref.bos_token, ref.eos_token, ref.pad_token)


def _relative_rms(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = torch.as_tensor(np.asarray(a, dtype=np.float64)), torch.as_tensor(np.asarray(b, dtype=np.float64))
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


@pytest.mark.parametrize("quant", ["f16", "bf16", "q8_0", "q4_0"])
def test_quantised_logits_stay_within_the_weight_noise(exported, trained_dir, mixtral, quant):
    """The logits' relative RMS error is bounded by a small multiple of the weights' (same run): a 3-layer
    model passes weight noise through roughly linearly, so anything far above it is a loading bug, not the
    format. Measured ratios: about 1-2; the bound is 4."""
    from gguf.quants import dequantize

    config, state = mixtral
    want = dict(gguf_tensors(config, state))
    reader = GGUFReader(exported(quant))
    weights = [
        (dequantize(t.data, t.tensor_type).reshape(want[t.name].shape), want[t.name])
        for t in reader.tensors
        if t.tensor_type != Q.F32
    ]
    weight_err = max(_relative_rms(x, ref) for x, ref in weights)
    model, _, _ = load_model(exported(quant))
    native = load_native(trained_dir)
    ids = torch.randint(0, 300, (2, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logit_err = _relative_rms(model(ids).logits, native(ids, routing=Routing("soft")).logits)
    print(f"{quant}: weights {weight_err:.2e} logits {logit_err:.2e} ratio {logit_err / weight_err:.2f}")
    assert 0 < logit_err <= 4 * weight_err


def test_cli_export_gguf_then_generate_on_the_file(trained_dir, tmp_path, capsys):
    out = tmp_path / "model.gguf"
    assert main(["export", str(trained_dir), "--to", "gguf", "--out", str(out), "--quant", "q8_0"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert main(["generate", str(out), "--prompt", "Tom has", "--max-new-tokens", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["token_ids"]) == 4 and result["pathways"] == ["reasoning", "narrative"]


# ---------------------------------------------------------------- the edges


def test_bad_option_combinations_are_clear_errors(trained_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="--quant is for --to gguf"):
        export_model(trained_dir, tmp_path / "mx", quant="q8_0")
    with pytest.raises(ValueError, match="--dtype is for --to mixtral"):
        export_model(trained_dir, tmp_path / "m.gguf", to="gguf", dtype="float16")
    with pytest.raises(ValueError, match="--quant 'q4_k_m' must be one of f32, f16, bf16, q8_0, q4_0"):
        export_model(trained_dir, tmp_path / "m.gguf", to="gguf", quant="q4_k_m")
    with pytest.raises(ValueError, match="--to 'onnx'"):
        export_model(trained_dir, tmp_path / "m.onnx", to="onnx")
    with pytest.raises(ValueError, match="ending in .gguf"):
        export_model(trained_dir, tmp_path / "folder", to="gguf")
    with pytest.raises(ValueError, match="soft or top1"):
        export_model(trained_dir, tmp_path / "m.gguf", to="gguf", mode="force")
    (tmp_path / "taken.gguf").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="exists"):
        export_model(trained_dir, tmp_path / "taken.gguf", to="gguf")
    args = ["export", str(trained_dir), "--out", str(tmp_path / "mx"), "--quant", "q8_0"]
    assert main(args) == 2 and "--quant is for --to gguf" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["taken.gguf"]  # nothing half-written


def test_a_failed_write_leaves_no_file(trained_dir, tmp_path, monkeypatch):
    def fail(self, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(GGUFWriter, "write_tensors_to_file", fail)
    with pytest.raises(OSError, match="disk full"):
        export_model(trained_dir, tmp_path / "m.gguf", to="gguf")
    assert list(tmp_path.iterdir()) == []


def test_foreign_and_corrupt_gguf_files_are_clear_errors(tmp_path):
    dense = tmp_path / "dense.gguf"  # a plain Llama GGUF: no experts
    w = GGUFWriter(dense, "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="without experts"):
        load_model(dense)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 12)
    with pytest.raises(ValueError, match="not a readable GGUF"):
        load_model(bad)
