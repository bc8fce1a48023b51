"""A tiny trained run (hybrid + dense LoRA baseline) and its evaluation, shared by the eval tests.

The training set deliberately holds held-out candidates (the first gsm_symbolic problems of the evaluation's
seed and the first stories of the narrative source), so the tests can check that the evaluation drops them.
"""

from __future__ import annotations

import pytest

from fixtures import records, tiny_train_raw, write_jsonl
from qwythos import gym
from qwythos.config import from_dict
from qwythos.eval import data as evdata
from qwythos.eval.config import GsmSection
from qwythos.train.config import TrainConfig
from qwythos.train.loop import train

LEAKED_GSM = 3  # gsm_symbolic problems of the evaluation's own seed put into the training set
LEAKED_STORIES = 5  # narrative-source records put into the training set


def leaked_training_rows() -> list[dict]:
    rows = records(n_reason=8, n_story=8, n_mixed=4)
    for p in gym.problems("gsm_symbolic", LEAKED_GSM, GsmSection().seed):
        rows.append(
            {
                "id": p.id,
                "source": "gsm_symbolic",
                "pathway": "reasoning",
                "messages": [
                    {"role": "user", "content": p.question},
                    {"role": "assistant", "content": p.solution},
                ],
            }
        )
    source = evdata.narrative_source("auto")  # data/seed when it exists, else the placeholder set
    stories = [r for r in evdata.read_records(source) if r.pathway == "narrative"]
    for r in stories[:LEAKED_STORIES]:
        rows.append({"id": r.id, "source": "narrative", "pathway": "narrative", "messages": r.messages})
    return rows


@pytest.fixture(scope="session")
def train_data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("evdata") / "records.jsonl", leaked_training_rows())


@pytest.fixture(scope="session")
def tiny_run(tiny_base, train_data, tmp_path_factory):
    raw = {**tiny_train_raw(tiny_base, train_data), "baseline": {"dense_lora": True}}
    return train(from_dict(TrainConfig, raw), tmp_path_factory.mktemp("evrun") / "run")


# a quick evaluation: 2 items per task, short generations, the extreme-length prompt capped at 256 tokens
QUICK = [
    "gsm.max_new_tokens=24",
    "narrative.max_new_tokens=24",
    "consistency.context_tokens=256",
    "consistency.max_new_tokens=8",
    "robustness.max_new_tokens=8",
    "robustness.long_prompt_tokens=256",
]


@pytest.fixture(scope="session")
def evaluated(tiny_run):
    from qwythos.eval.api import evaluate

    out = tiny_run / "eval"
    return evaluate(tiny_run, out, limit=2, overrides=QUICK), out
