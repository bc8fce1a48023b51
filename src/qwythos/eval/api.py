"""`qwythos eval` as typed functions: ``evaluate`` (one run or model -> results.json + report) and
``compare`` (several evaluations side by side).

For each system (baselines.py) every generation task's prompts are decoded in one batched pass
(generation.py), then the held-out records are scored teacher-forced (teacher.py). The results dict holds
every figure, the resolved config, the data provenance and the config/model/data hashes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import load_config, to_dict
from ..inference.engine import routing_name
from ..text import gsm_match
from . import consistency as cons
from . import data as evdata
from . import stats, tasks, texts
from .baselines import System, Target, build_systems, file_hashes, resolve_target
from .config import EvalConfig
from .generation import Output, generate
from .judge import judge
from .report import compare_html, compare_markdown, write_report
from .teacher import score

log = logging.getLogger(__name__)
FORMAT, VERSION = "qwythos-eval", 1


@dataclass
class Inputs:
    """What every system is asked and scored on: built once per evaluation, the same for all systems."""

    problems: list  # held-out GSM problems
    shots: list  # few-shot worked examples
    file_problems: list  # gsm.file problems
    story_prompts: list[str]
    mixed_prompts: list
    script: object  # the scripted consistency conversation
    probes: list
    scored_records: dict[str, list]  # teacher-forced: gsm, narrative, mixed


def load_eval_config(
    config: EvalConfig | str | Path | None = None,
    overrides: list[str] | None = None,
    limit: int | None = None,
) -> EvalConfig:
    cfg = config if isinstance(config, EvalConfig) else load_config(EvalConfig, config, overrides)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit {limit}: must be >= 1")
        cfg.limit = limit
    return cfg


def evaluate(
    run_or_model_dir: str | Path,
    out: str | Path,
    limit: int | None = None,
    config: EvalConfig | str | Path | None = None,
    overrides: list[str] | None = None,
) -> dict:
    """Evaluate a run folder (or a model folder) into ``out``: results.json, report.md/html, plots/*.png,
    samples.jsonl. ``limit`` caps every task's item count; ``overrides`` are dotted EvalConfig keys."""
    t0 = time.time()
    cfg = load_eval_config(config, overrides, limit)
    target = resolve_target(run_or_model_dir)
    out = _prepare_out(Path(out))
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)

    # the data: held out from training, checked for overlap
    source = evdata.narrative_source(cfg.narrative.source, target.dataset)
    trained, checked_against = evdata.training_records(target.dataset, source)
    g = cfg.gsm
    problems, shots, gsm_info = evdata.heldout_gsm(
        cfg.size(g.n), g.seed, trained, g.fewshot, generator=g.generator, args=g.args
    )
    file_problems = evdata.read_gsm_file(cfg.gsm.file)[: cfg.size(10**9)] if cfg.gsm.file else []
    held, held_info = evdata.heldout_records(
        str(source),  # resolved: the run's held-out rows when it kept some
        trained,
        cfg.size(cfg.narrative.heldout),
        cfg.narrative.min_heldout,
        seed=cfg.narrative.seed,
    )
    story_prompts = list(texts.NARRATIVE_PROMPTS[: cfg.size(cfg.narrative.prompts)])
    mixed_prompts = held["mixed"][: cfg.size(cfg.narrative.mixed_prompts)]
    script = cons.build_script()
    probes = script.probes[: cfg.size(cfg.consistency.probes)]
    scored_records = {
        "gsm": [evdata.gsm_record(p) for p in problems if p.solution],
        "narrative": held["narrative"],
        "mixed": held["mixed"],
    }
    data_info = {
        "gsm": gsm_info,
        "narrative": held_info["narrative"],
        "mixed": held_info["mixed"],
        "overlap_checked_against": checked_against,
        "narrative_prompts": len(story_prompts),
        "mixed_prompts": len(mixed_prompts),
    }
    if file_problems:
        data_info["gsm_file"] = {
            "path": str(cfg.gsm.file),
            "n": len(file_problems),
            "hash": evdata.digest([p.question for p in file_problems]),
            "overlap": evdata.file_overlap(file_problems, trained),  # scored anyway: the user's file
        }
        if data_info["gsm_file"]["overlap"]:
            log.warning(
                "gsm.file %s: %d of its %d problems are in the training set (%s)",
                cfg.gsm.file,
                data_info["gsm_file"]["overlap"],
                len(file_problems),
                checked_against,
            )

    inputs = Inputs(
        problems, shots, file_problems, story_prompts, mixed_prompts, script, probes, scored_records
    )
    systems, missing = build_systems(target, cfg.systems)
    if not systems:
        raise ValueError(f"none of the systems {cfg.systems} can be built here: {missing}")
    pathways = next(s.engine.pathways for s in systems if s.name != "dense_lora")
    results: dict = {
        "format": FORMAT,
        "version": VERSION,
        "target": {"kind": target.kind, "path": str(target.path), "model_dir": str(target.model_dir)},
        "pathways": pathways,
        "systems": {},
        "per_item": {},  # system -> {"correct": {task: {id: bool}}, "nll": {kind: {id: nats/token}}}
        "missing": missing,
        "gear": {},
        "robustness": {},
        "consistency": {
            "note": (
                f"The scripted {script.words}-word conversation is answered by the model's plain chat "
                f"(consistency_*: the system prompt and the latest turns that fit in "
                f"{cfg.consistency.context_tokens} tokens) and, for gated systems, by the dialogue engine "
                "(consistency_engine_*: the persona as a card, the history recorded into a session with its "
                "ledger, recap and recall, each probe a fork, the same budget). The script's world changes "
                "are free text, not game events: the engine sees them only through the ledger and recall."
            ),
            "words": script.words,
            "messages": len(script.messages),
            "probes": [
                {"position": p.position, "kind": p.kind, "question": p.question, "expected": p.expected}
                for p in probes
            ],
            "answers": {},
        },
        "data": data_info,
        "config": to_dict(cfg),
        "notes": [],
    }
    results["notes"].append(results["consistency"]["note"])
    examples: dict[str, dict[str, str]] = {}
    timing = {}
    samples_path = out / "samples.jsonl"
    samples_path.write_text("")
    for system in tqdm(systems, desc="systems", unit="system", dynamic_ncols=True):
        t = time.time()
        with system.active():
            metrics, details = _evaluate_system(system, cfg, target, inputs)
        metrics["time_s"] = round(time.time() - t, 1)
        timing[system.name] = {**details["timing"], "total_s": metrics["time_s"]}
        results["systems"][system.name] = metrics
        results["per_item"][system.name] = details["per_item"]
        if system.gated:
            results["gear"][system.name] = details["gear"]
        if "robustness" in details:
            results["robustness"][system.name] = details["robustness"]
        if "consistency" in details:
            results["consistency"]["answers"][system.name] = details["consistency"]
        if "consistency_engine" in details:
            results["consistency"].setdefault("engine_answers", {})[system.name] = details[
                "consistency_engine"
            ]
        examples[system.name] = details["examples"]
        with open(samples_path, "a") as f:
            for o in details["outputs"]:
                f.write(json.dumps(_sample(system.name, o), ensure_ascii=False) + "\n")
        log.info("%s: %s", system.name, _headline(metrics))
        if system.name == "dense_lora":  # its own model: free it before the next system
            system.engine.model = None
    results["examples"] = examples
    results["paired"] = stats.compare(results["per_item"], seed=cfg.narrative.seed)
    results["hashes"] = {
        **file_hashes(target),
        **_dataset_hash(target),
        "eval_config": evdata.digest(to_dict(cfg)),
        "gsm_heldout": gsm_info["hash"],
        "narrative_heldout": held_info["narrative"]["hash"],
        "mixed_heldout": held_info["mixed"]["hash"],
    }
    timing["total_s"] = round(time.time() - t0, 1)
    results["timing"] = {
        **timing,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    (out / "heldout_gsm.jsonl").write_text(
        "".join(
            json.dumps({"question": p.question, "answer": p.solution or p.answer}) + "\n" for p in problems
        )
    )
    write_report(results, out)
    log.info("evaluation of %s written to %s in %.0f s", target.path, out, timing["total_s"])
    return results


def _evaluate_system(system: System, cfg: EvalConfig, target: Target, inputs: Inputs) -> tuple[dict, dict]:
    """One system's metrics (flat) and details (gear, robustness, consistency answers, outputs)."""
    engine, x = system.engine, inputs
    problems, shots, file_problems, probes = x.problems, x.shots, x.file_problems, x.probes
    n = cfg.narrative
    jobs = tasks.gsm_jobs(engine, problems, shots, cfg.gsm.max_new_tokens)
    if file_problems:
        jobs += tasks.gsm_jobs(engine, file_problems, shots, cfg.gsm.max_new_tokens, task="gsm_file")
    jobs += tasks.narrative_jobs(
        engine, x.story_prompts, n.max_new_tokens, n.temperature, n.top_p, n.seed, n.samples_per_prompt
    )
    jobs += tasks.mixed_jobs(engine, x.mixed_prompts, cfg.gsm.max_new_tokens, n.seed)
    if cfg.consistency.enabled and system.name in cfg.consistency.systems:
        c = cfg.consistency
        jobs += tasks.consistency_jobs(engine, x.script, probes, c.context_tokens, c.max_new_tokens)
    rt = cfg.runtime
    clock = time.time()
    outputs = generate(
        engine, system.routing, jobs, rt.batch_size, rt.max_batch_tokens, desc=f"{system.name}: generate"
    )
    timing = {"generate_s": round(time.time() - clock, 1)}
    if cfg.robustness.enabled and system.name in cfg.robustness.systems:
        clock = time.time()
        r = cfg.robustness
        context = min(r.long_prompt_tokens or engine.max_len, engine.max_len)
        robust = tasks.robustness_jobs(engine, cfg.size(r.per_category), r.max_new_tokens, context)
        outputs += generate(
            engine,
            system.routing,
            robust,
            rt.batch_size,
            rt.max_batch_tokens,
            context,
            desc=f"{system.name}: robustness",
        )
        timing["robustness_s"] = round(time.time() - clock, 1)
    by_task: dict[str, list[Output]] = {}
    for o in outputs:
        by_task.setdefault(o.job.task, []).append(o)

    metrics: dict = {}
    metrics.update(tasks.score_gsm(by_task.get("gsm", [])))
    if "gsm_file" in by_task:
        metrics.update(tasks.score_gsm(by_task["gsm_file"], prefix="gsm_file"))
    metrics.update(tasks.score_narrative(by_task.get("narrative", [])))
    metrics.update(tasks.score_mixed(by_task.get("mixed", [])))
    details: dict = {"outputs": outputs, "timing": timing}
    details["per_item"] = {
        "correct": {  # per held-out problem: the strict '#### N' answer is right
            task: {o.job.key: gsm_match(o.text, o.job.meta["answer"]) for o in by_task[task]}
            for task in ("gsm", "gsm_file")
            if task in by_task
        }
    }
    domains = {"reasoning": by_task.get("gsm", []), "narrative": by_task.get("narrative", [])}
    domains["mixed"] = by_task.get("mixed", [])
    gear = tasks.gear(domains, engine.pathways)
    if system.gated:
        metrics["switches_per_100"] = gear["switches_per_100"]
        details["gear"] = gear
    else:
        metrics["switches_per_100"] = None  # a forced, base or single-LoRA model has no gate to switch

    clock = time.time()
    tf = score(
        engine.model,
        engine.tokenizer,
        x.scored_records,
        system.routing,
        gates=system.gated,
        mixed_default=target.mixed_default,
        max_seq_len=n.max_seq_len,
        pad_id=engine.pad_id,
    )
    timing["teacher_forced_s"] = round(time.time() - clock, 1)
    details["per_item"]["nll"] = {kind: tf[kind]["per_record"] for kind in ("gsm", "narrative", "mixed")}
    metrics["gsm_ppl"] = tf["gsm"]["ppl"]
    metrics["narrative_ppl"] = tf["narrative"]["ppl"]
    metrics["mixed_ppl"] = tf["mixed"]["ppl"]
    if system.gated:
        accs = [tf[k].get("gate_acc") for k in ("gsm", "narrative")]
        metrics["gate_acc_reasoning"], metrics["gate_acc_narrative"] = accs
        known = [a for a in accs if a is not None]
        metrics["gate_acc_domain"] = sum(known) / len(known) if known else None
        metrics["gate_acc_spans"] = tf["mixed"].get("gate_acc_spans")
        details["gear"]["teacher_forced"] = {k: {"usage": v.get("usage")} for k, v in tf.items()}
    else:
        for k in ("gate_acc_reasoning", "gate_acc_narrative", "gate_acc_domain", "gate_acc_spans"):
            metrics[k] = None

    if "consistency" in by_task and cfg.consistency.engine and system.gated:
        clock = time.time()
        c, mode = cfg.consistency, routing_name(system.routing, engine.pathways)
        rows = tasks.consistency_engine(engine, x.script, probes, c.context_tokens, c.max_new_tokens, mode)
        summary = cons.summarise(rows)
        metrics["consistency_engine_persona"] = summary["consistency_persona"]
        metrics["consistency_engine_world"] = summary["consistency_world"]
        details["consistency_engine"] = [
            {
                "position": p.position,
                "question": p.question,
                "answer": a,
                "correct": cons.correct_answer(a, p),
            }
            for p, a, _ in rows
        ]
        timing["consistency_engine_s"] = round(time.time() - clock, 1)
    if "consistency" in by_task:
        metrics.update(tasks.score_consistency(by_task["consistency"], probes))
        details["consistency"] = [
            {
                "probe": o.job.meta["probe"],
                "answer": o.text,
                "visible": o.job.meta["visible"],
                "correct": cons.correct_answer(o.text, probes[o.job.meta["probe"]]),
            }
            for o in by_task["consistency"]
        ]
    if "robustness" in by_task:
        details["robustness"] = tasks.score_robustness(by_task["robustness"], engine.pathways)
        metrics["robust_ok"] = details["robustness"]["robust_ok"]
    if cfg.judge.base_url:
        pairs = [(o.job.meta["prompt"], o.text) for o in by_task.get("narrative", [])]
        metrics.update(judge(pairs, cfg.judge))
    metrics["tokens_generated"] = sum(len(o.completion.token_ids) for o in outputs if o.completion)
    details["examples"] = {
        task: outs[0].text[:600] for task, outs in by_task.items() if outs and outs[0].completion is not None
    }
    return metrics, details


def _sample(system: str, o: Output) -> dict:
    c = o.completion
    return {
        "system": system,
        "task": o.job.task,
        "key": o.job.key,
        "text": o.text,
        "finish_reason": c.finish_reason if c else None,
        "tokens": len(c.token_ids) if c else 0,
        "error": o.error,
        "truncated_from": o.truncated_from,
        "meta": {k: v for k, v in o.job.meta.items() if isinstance(v, (str, int, float, bool, type(None)))},
    }


def _headline(m: dict) -> str:
    keys = ("gsm_strict", "gsm_flexible", "distinct_2", "self_bleu", "narrative_ppl", "switches_per_100")
    return ", ".join(f"{k}={m[k]:.3f}" for k in keys if isinstance(m.get(k), float))


def _dataset_hash(target: Target) -> dict[str, str]:
    if not target.dataset:
        return {}
    path = Path(target.dataset)
    if (path / "manifest.json").is_file():
        manifest = json.loads((path / "manifest.json").read_text())
        return {"dataset": str(manifest.get("config_hash", ""))[:16] or evdata.digest(manifest)}
    if path.is_file():
        import hashlib

        return {"dataset": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
    return {"dataset": "unavailable"}


def _prepare_out(out: Path) -> Path:
    """An empty folder, or one holding an earlier evaluation (overwritten); anything else is refused."""
    if out.exists() and any(out.iterdir()) and not (out / "results.json").is_file():
        raise FileExistsError(
            f"--out {out} exists, is not empty and holds no evaluation; choose a new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


# ---------------------------------------------------------------- comparing


def find_results(path: str | Path) -> Path:
    """results.json itself, an evaluation folder, or a run folder holding eval/results.json."""
    path = Path(path)
    for candidate in (path, path / "results.json", path / "eval" / "results.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no evaluation in {path} (looked for results.json and eval/results.json); "
        f"run `qwythos eval {path} --out {path / 'eval'}` first"
    )


def compare(paths: list[str | Path], out: str | Path | None = None) -> dict:
    """Several evaluations side by side: {'markdown', 'html', 'results': {label: results}}; writes
    compare.md and compare.html into ``out`` when given."""
    if len(paths) < 2:
        raise ValueError("--compare needs at least two runs or evaluation folders")
    named = {}
    names = [Path(p).resolve().name for p in paths]
    if len(set(names)) < len(names):  # e.g. runA/eval and runB/eval: name them by their parents too
        names = ["/".join(Path(p).resolve().parts[-2:]) for p in paths]
    for k, (p, name) in enumerate(zip(paths, names, strict=True)):
        res = json.loads(find_results(p).read_text())
        if res.get("format") != FORMAT:
            raise ValueError(f"{find_results(p)} is not a Qwythos evaluation (format {res.get('format')!r})")
        named[f"{chr(ord('A') + k)}: {name}"] = res
    md, page = compare_markdown(named), compare_html(named)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(md)
        (out / "compare.html").write_text(page)
    return {"markdown": md, "html": page, "results": named}
