"""`qwythos quickstart`: the whole pipeline on the embedded defaults, CPU-sized.

    curate (preset quickstart)  ->  train (configs/quickstart.yaml: branch, branch, mix)
    ->  export (Mixtral, soft)  ->  eval (small: EVAL_OVERRIDES)  ->  generate with a coloured gear trace
Every step skips work a previous run finished, so an interrupted quickstart continues where it stopped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .config import load_config, preset_path
from .inference.api import generate, load_engine
from .inference.sampling import CHAT_REPETITION_PENALTY, DEFAULT_GEAR_SAMPLING, SamplingParams, for_model
from .inference.trace import render

log = logging.getLogger(__name__)

DEMO_PROMPTS = (
    "Your task is to count how many legs there are in total when given a list of animals.\n\n"
    "Now, how many legs are there in total if you have 3 spiders, 2 cows, 4 ducks?",
    "Write a short story about a fox who finds a lantern in the snow.",
    "Tell a story in which a merchant counts her coins: 12 gold and 7 silver. How many coins in all?",
)
# The quickstart's evaluation (qwythos/eval/config.py keys): every system on fewer, shorter items than the
# defaults, so it takes a few minutes on 2 cores; `qwythos eval RUN --out DIR` runs the full-size one (on
# GSM-style gsm_symbolic, which no 135M system here solves). Reasoning: 40 held-out leg_counting problems
# from a seed far from the training set's (configs/curate-quickstart.yaml), enough for a paired CI.
EVAL_OVERRIDES = (
    "gsm.generator=leg_counting",
    "gsm.args.min_animals=2",
    "gsm.args.max_animals=4",
    "gsm.args.max_instances=9",
    "gsm.seed=100000",
    "gsm.n=40",
    "gsm.max_new_tokens=96",
    "narrative.prompts=6",
    "narrative.mixed_prompts=2",
    "narrative.max_new_tokens=64",
    "narrative.heldout=16",
    "consistency.probes=4",
    "consistency.context_tokens=512",
    "consistency.systems=[hybrid_soft]",
    "robustness.long_prompt_tokens=1024",
)


def quickstart(out: Path, color: bool = True, max_new_tokens: int = 80) -> dict:
    out = Path(out)
    data, run, mixtral = out / "data", out / "run", out / "mixtral"

    if not (data / "manifest.json").is_file():
        from .curate.run import curate

        log.info("1/5 curate -> %s", data)
        curate(out=data, preset="quickstart")
    if not (run / "model" / "qwythos.json").is_file():
        from .train.config import TrainConfig
        from .train.loop import train

        log.info("2/5 train -> %s", run)
        cfg = load_config(TrainConfig, preset_path("quickstart"), [f"data.dataset={data}"])
        train(cfg, run, resume=(run / "config.yaml").is_file())
    if not (mixtral / "config.json").is_file():
        from .model.api import export_model

        log.info("3/5 export -> %s", mixtral)
        export_model(run / "model", mixtral, mode="soft")
    evaluation = run / "eval"
    if not (evaluation / "results.json").is_file():
        from .eval.api import evaluate

        log.info("4/5 eval -> %s", evaluation)
        evaluate(run, evaluation, overrides=list(EVAL_OVERRIDES))
    from .eval.report import headline

    print(f"\nevaluation ({evaluation / 'report.html'}):\n")
    print(headline(json.loads((evaluation / "results.json").read_text())))

    log.info("5/5 generate with the gear trace")
    engine = load_engine(run / "model")
    gear_sampling = for_model(DEFAULT_GEAR_SAMPLING, engine.pathways)  # sums greedy, stories sampled
    params = SamplingParams(max_new_tokens=max_new_tokens, repetition_penalty=CHAT_REPETITION_PENALTY, seed=0)
    results = {}
    for prompt in DEMO_PROMPTS:
        result = generate(engine, prompt, chat=True, params=params, gear_sampling=gear_sampling)
        print(f"\n> {prompt}\n")
        print(render(result["trace"], result["pathways"], color=color))
        results[prompt] = result
    (out / "generations.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"\nrun folder: {run}   Mixtral export: {mixtral}   generations: {out / 'generations.json'}")
    return results
