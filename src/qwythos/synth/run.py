"""`qwythos synth`: tasks -> teacher candidates -> checks -> best-of-n -> records + rejects + a run report.

Turn by turn (role-play replies depend on the turn before), every part of every live task asks the
teacher for n (narrative) or k (reasoning) candidates in one batch; failed candidates keep their reason;
a task whose part has no passing candidate is rejected with the most common reason. Rerunning the same
command reuses the request cache, so an interrupted run resumes without paying twice.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from ..config import load_config, to_dict
from ..text import distinct_n, self_bleu
from .cache import RequestCache
from .config import SynthConfig
from .generators import Part, Task, build_tasks
from .teachers import CachedTeacher, ChatRequest, LocalTeacher, Reply, make_teacher
from .verify import (
    JUDGE_PROMPT,
    CoherenceScorer,
    check_narrative,
    majority,
    narrative_score,
    parse_judge,
    strip_final_line,
    trim_to_sentence,
    verify_solution,
    with_final_line,
)

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    text: str
    ok: bool
    reason: str
    metrics: dict = field(default_factory=dict)
    score: float = 0.0


@dataclass
class Job:
    """One part of one task in the current turn, with its candidates."""

    task: Task
    index: int  # which part of the turn
    part: Part
    messages: list[dict[str, str]]
    replies: list[Reply] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    chosen: Candidate | None = None
    reason: str = ""


def stable_seed(*parts: object) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def conversation(task: Task, turn: int, assistant: list[str]) -> list[dict[str, str]]:
    """System + the turns so far (with the chosen replies) + this turn's user message."""
    messages = [{"role": "system", "content": task.system}] if task.system else []
    for t in range(turn):
        messages += [
            {"role": "user", "content": task.turns[t].user},
            {"role": "assistant", "content": assistant[t]},
        ]
    return messages + [{"role": "user", "content": task.turns[turn].user}]


# ---------------------------------------------------------------- checking candidates


def candidates(part: Part, cfg: SynthConfig) -> int:
    """Teacher requests for a part: k for reasoning, n for narrative, none for a given worked solution."""
    if part.given is not None:
        return 0
    return cfg.select.k if part.pathway == "reasoning" else cfg.select.n


def check_reasoning(job: Job, cfg: SynthConfig) -> None:
    part, sel = job.part, cfg.select
    if part.given is not None:
        job.replies = [Reply(part.given)]
    texts = [r.text for r in job.replies]
    reference, agreement = part.reference, None
    if reference is None:  # no reference: the majority answer of the k samples becomes the reference
        reference, agreement = majority(texts, sel.min_agreement, sel.extract)
    for reply in job.replies:
        if reply.error:
            job.candidates.append(Candidate(reply.error, False, "teacher_error"))
            continue
        if reference is None:
            job.candidates.append(Candidate(reply.text, False, "no_consensus"))
            continue
        v = verify_solution(reply.text, reference, sel.extract, sel.check_steps)
        metrics = {"words": float(len(reply.text.split()))}
        if agreement is not None:
            metrics["agreement"] = agreement
        job.candidates.append(Candidate(reply.text, v.ok, v.reason, metrics, -metrics["words"]))
    finish(job, reference)


def check_narratives(jobs: list[Job], cfg: SynthConfig, scorer: CoherenceScorer | None, judge) -> None:
    """Cheap checks on every candidate, then coherence and the judge on the survivors only."""
    for job in jobs:
        for reply in job.replies:
            if reply.error:
                job.candidates.append(Candidate(reply.error, False, "teacher_error"))
                continue
            text = trim_to_sentence(reply.text) if reply.finish_reason == "length" else reply.text
            s = check_narrative(text, cfg.score, job.part.min_words, job.part.word)
            job.candidates.append(Candidate(text, s.ok, s.reason, s.metrics))
    alive = [(job, c) for job in jobs for c in job.candidates if c.ok]
    if scorer is not None and alive:
        losses = scorer.losses([(job.messages, c.text) for job, c in alive])
        for (_job, c), loss in zip(alive, losses, strict=True):
            c.metrics["loss"] = loss
            if loss > cfg.score.max_loss:
                c.ok, c.reason = False, "incoherent"
    alive = [(job, c) for job, c in alive if c.ok]
    if judge is not None and alive:
        requests = [
            ChatRequest(
                [
                    {
                        "role": "user",
                        "content": JUDGE_PROMPT.format(task=job.messages[-1]["content"], text=c.text),
                    }
                ],
                max_tokens=8,
                temperature=0.0,
            )
            for job, c in alive
        ]
        for (_job, c), reply in zip(alive, judge.complete(requests), strict=True):
            score = parse_judge(reply.text)
            c.metrics["judge"] = -1.0 if score is None else score
            if score is None or score < cfg.score.min_judge:
                c.ok, c.reason = False, "judge_low" if score is not None else "judge_unparseable"
    for job in jobs:
        for c in job.candidates:
            c.score = narrative_score(c.metrics)
        finish(job)


def finish(job: Job, reference: str | None = None) -> None:
    """Best-of-n: the top passing candidate, or the most common reason why none passed."""
    passing = [c for c in job.candidates if c.ok]
    if not passing:
        job.reason = Counter(c.reason for c in job.candidates).most_common(1)[0][0]
        return
    best = max(passing, key=lambda c: c.score)
    if job.part.pathway == "reasoning":
        if job.part.conclusion is None:
            best.text = with_final_line(best.text, reference or "")
        else:
            best.text = f"{strip_final_line(best.text)}\n{job.part.conclusion}"
    job.chosen = best


# ---------------------------------------------------------------- the run


def synth(out: str | Path, config: str | Path | None = None, overrides: list[str] | None = None) -> Path:
    """Generate, check, select; write records, rejects and report.json to ``out``; return the report path."""
    cfg = load_config(SynthConfig, config, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    started = time.time()
    tasks = build_tasks(cfg)
    if not tasks:
        raise ValueError("nothing to generate: set tasks.narrative, tasks.mixed_story, ... to a count > 0")
    log.info("%d tasks: %s", len(tasks), dict(Counter(t.kind for t in tasks)))
    teacher = make_teacher(cfg.teacher)
    cached = CachedTeacher(teacher, RequestCache(cfg.cache or out / "cache.sqlite"))
    scorer = None
    if cfg.score.coherence:
        if cfg.score.coherence_model is None and isinstance(teacher, LocalTeacher):
            scorer = CoherenceScorer(teacher.engine)
        else:
            from ..inference.api import load_engine
            from .teachers import embedded_model_dir

            scorer = CoherenceScorer(load_engine(cfg.score.coherence_model or embedded_model_dir()))
    judge = cached if cfg.score.judge else None

    assistant: dict[str, list[str]] = {t.id: [] for t in tasks}
    spans: dict[str, list[dict]] = {t.id: [] for t in tasks}
    rejected: dict[str, dict] = {}
    candidate_reasons: Counter = Counter()
    for turn in range(max(len(t.turns) for t in tasks)):
        live = [t for t in tasks if t.id not in rejected and len(t.turns) > turn]
        jobs, requests = [], []
        for t in live:
            conv = conversation(t, turn, assistant[t.id])
            for j, part in enumerate(t.turns[turn].parts):
                messages = (
                    conv if part.instruction is None else [{"role": "user", "content": part.instruction}]
                )
                job = Job(t, j, part, messages)
                jobs.append(job)
                reasoning = part.pathway == "reasoning"
                temperature = cfg.sampling.reasoning_temperature if reasoning else cfg.sampling.temperature
                for c in range(candidates(part, cfg)):
                    requests.append(
                        ChatRequest(
                            messages,
                            part.max_tokens,
                            temperature,
                            cfg.sampling.top_p,
                            cfg.sampling.top_k,
                            stable_seed(cfg.seed, t.id, turn, j, c),
                            part.stop,
                        )
                    )
        with tqdm(total=len(requests), desc=f"turn {turn + 1}", unit="req", mininterval=5) as bar:
            replies = cached.complete(requests, bar.update)
        it = iter(replies)
        for job in jobs:
            job.replies = [next(it) for _ in range(candidates(job.part, cfg))]
        for job in jobs:
            if job.part.pathway == "reasoning":
                check_reasoning(job, cfg)
        check_narratives([j for j in jobs if j.part.pathway != "reasoning"], cfg, scorer, judge)
        for job in jobs:
            candidate_reasons.update(c.reason for c in job.candidates)
        assemble(live, jobs, turn, assistant, spans, rejected)

    records, seen = [], set()
    for t in tasks:
        if t.id in rejected:
            continue
        messages = conversation(t, len(t.turns) - 1, assistant[t.id])
        messages.append({"role": "assistant", "content": assistant[t.id][-1]})
        digest = hashlib.sha256("\x00".join(assistant[t.id]).encode()).hexdigest()
        if digest in seen:
            rejected[t.id] = {"id": t.id, "kind": t.kind, "reason": "duplicate", "turn": None}
            continue
        seen.add(digest)
        records.append(
            {
                "id": f"{cfg.source}-{cfg.seed}-{t.id}",
                "source": cfg.source,
                "messages": messages,
                "pathway": t.pathway,
                "pathway_confidence": 1.0,  # labels by construction: each part was written for its pathway
                "spans": spans[t.id],
                "meta": {"kind": t.kind, "teacher": cached.teacher.name, "seed": cfg.seed, **t.meta},
            }
        )
    records_path = write_jsonl(out / "records.jsonl", records, cfg.compress)
    write_jsonl(out / "rejects.jsonl", list(rejected.values()), cfg.compress)
    report = run_report(cfg, tasks, records, rejected, candidate_reasons, cached, time.time() - started)
    report["records"] = records_path.name
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2))
    log.info(
        "kept %d of %d tasks (%s); report %s", len(records), len(tasks), report["rejected_by_reason"], path
    )
    return path


def assemble(live, jobs, turn, assistant, spans, rejected) -> None:
    """Join each live task's chosen parts into this turn's reply (recording spans), or reject the task."""
    by_task: dict[str, list[Job]] = {}
    for job in jobs:
        by_task.setdefault(job.task.id, []).append(job)
    for t in live:
        parts = sorted(by_task[t.id], key=lambda j: j.index)
        failed = next((j for j in parts if j.chosen is None), None)
        if failed is not None:
            rejected[t.id] = {
                "id": t.id,
                "kind": t.kind,
                "reason": failed.reason,
                "turn": turn,
                "part": failed.part.pathway,
                "candidates": [{"reason": c.reason, "text": c.text[:500]} for c in failed.candidates],
            }
            continue
        text, message = "", len(conversation(t, turn, assistant[t.id]))  # the reply's message index
        for j in parts:
            if text:
                text += t.turns[turn].joiner
            start = len(text)
            text += j.chosen.text
            spans[t.id].append(
                {"message": message, "start": start, "end": len(text), "pathway": j.part.pathway}
            )
        assistant[t.id].append(text)


def write_jsonl(path: Path, rows: list[dict], compress: bool) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    if compress:
        path = path.with_suffix(".jsonl.gz")
        path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    else:
        path.write_bytes(data)
    return path


def text_stats(records: list[dict], sample: int = 100) -> dict:
    """Diversity of the kept replies: distinct-1/2, self-BLEU over the first ``sample``, mean words."""
    texts = [m["content"] for r in records for m in r["messages"] if m["role"] == "assistant"]
    if not texts:
        return {}
    return {
        "replies": len(texts),
        "mean_words": round(sum(len(t.split()) for t in texts) / len(texts), 1),
        "distinct1": round(distinct_n(texts, 1), 4),
        "distinct2": round(distinct_n(texts, 2), 4),
        f"self_bleu_{min(sample, len(texts))}": round(self_bleu(texts[:sample]), 4),
    }


def run_report(
    cfg, tasks, records, rejected, candidate_reasons, cached: CachedTeacher, wall_s: float
) -> dict:
    by_kind: dict[str, dict] = {}
    for t in tasks:
        k = by_kind.setdefault(t.kind, {"tasks": 0, "accepted": 0, "rejected": Counter()})
        k["tasks"] += 1
        if t.id in rejected:
            k["rejected"][rejected[t.id]["reason"]] += 1
        else:
            k["accepted"] += 1
    return {
        "tasks": len(tasks),
        "accepted": len(records),
        "rejected": len(rejected),
        "rejected_by_reason": dict(Counter(r["reason"] for r in rejected.values()).most_common()),
        "by_kind": {k: {**v, "rejected": dict(v["rejected"])} for k, v in by_kind.items()},
        "by_pathway": dict(Counter(r["pathway"] for r in records)),
        "kept_text": text_stats(records),
        "candidates": dict(candidate_reasons.most_common()),
        "requests": cached.stats,
        "tokens": cached.tokens,
        "wall_s": round(wall_s, 1),
        "teacher": cached.teacher.name,
        "select": to_dict(cfg.select),
    }
