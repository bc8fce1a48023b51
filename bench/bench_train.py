"""Issue 5's figure: a pathway stage's training tok/s (the `qwythos train` loop) against PEFT LoRA trained
with the transformers Trainer on the same base, batch (4 x 256 tokens), LoRA rank (16 on gate/up/down).

Each system runs in its own subprocess (peak RSS is its own), alternating across repeats; tok/s is the
median over steps after the first. Target: branch stage >= 1.2x PEFT+Trainer.

    .venv/bin/python bench/bench_train.py [--repeats 2] [--steps 8] [--out bench/results/train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, SEQ, RANK = 4, 256, 16


def peft_trainer(steps: int) -> float:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from qwythos.model.base import resolve_base

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_base(None), dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=RANK,
            lora_alpha=2 * RANK,
            lora_dropout=0.0,
            target_modules=["gate_proj", "up_proj", "down_proj"],
        ),
    )
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 49152, (BATCH * (steps + 1), SEQ))]
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=BATCH,
            max_steps=steps + 1,
            learning_rate=2e-4,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        Trainer(model=model, args=args, train_dataset=data, callbacks=[Clock()]).train()
    return BATCH * SEQ / statistics.median(times[1:])


def qwythos_stage(kind: str, steps: int) -> float:
    from qwythos.config import from_dict
    from qwythos.train.config import TrainConfig
    from qwythos.train.loop import train

    rng = random.Random(0)
    words = "the a dragon sum of apples knight sea village count seven twelve rode storm quiet".split()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "d.jsonl"
        with open(data, "w") as f:  # records of ~250 tokens: one per packed 256-token row
            for i in range(BATCH * (steps + 1) * 2):
                text = " ".join(rng.choice(words) for _ in range(210))
                f.write(
                    json.dumps(
                        {
                            "id": str(i),
                            "source": "bench",
                            "pathway": ["reasoning", "narrative"][i % 2],
                            "messages": [
                                {"role": "user", "content": "Go."},
                                {"role": "assistant", "content": text},
                            ],
                        }
                    )
                    + "\n"
                )
        stage = (
            {"name": "s", "kind": "branch", "pathway": "reasoning", "max_steps": steps + 1}
            if kind == "branch"
            else {"name": "s", "kind": "joint", "max_steps": steps + 1}
        )
        cfg = from_dict(
            TrainConfig,
            {
                "model": {"rank": RANK, "alpha": 2 * RANK, "dropout": 0.0, "router_init": "zero"},
                "data": {"dataset": str(data), "max_seq_len": SEQ, "pack": True},
                "stages": [stage],
                "optim": {"batch_size": BATCH},
                "checkpoint": {"every": 10_000},
            },
        )
        run = train(cfg, Path(tmp) / "run")
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tok_s"] for r in rows[1:])


def child(kind: str, steps: int) -> None:
    value = peft_trainer(steps) if kind == "peft" else qwythos_stage(kind, steps)
    print(
        json.dumps({"tok_s": value, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("bench/results/train.json"))
    p.add_argument("--child", default=None)
    a = p.parse_args()
    if a.child:
        return child(a.child, a.steps)
    kinds = ["peft", "branch", "joint"]
    res: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(a.repeats):
        for k in kinds:
            out = subprocess.run(
                [sys.executable, __file__, "--child", k, "--steps", str(a.steps)],
                capture_output=True,
                text=True,
                check=True,
            )
            res[k].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(
                f"repeat {r + 1}/{a.repeats} {k:6s} {res[k][-1]['tok_s']:.0f} tok/s, "
                f"peak RSS {res[k][-1]['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    med = {k: statistics.median(x["tok_s"] for x in v) for k, v in res.items()}
    summary = {
        "tok_s": med,
        "ratio_branch_vs_peft_trainer": med["branch"] / med["peft"],
        "ratio_joint_soft_vs_peft_trainer": med["joint"] / med["peft"],
        "peak_rss_mb": {k: max(x["peak_rss_mb"] for x in v) for k, v in res.items()},
        "setup": {
            "batch": BATCH,
            "seq": SEQ,
            "rank": RANK,
            "steps": a.steps,
            "repeats": a.repeats,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        },
        "raw": res,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "raw"}, indent=2))


if __name__ == "__main__":
    main()
