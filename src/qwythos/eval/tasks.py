"""The generation tasks: each builds its prompts as engine jobs and scores what came back.

    gsm / gsm_file   GSM8K-format exact match, strict ('#### N') and flexible (last number); few-shot turns
    narrative        distinct-1/2/3, self-BLEU, repetition rate, length statistics of sampled stories
    mixed            stories with a sum: the answer (strict/flexible) and how the gate switches inside them
    gear             pathway usage by prompt domain, switches per 100 tokens, per-layer usage (heatmap data)
    robustness       injection, gibberish, extreme length, other languages, contradictions: no crash,
                     generation ends, gate values finite, and where the gate goes
    consistency      probes along the scripted conversation (consistency.py), answered by plain chat and
                     (``consistency_engine``) by the dialogue engine on the same history and budget
Scoring functions take ``generation.Output`` lists and return flat metric dicts (results.json names).
"""

from __future__ import annotations

import math
import statistics

import torch

from ..inference.engine import Engine
from ..inference.sampling import SamplingParams
from ..text import distinct_n, gsm_answer, gsm_match, leaks_reasoning, repetition_rate, self_bleu, words
from . import consistency as cons
from . import texts
from .data import GsmProblem
from .generation import Job, Output

# ---------------------------------------------------------------- reasoning


def gsm_messages(problem: GsmProblem, shots: list[GsmProblem]) -> list[dict[str, str]]:
    """Few-shot examples as earlier chat turns (question -> worked solution), then the question."""
    msgs = []
    for s in shots:
        msgs += [{"role": "user", "content": s.question}, {"role": "assistant", "content": s.solution}]
    return [*msgs, {"role": "user", "content": problem.question}]


def gsm_jobs(
    engine: Engine,
    problems: list[GsmProblem],
    shots: list[GsmProblem],
    max_new_tokens: int,
    task: str = "gsm",
) -> list[Job]:
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    return [
        Job(task, p.id, engine.encode_chat(gsm_messages(p, shots)), params, {"answer": p.answer})
        for p in problems
    ]


def score_gsm(outputs: list[Output], prefix: str = "gsm") -> dict:
    n = len(outputs)
    strict = sum(gsm_match(o.text, o.job.meta["answer"], strict=True) for o in outputs)
    flexible = sum(gsm_match(o.text, o.job.meta["answer"], strict=False) for o in outputs)
    return {
        f"{prefix}_strict": strict / n if n else None,
        f"{prefix}_flexible": flexible / n if n else None,
        f"{prefix}_n": n,
        f"{prefix}_format": sum(gsm_answer(o.text) is not None for o in outputs) / n if n else None,
        f"{prefix}_errors": sum(o.error is not None for o in outputs),
    }


# ---------------------------------------------------------------- narrative and mixed


def story_params(max_new_tokens: int, temperature: float, top_p: float, seed: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)


STORY_SAMPLE_STRIDE = (
    1_000_003  # sample k of a prompt is seeded seed + i + k * this (no prompt count reaches it)
)


def narrative_jobs(
    engine: Engine,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    samples: int = 1,
) -> list[Job]:
    """``samples`` stories per prompt, each with its own seed (so batching never changes a story, and sample
    k of prompt i is the same story whatever the number of prompts or samples)."""
    return [
        Job(
            "narrative",
            f"story-{i}" if k == 0 else f"story-{i}-{k}",
            engine.encode_chat([{"role": "user", "content": p}]),
            story_params(max_new_tokens, temperature, top_p, seed + i + STORY_SAMPLE_STRIDE * k),
            {"prompt": p, "sample": k},
        )
        for i, p in enumerate(prompts)
        for k in range(samples)
    ]


def length_stats(outputs: list[Output]) -> dict:
    lengths = [len(words(o.text)) for o in outputs]
    tokens = [len(o.completion.token_ids) for o in outputs if o.completion is not None]
    if not lengths:
        return {}
    ordered = sorted(lengths)
    return {
        "len_words_mean": statistics.fmean(lengths),
        "len_words_median": statistics.median(lengths),
        "len_words_p90": ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)],
        "len_tokens_mean": statistics.fmean(tokens) if tokens else None,
        "finished_share": sum(
            o.completion is not None and o.completion.finish_reason == "stop" for o in outputs
        )
        / len(outputs),
    }


def score_narrative(outputs: list[Output]) -> dict:
    stories = [o.text for o in outputs]
    out = {f"distinct_{n}": distinct_n(stories, n) for n in (1, 2, 3)}
    out["self_bleu"] = self_bleu(stories)
    out["repetition"] = statistics.fmean(repetition_rate(s) for s in stories) if stories else None
    out["story_leakage"] = statistics.fmean(leaks_reasoning(s) for s in stories) if stories else None
    out["narrative_n"] = len(stories)
    return {**out, **length_stats(outputs)}


def mixed_jobs(engine: Engine, records: list, max_new_tokens: int, seed: int) -> list[Job]:
    """Greedy, so the answer is the model's best; records without meta.answer only feed the gear metrics."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, seed=seed)
    return [
        Job(
            "mixed",
            r.id,
            engine.encode_chat([m for m in r.messages if m["role"] != "assistant"]),
            params,
            {"answer": str(r.meta["answer"]) if "answer" in r.meta else None},
        )
        for r in records
    ]


def score_mixed(outputs: list[Output]) -> dict:
    checked = [o for o in outputs if o.job.meta.get("answer") is not None]
    out = score_gsm(checked, prefix="mixed") if checked else {"mixed_strict": None, "mixed_flexible": None}
    return {k: v for k, v in out.items() if k in ("mixed_strict", "mixed_flexible", "mixed_n")}


# ---------------------------------------------------------------- the gear: usage, switches, layers


def gear(outputs_by_domain: dict[str, list[Output]], pathways: list[str]) -> dict:
    """Usage by prompt domain (mean gate over generated tokens), switches per 100 tokens, per-layer usage.

    A token's pathway is the argmax of its gate averaged over layers; a switch is a change of it between
    consecutive generated tokens of one reply."""
    usage, per_layer, switches_by = {}, {}, {}
    total_switches = total_tokens = 0
    for domain, outputs in outputs_by_domain.items():
        gates = [o.gates for o in outputs if o.gates is not None]  # each (n, L, P)
        if not gates:
            continue
        stacked = torch.cat(gates)  # (N, L, P)
        usage[domain] = {p: round(float(w), 4) for p, w in zip(pathways, stacked.mean((0, 1)), strict=True)}
        per_layer[domain] = [[round(float(w), 4) for w in row] for row in stacked.mean(0)]
        sw = sum(int((g.mean(1).argmax(-1).diff() != 0).sum()) for g in gates)
        n = int(stacked.shape[0])
        switches_by[domain] = 100.0 * sw / n if n else None
        total_switches, total_tokens = total_switches + sw, total_tokens + n
    return {
        "switches_per_100": 100.0 * total_switches / total_tokens if total_tokens else None,
        "switches_per_100_by_domain": switches_by,
        "usage_by_domain": usage,
        "per_layer_usage": per_layer,
    }


# ---------------------------------------------------------------- robustness


def robustness_prompts(per_category: int, tokenizer, context: int) -> list[tuple[str, str]]:
    """(category, prompt) pairs; the extreme-length prompt is twice the context in tokens."""
    out = []
    for category, prompts in texts.ROBUSTNESS.items():
        for k, p in enumerate(prompts[:per_category]):
            if p == "{long}":
                per = max(1, len(tokenizer.encode(texts.LONG_PARAGRAPH)))
                p = texts.LONG_PARAGRAPH * (2 * context // per + 1) + f"\nSummarise the archive ({k})."
            elif p.startswith("{gibberish:"):
                p = texts.gibberish(int(p[11:-1]))
            out.append((category, p))
    return out


def robustness_jobs(engine: Engine, per_category: int, max_new_tokens: int, context: int) -> list[Job]:
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    return [
        Job(
            "robustness",
            f"{cat}-{i}",
            engine.encode_chat([{"role": "user", "content": p}]),
            params,
            {"category": cat},
        )
        for i, (cat, p) in enumerate(robustness_prompts(per_category, engine.tokenizer, context))
    ]


def score_robustness(outputs: list[Output], pathways: list[str]) -> dict:
    """Per category: crashes, terminated generations, finite gates, truncations, where the gate went."""
    by_cat: dict[str, list[Output]] = {}
    for o in outputs:
        by_cat.setdefault(o.job.meta["category"], []).append(o)
    categories = {}
    for cat, outs in by_cat.items():
        gates = [o.gates for o in outs if o.gates is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in gates)
        g = gear({cat: outs}, pathways)
        categories[cat] = {
            "n": len(outs),
            "errors": [o.error for o in outs if o.error],
            "terminated": sum(
                o.completion is not None and o.completion.finish_reason in ("stop", "length") for o in outs
            ),
            "gates_finite": finite,
            "truncated": sum(o.truncated_from is not None for o in outs),
            "prompt_tokens": [o.truncated_from or len(o.job.prompt_ids) for o in outs],
            "usage": g["usage_by_domain"].get(cat),
            "switches_per_100": g["switches_per_100"],
            "sample": outs[0].text[:200],
        }
    ok = all(not c["errors"] and c["terminated"] == c["n"] and c["gates_finite"] for c in categories.values())
    return {"robust_ok": ok, "categories": categories}


# ---------------------------------------------------------------- consistency


def consistency_jobs(
    engine: Engine, script: cons.Script, probes: list[cons.Probe], context_tokens: int, max_new_tokens: int
) -> list[Job]:
    budget = min(context_tokens, engine.max_len) - max_new_tokens
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    jobs = []
    for k, probe in enumerate(probes):
        messages, start = cons.window(script, probe, engine.encode_chat, budget)
        visible = probe.kind == "persona" or (probe.fact_message is not None and probe.fact_message >= start)
        jobs.append(
            Job(
                "consistency",
                f"probe-{k}",
                engine.encode_chat(messages),
                params,
                {"probe": k, "visible": visible, "window_start": start},
            )
        )
    return jobs


def score_consistency(outputs: list[Output], probes: list[cons.Probe]) -> dict:
    rows = [(probes[o.job.meta["probe"]], o.text, o.job.meta["visible"]) for o in outputs]
    return cons.summarise(rows)


def consistency_engine(
    engine: Engine, script: cons.Script, probes: list[cons.Probe], budget: int, max_new_tokens: int, mode: str
) -> list[tuple[cons.Probe, str, bool]]:
    """The same probes answered by the dialogue engine: the persona as a card, the script's messages
    recorded as authored exchanges (ledger, recap and recall as in a live session), each probe a fork
    (nothing appended) in the same token budget; ``mode`` is the system's routing. (probe, answer, True)."""
    import tempfile
    from pathlib import Path

    from ..dialogue.cards import parse_card
    from ..dialogue.store import Store
    from ..dialogue.turn import Dialogue

    card = parse_card({"name": cons.PERSONA_NAME, "description": script.system})
    settings = {"budget": budget, "reply_tokens": max_new_tokens, "routing": mode}
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "consistency.sqlite") as store:
        d = Dialogue(engine, store)
        sid = d.create_session("eval", store.add_character("eval", card), "Visitor", [], settings)
        done = 0
        for probe in sorted(probes, key=lambda p: p.position):
            for k in range(done, probe.position - probe.position % 2, 2):
                pair = script.messages[k : k + 2]
                d.record("eval", sid, pair[0]["content"], pair[1]["content"])
            done = max(done, probe.position - probe.position % 2)
            rows.append((probe, d.turn("eval", sid, probe.question, probe=True).reply, True))
    return rows
