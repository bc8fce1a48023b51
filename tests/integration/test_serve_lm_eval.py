"""lm-evaluation-harness 0.4 `--model local-completions` against a real `qwythos serve`, offline: a
loglikelihood (multiple-choice) task and a generation task, both from local JSONL through a local task
YAML, scored end to end; the multiple-choice accuracy equals our own engine's scoring of the same docs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from test_serve import KEY, Server, model_dir  # noqa: F401  (the fixture)

MC = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples?", "choices": [" 7", " 9"], "answer": 0},
    {"question": "Once upon a time a dragon", "choices": [" guarded a village", " 15 - 6 = 9"], "answer": 0},
    {"question": "The knight counted the coins:", "choices": [" twelve gold", " the sea"], "answer": 0},
    {"question": "Solve step by step: 15 - 6 =", "choices": [" 9", " dragon"], "answer": 0},
]
GEN = [{"question": "Tom has 3 apples", "answer": "7"}, {"question": "Once upon a time", "answer": "x"}]


def write_tasks(root):
    (root / "mc.jsonl").write_text("\n".join(json.dumps(d) for d in MC))
    (root / "gen.jsonl").write_text("\n".join(json.dumps(d) for d in GEN))
    (root / "qwythos_mc.yaml").write_text(
        f"""task: qwythos_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {root / "mc.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""
    )
    (root / "qwythos_gen.yaml").write_text(
        f"""task: qwythos_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {root / "gen.jsonl"}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
"""
    )


def engine_accuracy(model_dir) -> float:  # noqa: F811
    """The reference: sum of continuation log-probs per choice with our own engine, argmax vs the answer."""
    from qwythos.inference.api import load_engine

    engine = load_engine(model_dir)
    tok, hits = engine.tokenizer, 0
    for d in MC:
        scores = []
        for c in d["choices"]:
            whole, ctx = tok.encode(d["question"] + c), tok.encode(d["question"])
            n = len(whole) - len(ctx)  # lm-eval encodes context+continuation together, then splits
            with torch.no_grad():
                lp = torch.log_softmax(engine.model(torch.tensor([whole])).logits[0].float(), -1)
            scores.append(sum(float(lp[i - 1, whole[i]]) for i in range(len(whole) - n, len(whole))))
        hits += int(max(range(len(scores)), key=scores.__getitem__) == d["answer"])
    return hits / len(MC)


def test_lm_eval_local_completions_scores_both_tasks(model_dir, tmp_path):  # noqa: F811
    write_tasks(tmp_path)
    server = Server(model_dir)
    try:
        args = ",".join(
            [
                f"model={model_dir.name}",
                f"base_url={server.url}/v1/completions",
                "tokenizer_backend=huggingface",
                f"tokenizer={model_dir}",
                "max_length=512",
                "num_concurrent=2",
                "max_retries=1",
            ]
        )
        env = {**os.environ, "OPENAI_API_KEY": KEY, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "lm_eval",
                "--model",
                "local-completions",
                "--model_args",
                args,
                "--tasks",
                "qwythos_mc,qwythos_gen",
                "--batch_size",
                "2",
                "--include_path",
                str(tmp_path),
                "--output_path",
                str(tmp_path / "out"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        results = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("results_*.json")]
        assert results, run.stdout[-2000:]
        res = results[0]["results"]
        acc, em = res["qwythos_mc"]["acc,none"], res["qwythos_gen"]["exact_match,none"]
        assert 0.0 <= em <= 1.0
        assert acc == pytest.approx(engine_accuracy(model_dir))
        metrics = server.metric("qwythos_prompt_tokens_total")
        assert metrics > 0
    finally:
        server.stop()
