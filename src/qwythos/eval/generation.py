"""Batched generation for evaluation: every task's prompts for one system decoded together by the engine.

Jobs are sorted by prompt length and cut into batches of at most ``batch_size`` rows and
``max_batch_tokens`` padded prefill tokens, so a long prompt never pads a batch of short ones. A prompt
longer than the context keeps its last tokens (truncation at the context, the tail holds the generation
prompt). A batch that raises is retried one request at a time, so one bad prompt fails alone and the
failure is recorded, not raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..inference.engine import Completion, Engine, Request
from ..inference.sampling import SamplingParams
from ..model.block import Routing

log = logging.getLogger(__name__)


@dataclass
class Job:
    task: str  # gsm | gsm_file | narrative | mixed | consistency | robustness
    key: str  # the item's id within its task
    prompt_ids: list[int]
    params: SamplingParams
    meta: dict = field(default_factory=dict)


@dataclass
class Output:
    job: Job
    completion: Completion | None
    error: str | None = None
    truncated_from: int | None = None  # prompt tokens before truncation at the context

    @property
    def text(self) -> str:
        return self.completion.text if self.completion is not None else ""

    @property
    def gates(self) -> torch.Tensor | None:
        """(n, L, P) gate weights of the generated tokens."""
        c = self.completion
        return None if c is None or c.gates is None or not c.gates.numel() else c.gates.float()


def fit_context(ids: list[int], max_new_tokens: int, context: int) -> tuple[list[int], int | None]:
    """Keep the last tokens so that prompt + generation fits the context; (ids, original length or None)."""
    room = context - max_new_tokens
    if room < 1:
        raise ValueError(
            f"max_new_tokens ({max_new_tokens}) leaves no room in the context of {context} tokens"
        )
    return (ids, None) if len(ids) <= room else (ids[-room:], len(ids))


def batches(jobs: list[Job], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Job indices grouped by similar prompt length under both limits."""
    order = sorted(range(len(jobs)), key=lambda i: len(jobs[i].prompt_ids))
    out: list[list[int]] = []
    for i in order:
        n = len(jobs[i].prompt_ids)
        if out and len(out[-1]) < batch_size and (len(out[-1]) + 1) * n <= max_batch_tokens:
            out[-1].append(i)  # sorted ascending: this prompt is the batch's longest
        else:
            out.append([i])
    return out


def generate(
    engine: Engine,
    routing: Routing,
    jobs: list[Job],
    batch_size: int = 16,
    max_batch_tokens: int = 6144,
    context: int | None = None,
    desc: str = "generate",
) -> list[Output]:
    """Outputs in job order; per-request errors are recorded in ``Output.error``."""
    context = context or engine.max_len
    fitted = []
    for job in jobs:
        ids, before = fit_context(job.prompt_ids, job.params.max_new_tokens, context)
        fitted.append((Job(job.task, job.key, ids, job.params, job.meta), before))
    outputs: list[Output | None] = [None] * len(jobs)
    groups = batches([f[0] for f in fitted], batch_size, max_batch_tokens)
    bar = tqdm(total=len(jobs), desc=desc, unit="req", leave=False, dynamic_ncols=True)
    for group in groups:
        try:
            done = engine.generate([_request(fitted[i][0]) for i in group], routing)
            results = [(c, None) for c in done]
        except Exception as e:  # one bad prompt must not sink its batch: retry it alone
            if len(group) == 1:
                results = [(None, f"{type(e).__name__}: {e}")]
            else:
                log.warning("a batch of %d failed (%s); retrying one by one", len(group), e)
                results = [_one(engine, routing, fitted[i][0]) for i in group]
        for i, (completion, error) in zip(group, results, strict=True):
            outputs[i] = Output(jobs[i], completion, error, fitted[i][1])
        bar.update(len(group))
    bar.close()
    return outputs  # type: ignore[return-value]


def _request(job: Job) -> Request:
    return Request(list(job.prompt_ids), job.params)


def _one(engine: Engine, routing: Routing, job: Job) -> tuple[Completion | None, str | None]:
    try:
        return engine.generate([_request(job)], routing)[0], None
    except Exception as e:  # recorded, not raised: the robustness suite counts crashes
        return None, f"{type(e).__name__}: {e}"
