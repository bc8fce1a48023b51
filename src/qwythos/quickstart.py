"""`qwythos quickstart`: the main job on the embedded defaults.

Today it builds the default pathway model on the embedded SmolLM2-135M (router initialised from example
prompts, LoRAs untrained) and generates with a coloured gear trace. Curate -> train -> eval -> export join
this pipeline as they land.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

from .inference.api import generate, load_engine
from .inference.sampling import SamplingParams
from .inference.trace import render
from .model.api import init_model

log = logging.getLogger(__name__)

DEMO_PROMPTS = (
    "Sam has 5 marbles and wins 8 more. How many marbles does Sam have now? Think step by step.",
    "Write a short story about a fox who finds a lantern in the snow.",
)


def router_prompts() -> dict[str, list[str]]:
    return json.loads(resources.files("qwythos.data").joinpath("router_prompts.json").read_text())


def quickstart(out: Path, color: bool = True, max_new_tokens: int = 60) -> dict:
    out = Path(out)
    model_dir = out / "model"
    if not (model_dir / "qwythos.json").is_file():
        log.info("building the default pathway model in %s", model_dir)
        init_model(out=model_dir, router_prompts=router_prompts())
    engine = load_engine(model_dir)
    results = {}
    for prompt in DEMO_PROMPTS:
        result = generate(engine, prompt, chat=True, params=SamplingParams(max_new_tokens=max_new_tokens))
        print(f"\n> {prompt}\n")
        print(render(result["trace"], result["pathways"], color=color))
        results[prompt] = result
    (out / "generations.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return results
