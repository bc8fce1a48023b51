"""Issue 7's engine figures, all in one run on the real SmolLM2-135M base (fp32 unless noted):

  bound      the memory-bandwidth bound for bs1 decode: weight bytes read per token / throughput of a large
             torch.mv (fp32 and bf16), measured here; also the throughput of the native step's own weight
             stream on the same matrix (the stricter bound: here it reads faster than torch.mv)
  hf         transformers `generate` (greedy, KV cache) on the dense base: the baseline
  soft/top1  our engine (Engine.generate) on the pathway model, LoRA r16 non-zero and a random router;
             fp32 decode steps run the native step (inference/native.py), each matrix in the layout this
             CPU streams fastest (inference/stream_plan.py; the plan and its GB/s are in the output)
  soft_torch, top1_torch  the same with decode steps through the model's PyTorch forward
  soft_std   the same with nn.Linear's weight layout (the engine stores fp32 weights transposed on CPU)
  soft_2t, top1_2t  the same with every torch thread in decode steps (the engine's default under
             OMP_WAIT_POLICY=PASSIVE decodes on one thread)
  hf_1t      `generate` on one torch thread: the baseline on the engine's footing
  mixtral_soft, mixtral_top1  the engine on the same model exported to Mixtral (dense experts, no LoRA)
  soft_bf16, top1_bf16  the same with bf16 weights (`--dtype bfloat16`)
  xlora      peft X-LoRA on the same base with two LoRA r16 adapters (its generate runs without a KV cache)
  batch8     our engine, 8 requests decoded together: aggregate tok/s

Decode tok/s = (N - 1) / (t(N tokens) - t(1 token)) so the prefill cancels; time to first token = t(1 token)
for a 32-token prompt. Each configuration runs in its own subprocess and configurations alternate across
repeats, so drift on a shared machine hits all alike; medians are reported with ratios to `hf`.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_decode.py [--repeats 3] [--tokens 33] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RANK, PROMPT = 16, list(range(1000, 1032))
FP32 = ("hf", "hf_1t", "soft", "top1", "soft_torch", "top1_torch")


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rates(run, tokens: int) -> dict:
    """run(n) generates n tokens for PROMPT; decode tok/s and time to first token."""
    run(4)  # warm-up
    t1 = median_time(lambda: run(1), 3)
    tn = median_time(lambda: run(tokens), 2)
    return {"value": (tokens - 1) / (tn - t1), "ttft_s": t1}


def pathway_model(dtype: str = "float32"):
    import torch

    from qwythos.model.config import PathwayConfig
    from qwythos.model.formats import build_model

    model, folder = build_model(None, PathwayConfig(rank=RANK, alpha=2 * RANK))
    with torch.no_grad():  # non-zero B and router, as after training
        for layer in model.layers:
            for t in (layer.mlp.pathways.lora_B_gate_up, layer.mlp.pathways.lora_B_down):
                t.normal_(0, 0.01)
            layer.mlp.router.weight.normal_(0, 0.05)
    return model.to(getattr(torch, dtype)), folder


def ours(kind: str, tokens: int) -> dict:
    from qwythos.inference.engine import Engine, Request
    from qwythos.inference.sampling import SamplingParams
    from qwythos.model.base import load_tokenizer
    from qwythos.model.block import Routing

    model, folder = pathway_model("bfloat16" if "bf16" in kind else "float32")
    if kind.startswith("mixtral"):  # the same model exported: every pathway a dense expert, no LoRA to apply
        from qwythos.model.formats import export_mixtral, load_mixtral

        out = export_mixtral(model, Path(tempfile.mkdtemp()) / "mixtral", folder, mode="top1")
        model, _ = load_mixtral(out)
        folder = out
    engine = Engine(
        model,
        load_tokenizer(folder),
        layout="standard" if kind.endswith("_std") else "auto",
        decode_threads=0 if kind.endswith("_2t") else "auto",
        decode_kernel="torch" if kind.endswith("_torch") else "auto",
    )
    routing = Routing("top1" if kind.startswith(("top1", "mixtral_top1")) else "soft")
    rows = 8 if kind.startswith("batch8") else 1
    prompts = [[t + 7 * r for t in PROMPT] for r in range(rows)]

    def run(n: int) -> None:
        engine.generate(
            [Request(p, SamplingParams(max_new_tokens=n, ignore_eos=True)) for p in prompts], routing
        )

    out = rates(run, tokens)
    out["value"] *= rows  # aggregate over the rows
    return out


def hf_model():
    from transformers import AutoModelForCausalLM

    from qwythos.model.base import resolve_base

    return AutoModelForCausalLM.from_pretrained(resolve_base(None), dtype="float32").eval()


def hf(tokens: int) -> dict:
    import torch

    model = hf_model()
    ids = torch.tensor([PROMPT])

    def run(n: int) -> None:
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    return rates(run, tokens)


def xlora(tokens: int) -> dict:
    import torch
    from peft import LoraConfig, XLoraConfig, get_peft_model

    tmp = Path(tempfile.mkdtemp())
    adapters = {}
    for i, name in enumerate(("0", "1")):  # X-LoRA names its adapters by position
        torch.manual_seed(i)
        cfg = LoraConfig(
            r=RANK,
            lora_alpha=2 * RANK,
            target_modules=["gate_proj", "up_proj", "down_proj"],
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        )
        get_peft_model(hf_model(), cfg).save_pretrained(tmp / name)
        adapters[name] = str(tmp / name)
    base = hf_model()
    base.config.use_cache = False
    model = get_peft_model(
        base,
        XLoraConfig(
            task_type="CAUSAL_LM", hidden_size=base.config.hidden_size, xlora_depth=1, adapters=adapters
        ),
    ).eval()
    ids = torch.tensor([PROMPT])

    def run(n: int) -> None:
        with torch.inference_mode():
            model.generate(input_ids=ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    return rates(run, min(tokens, 9))  # about 2-3 tok/s: fewer tokens


def bound() -> dict:
    """GB/s of a large matrix-vector product (fp32, bf16) and the bytes of weights read per decoded token."""
    import torch

    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        W, x = torch.randn(8192, 8192).to(dt), torch.randn(8192).to(dt)  # 256 MiB fp32: far beyond caches
        torch.mv(W, x)
        t = median_time(lambda W=W, x=x: torch.mv(W, x), 7)
        out[f"gbps_{name}"] = W.numel() * W.element_size() / t / 1e9
    from qwythos.inference import native

    if native.build() is None:  # the native step's weight stream, on the same matrix in the decode layout
        x = torch.randn(1, 8192)
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            W = torch.randn(8192, 8192).to(dt).t().contiguous().t()
            t = median_time(lambda W=W: torch.ops.qwythos.stream_product(x, W), 7)
            out[f"gbps_stream_{name}"] = W.numel() * W.element_size() / t / 1e9
    model = hf_model()
    n_params = sum(p.numel() for p in model.parameters())  # tied embeddings counted once (the lm_head read)
    out["weight_bytes_fp32"] = n_params * 4
    out["value"] = out["gbps_fp32"] * 1e9 / out["weight_bytes_fp32"]  # tok/s bound, fp32
    out["bound_tok_s_bf16"] = out["gbps_bf16"] * 1e9 / (n_params * 2)
    if "gbps_stream_fp32" in out:
        out["bound_tok_s_stream_fp32"] = out["gbps_stream_fp32"] * 1e9 / out["weight_bytes_fp32"]
        out["bound_tok_s_stream_bf16"] = out["gbps_stream_bf16"] * 1e9 / (n_params * 2)
    return out


def decode_plan() -> dict:
    """The layout the engine chose per weight shape on this CPU, with the GB/s behind each choice (what the
    children measured into the cache: inference/stream_plan.py)."""
    from qwythos.inference import native, stream_plan

    path = stream_plan.plan_file(native.cpu_id())
    return {"cpu": native.cpu_id(), **(json.loads(path.read_text()) if path.is_file() else {})}


def child(kind: str, tokens: int, threads: int) -> None:
    import torch

    threads = 1 if kind == "hf_1t" else threads
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    if kind == "bound":
        res = bound()
    elif kind in ("hf", "hf_1t"):
        res = hf(tokens)
    elif kind == "xlora":
        res = xlora(tokens)
    else:
        res = ours(kind, tokens)
    print(json.dumps(res))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tokens", type=int, default=33)
    p.add_argument(
        "--kinds", default="bound,hf,soft,top1,soft_torch,top1_torch,soft_bf16,top1_bf16,batch8,xlora"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads in every child (0 = default)")
    p.add_argument("--out", type=Path, default=Path("bench/results/decode.json"))
    p.add_argument("--child", default=None)
    a = p.parse_args()
    if a.child:
        return child(a.child, a.tokens, a.threads)
    kinds = a.kinds.split(",")
    raw: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(a.repeats):
        for k in kinds:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                k,
                "--tokens",
                str(a.tokens),
                "--threads",
                str(a.threads),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            raw[k].append(res)
            print(f"repeat {r + 1}/{a.repeats} {k:9s} {res['value']:.2f} tok/s", flush=True)
    med = {k: statistics.median(x["value"] for x in v) for k, v in raw.items()}
    ttft = {k: statistics.median(x["ttft_s"] for x in v) for k, v in raw.items() if "ttft_s" in v[0]}
    base = med.get("hf")
    ours = [k for k in med if k not in ("bound", "hf", "hf_1t")]
    summary = {
        "decode_tok_s": med,
        "ratio_vs_hf": {k: med[k] / base for k in ours if base},
        "ratio_vs_hf_1t": {k: med[k] / med["hf_1t"] for k in ours if "hf_1t" in med},
        "fraction_of_bandwidth_bound_fp32": {
            k: med[k] / med["bound"] for k in FP32 if k in med and "bound" in med
        },
        "fraction_of_stream_bound_fp32": {
            k: med[k] / statistics.median(x["bound_tok_s_stream_fp32"] for x in raw["bound"])
            for k in FP32
            if k in med and "bound" in raw and "bound_tok_s_stream_fp32" in raw["bound"][0]
        },
        "fraction_of_stream_bound_bf16": {
            k: med[k] / statistics.median(x["bound_tok_s_stream_bf16"] for x in raw["bound"])
            for k in ("soft_bf16", "top1_bf16")
            if k in med and "bound" in raw and "bound_tok_s_stream_bf16" in raw["bound"][0]
        },
        "fraction_of_bandwidth_bound_bf16": {
            k: med[k] / statistics.median(x["bound_tok_s_bf16"] for x in raw["bound"])
            for k in ("soft_bf16", "top1_bf16")
            if k in med and "bound" in raw
        },
        "ratio_vs_xlora": {k: med[k] / med["xlora"] for k in ("soft", "top1") if "xlora" in med and k in med},
        "batch8_vs_soft_bs1": med["batch8"] / med["soft"] if "batch8" in med and "soft" in med else None,
        "ttft_s_32_token_prompt": ttft,
        "bound_detail": raw["bound"][0] if "bound" in raw else None,
        "decode_plan": decode_plan(),
        "setup": {
            "model": "SmolLM2-135M (embedded), fp32 unless bf16",
            "rank": RANK,
            "prompt_tokens": len(PROMPT),
            "decode_tokens": a.tokens - 1,
            "repeats": a.repeats,
            "cpus": os.cpu_count(),
            "torch_threads": a.threads or f"default ({os.cpu_count()})",
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(default)"),
            "machine": "shared with other jobs",
        },
        "raw": raw,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "raw"}, indent=2))


if __name__ == "__main__":
    main()
