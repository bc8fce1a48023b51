"""Issue 2's figures: pathway model vs the dense base with PEFT LoRA on the same modules, same run.

  training step (fwd + bwd + AdamW, LoRA r16 on gate/up/down [+ routers]), batch 4 x 256 tokens
  bs1 greedy decode through one shared generation loop (KV cache), soft and top1 vs dense+LoRA
Each configuration runs in its own subprocess (so peak RSS is its own); configurations alternate across
repeats so drift on this shared machine hits all of them alike. Prints ratios and writes JSON.

    .venv/bin/python bench/bench_model.py [--repeats 3] [--steps 6] [--tokens 64] [--out PATH.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RANK, BATCH, SEQ = 16, 4, 256


def peft_model():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from qwythos.model.base import resolve_base

    base = AutoModelForCausalLM.from_pretrained(resolve_base(None), dtype="float32")
    cfg = LoraConfig(
        r=RANK,
        lora_alpha=2 * RANK,
        target_modules=["gate_proj", "up_proj", "down_proj"],
        lora_dropout=0.0,
        init_lora_weights=False,
    )  # non-zero B: real LoRA compute
    return get_peft_model(base, cfg)


def pathway_model():
    import torch

    from qwythos.model.config import PathwayConfig
    from qwythos.model.formats import build_model

    model, _ = build_model(None, PathwayConfig(rank=RANK, alpha=2 * RANK))
    with torch.no_grad():  # non-zero B and router, as after training
        for layer in model.layers:
            for t in (layer.mlp.pathways.lora_B_gate_up, layer.mlp.pathways.lora_B_down):
                t.normal_(0, 0.01)
            layer.mlp.router.weight.normal_(0, 0.05)
    return model


def train_step(kind: str, steps: int) -> float:
    import torch

    torch.manual_seed(0)
    ids = torch.randint(0, 49152, (BATCH, SEQ))
    if kind == "peft":
        model = peft_model().train()

        def loss_fn():
            return model(input_ids=ids, labels=ids).loss
    else:
        from qwythos.model.losses import LossConfig, total_loss

        model = pathway_model().train()
        gate_labels = torch.randint(0, 2, (BATCH, SEQ))

        def loss_fn():
            out = model(ids, return_router_logits=True)
            return total_loss(LossConfig(), out.logits, out.router_logits, ids, gate_labels)[0]

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms up
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def greedy(step, prompt: list[int], n: int) -> tuple[list[int], float]:
    """The one generation loop: prefill, then n-1 single-token steps; returns tokens and decode tok/s."""
    import torch

    with torch.inference_mode():
        logits = step(torch.tensor([prompt]), first=True)
        out = [int(logits.argmax())]
        t = time.perf_counter()
        for _ in range(n - 1):
            logits = step(torch.tensor([[out[-1]]]), first=False)
            out.append(int(logits.argmax()))
        return out, (n - 1) / (time.perf_counter() - t)


def decode(kind: str, tokens: int) -> float:
    import torch

    prompt = list(range(1000, 1032))
    if kind == "peft":
        from transformers import DynamicCache

        model = peft_model().eval()
        state = {}

        def step(ids, first):
            if first:
                state["cache"] = DynamicCache()
            out = model(input_ids=ids, past_key_values=state["cache"], use_cache=True, logits_to_keep=1)
            return out.logits[0, -1]
    else:
        from qwythos.model.block import Routing

        model = pathway_model().eval()
        routing = Routing(kind)
        state = {}

        def step(ids, first):
            if first:
                state["cache"] = model.new_cache(1, len(prompt) + tokens)
            return model(ids, cache=state["cache"], routing=routing, last_only=True, trace=True).logits[0, -1]

    torch.manual_seed(0)
    greedy(step, prompt, 4)  # warm-up
    return greedy(step, prompt, tokens)[1]


def child(args) -> None:
    value = train_step(args.kind, args.steps) if args.what == "train" else decode(args.kind, args.tokens)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"value": value, "peak_rss_mb": rss_mb}))


def run_child(what: str, kind: str, a) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        what,
        kind,
        "--steps",
        str(a.steps),
        "--tokens",
        str(a.tokens),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("bench/results/model.json"))
    p.add_argument("--child", nargs=2, metavar=("WHAT", "KIND"))
    a = p.parse_args()
    if a.child:
        a.what, a.kind = a.child
        return child(a)
    configs = [
        ("train", "peft"),
        ("train", "soft"),
        ("decode", "peft"),
        ("decode", "soft"),
        ("decode", "top1"),
    ]
    results: dict[str, list[dict]] = {f"{w}/{k}": [] for w, k in configs}
    for r in range(a.repeats):
        for w, k in configs:
            res = run_child(w, k, a)
            results[f"{w}/{k}"].append(res)
            print(
                f"repeat {r + 1}/{a.repeats} {w:6s} {k:5s} {res['value']:.3f} "
                f"({'s/step' if w == 'train' else 'tok/s'}), peak RSS {res['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    med = {key: statistics.median(x["value"] for x in v) for key, v in results.items()}
    rss = {key: max(x["peak_rss_mb"] for x in v) for key, v in results.items()}
    summary = {
        "train_step_s": {"peft_lora": med["train/peft"], "pathway_soft": med["train/soft"]},
        "train_step_ratio_soft_vs_peft": med["train/soft"] / med["train/peft"],
        "decode_tok_s": {
            "peft_lora": med["decode/peft"],
            "soft": med["decode/soft"],
            "top1": med["decode/top1"],
        },
        "decode_ratio_soft_vs_dense": med["decode/soft"] / med["decode/peft"],
        "decode_ratio_top1_vs_dense": med["decode/top1"] / med["decode/peft"],
        "peak_rss_mb": rss,
        "setup": {
            "batch": BATCH,
            "seq": SEQ,
            "rank": RANK,
            "repeats": a.repeats,
            "threads": os.cpu_count(),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        },
        "raw": results,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "raw"}, indent=2))


if __name__ == "__main__":
    main()
