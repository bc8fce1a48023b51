"""The native decode step: one new token for each row of a batch, every layer, in C++ (csrc/decode_step.cpp).

Decoding one token reads every weight once, so its floor is the memory bandwidth. In PyTorch a step also
pays ~70 small kernels per layer, each a few microseconds of dispatch from Python, and MKL reads SmolLM2's
short matrices at ~23 GB/s for one row. The C++ step streams each weight matrix front to back once for all
its rows (~34 GB/s here; MKL's GEMM above 8 rows) and does the rest (norms, rotary, attention over the cache,
router and gate, LoRA deltas, SiLU) in plain loops. It computes the same function as ``PathwayLM.forward``
for one new token with a ``BatchCache``; tests/unit/test_native_decode.py pins it to that.

It is built with torch's extension loader the first time a process needs it (7 s here), once per kind of
CPU; torch keeps the build under ~/.cache/torch_extensions (or $TORCH_EXTENSIONS_DIR) for later processes.
It covers fp32 and bf16 models on CPU (activations in fp32 for both). Anything else, or a machine where the
build fails, decodes with the model's forward.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from ..model.block import ExpertPathways, LoRAPathways, Routing
from ..model.cache import BatchCache
from ..model.transformer import Output, PathwayLM

log = logging.getLogger(__name__)
SOURCE = Path(__file__).parent / "csrc" / "decode_step.cpp"
MODES = {"soft": 0, "top1": 1, "force": 2}
KERNELS = ("auto", "native", "torch")


@functools.cache
def build() -> str | None:
    """Build (or load the cached build of) the op; None when loaded, else why it could not be."""
    if hasattr(torch.ops.qwythos, "decode_step"):  # already in this process: never load a second copy
        return None
    if shutil.which("ninja") is None:  # the `ninja` wheel puts its binary beside this interpreter
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    from torch.utils.cpp_extension import load

    log.info("loading the native decode step (the first build on a machine takes several seconds)")
    name = f"qwythos_decode_step_{cpu_id()}"  # built with -march=native: one build per kind of CPU
    try:
        clear_stale_lock(name)
        load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=["-O3", "-march=native", "-fopenmp-simd"],
            is_python_module=False,
        )
    except Exception as e:  # no compiler, no ninja, a failed build: the torch path still works
        lines = str(e).strip().splitlines() or [""]
        return f"{type(e).__name__}: {next((x for x in lines if 'error' in x), lines[-1])}"
    return None


def clear_stale_lock(name: str, older_than_s: float = 600.0) -> None:
    """torch waits forever on the lock file of a build that was killed mid-way; no build takes 10 minutes, so
    an older lock is stale and goes (with a warning)."""
    from torch.utils.cpp_extension import _get_build_directory

    lock = Path(_get_build_directory(name, verbose=False)) / "lock"
    try:
        if time.time() - lock.stat().st_mtime > older_than_s:
            log.warning("removing %s, left by a build that was killed", lock)
            lock.unlink()
    except FileNotFoundError:
        pass


def cpu_id() -> str:
    """A short hash of this CPU's model and instruction-set flags (Linux), so a shared cache never serves
    one machine another's -march=native build."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "any"
    keys = ("model name", "flags", "Features", "CPU part")
    seen = sorted({line for line in info if line.split(":")[0].strip() in keys})
    return hashlib.sha1("\n".join(seen).encode()).hexdigest()[:10]


def unsupported(model: PathwayLM) -> str | None:
    """Why the native step cannot decode this model, or None."""
    p = model.embed_tokens.weight
    if p.device.type != "cpu" or p.dtype not in (torch.float32, torch.bfloat16):
        return f"the native decode step is for fp32 or bf16 on CPU (this model: {p.dtype} on {p.device.type})"
    if model.config.arch.head_dim > 512:
        return f"head_dim {model.config.arch.head_dim} > 512"
    return None


def available(model: PathwayLM, kernel: str = "auto") -> bool:
    """Whether decode steps run natively for ``kernel``: 'native' (an error naming the reason if it cannot),
    'auto' (False if it cannot, with the reason logged when the model itself was fine) or 'torch' (False)."""
    if kernel not in KERNELS:
        raise ValueError(f"decode kernel {kernel!r} (Engine or $QWYTHOS_DECODE_KERNEL): use one of {KERNELS}")
    if kernel == "torch":
        return False
    model_reason = unsupported(model)
    reason = model_reason or build()
    if reason and kernel == "native":
        raise RuntimeError(f"native decode step unavailable: {reason}")
    if reason and model_reason is None:
        log.warning("native decode step unavailable (%s); decoding with the torch forward", reason)
    return reason is None


class NativeDecoder:
    """Holds the model's weights in the op's order; ``step`` is ``model(...)`` for T = 1 with a BatchCache.

    It keeps the weight tensors the model had when it was built: in-place updates show, replaced ``.data``
    (``decode_layout``, ``.to()``) does not, so build it after those."""

    def __init__(self, model: PathwayLM):
        available(model, "native")  # raises, naming the reason, if it cannot
        a = model.config.arch
        self.model = model
        self.experts = isinstance(model.layers[0].mlp.pathways, ExpertPathways)
        self.weights = [w for layer in model.layers for w in _layer_weights(layer)]
        globals_ = (model.embed_tokens.weight, model.norm.weight, model.lm_head.weight)
        self.weights += [w.detach() for w in globals_]
        pw = model.layers[0].mlp.pathways
        self.scale = pw.scale if isinstance(pw, LoRAPathways) else 1.0
        self.eps, self.heads, self.kv_heads = a.rms_norm_eps, a.num_attention_heads, a.num_key_value_heads
        self.window = a.sliding_window or 0
        self.P = len(model.pathway_names)

    def step(
        self, ids: torch.Tensor, position_ids: torch.Tensor, cache: BatchCache, routing: Routing, trace: bool
    ) -> Output:
        """ids, position_ids (B, 1); the cache has a reserved slot for this token."""
        B = ids.shape[0]
        cos, sin = self.model.rotary(position_ids, torch.float32)  # (B, 1, 1, D)
        bias = routing.gear_bias
        if bias is not None:
            bias = bias.to(torch.float32).expand(B, self.P).contiguous()
        logits, gates = torch.ops.qwythos.decode_step(
            self.weights,
            ids.reshape(B),
            cos.reshape(B, -1),
            sin.reshape(B, -1),
            cache.k,
            cache.v,
            cache.valid,
            cache.length,
            bias,
            MODES[routing.mode],
            -1 if routing.force is None else routing.force,
            routing.temperature,
            self.scale,
            self.eps,
            self.heads,
            self.kv_heads,
            self.window,
            self.experts,
        )
        cache.length += 1
        return Output(logits=logits[:, None], gates=gates[:, None] if trace else None)


def _layer_weights(layer) -> list[torch.Tensor]:
    """One layer's 13 entries (csrc/decode_step.cpp's header lists them), detached from autograd."""
    att, pw, none = layer.self_attn, layer.mlp.pathways, torch.empty(0)
    out = [
        layer.input_layernorm.weight,
        att.qkv_proj.weight,
        none if att.qkv_proj.bias is None else att.qkv_proj.bias,
        att.o_proj.weight,
        none if att.o_proj.bias is None else att.o_proj.bias,
        layer.post_attention_layernorm.weight,
        layer.mlp.router.weight,
    ]
    if isinstance(pw, ExpertPathways):
        out += [pw.gate_up, pw.down, none, none, none, none]
    else:
        out += [pw.base_gate_up, pw.base_down, pw.lora_A_gate_up, pw.lora_B_gate_up]
        out += [pw.lora_A_down, pw.lora_B_down]
    for w in out[:1] + out[5:7] + out[9:]:  # the tensors the C++ loops read directly
        if w.numel() and not w.is_contiguous():
            raise RuntimeError("native decode step: norm, router and LoRA weights must be contiguous")
    return [w.detach() for w in out]
