"""`qwythos train`: branch-train-mix stages, active-learning rounds, exact resume, metrics and plots.

    run/config.yaml        the resolved config          run/metrics.jsonl   one line per optimiser step
    run/checkpoints/       atomic, keep-last-N          run/rounds/         each round's selection
    run/model/             the final native model       run/plots/          loss and gate curves
    run/baselines/dense_lora/   the dense single-LoRA baseline, when asked (a run of its own)

Stages run in order; a stage's batches are a pure function of (config, data, stage), so resuming from a
checkpoint replays exactly: same weights, optimiser, scheduler, RNG and data position.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from ..config import to_dict
from ..dataset import load_records
from ..model.base import DEFAULT_BASE, load_tokenizer
from ..model.block import Routing
from ..model.config import PathwayConfig
from ..model.formats import (
    build_model,
    load_native,
    load_pathway_weights,
    native_base_folder,
    pathway_weights,
    read_native_config,
    save_model,
)
from ..model.losses import LossConfig, total_loss
from ..model.transformer import PathwayLM
from ..records import UNLABELLED, Record
from . import distributed
from .checkpoint import latest_checkpoint, load_checkpoint, load_optimizer_state, restore_rng, save_checkpoint
from .config import StageConfig, TrainConfig
from .data import Batch, Example, collate, plan_steps, render_all

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- model and data set-up


def make_model(cfg: TrainConfig) -> tuple[PathwayLM, Path, str]:
    """(model, base folder, base source) — fresh on the base, or from init_from / pathway_sources."""
    m = cfg.model
    if m.init_from:
        folder = Path(m.init_from)
        config, base = read_native_config(folder)
        if config.pathways.names != m.pathways:
            raise ValueError(
                f"model.init_from {folder} has pathways {config.pathways.names}, "
                f"but model.pathways is {m.pathways}"
            )
        return load_native(folder), native_base_folder(folder, base), base["source"]
    pw = PathwayConfig(
        names=list(m.pathways),
        rank=m.rank,
        alpha=m.alpha,
        dropout=m.dropout,
        router_init="random" if m.router_init == "random" else "zero",
    )
    model, folder = build_model(m.base, pw, seed=cfg.runtime.seed)
    for name, src in m.pathway_sources.items():  # combine branches trained in separate runs
        if name not in m.pathways:
            raise ValueError(f"model.pathway_sources names {name!r}, which is not in model.pathways")
        state = {k: v for k, v in pathway_weights(load_native(src)).items() if f".{name}." in k}
        if not state:
            raise ValueError(f"model.pathway_sources: {src} has no pathway {name!r}")
        load_pathway_weights(model, state, strict=False)
    return model, folder, str(m.base or DEFAULT_BASE)


def init_router(model: PathwayLM, tokenizer, records: list[Record], per_pathway: int = 16) -> None:
    from ..model.router_init import init_router_from_prompts

    prompts = {
        p: [r.prompt or r.text for r in records if r.pathway == p][:per_pathway] for p in model.pathway_names
    }
    init_router_from_prompts(model, tokenizer, prompts)


def stage_examples(stage: StageConfig, examples: list[Example]) -> list[Example]:
    if stage.kind == "branch":
        return [e for e in examples if e.pathway == stage.pathway]
    return examples


def check_inputs(cfg: TrainConfig, examples: list[Example], pool: list[Record]) -> None:
    """Every error that can be found before compute is spent."""
    if not examples:
        raise ValueError(f"data.dataset {cfg.data.dataset}: no trainable records")
    labelled = {e.pathway for e in examples}
    if labelled <= {UNLABELLED, ""}:
        raise ValueError(
            f"data.dataset {cfg.data.dataset} has no pathway labels; curate it with qwythos curate"
        )
    for s in cfg.stages:
        if not stage_examples(s, examples):
            raise ValueError(
                f"stage {s.name!r}: its slice is empty (no {s.pathway or 'any'} records in "
                f"{cfg.data.dataset}); drop the stage or add data"
            )
    if cfg.rounds.count and not pool:
        raise ValueError(
            f"rounds.count={cfg.rounds.count} but {cfg.data.dataset} has no pool to select from "
            f"(curate with budgets below the data size, or set rounds.count=0)"
        )


# ---------------------------------------------------------------- one stage


def set_trainable(model: PathwayLM, stage: StageConfig) -> list[dict]:
    """requires_grad for this stage, and the optimiser's parameter groups."""
    lora = [p for n, p in model.named_parameters() if ".lora_" in n]
    router = [p for n, p in model.named_parameters() if ".router." in n]
    for p in lora + router:
        p.requires_grad_(False)
    groups = []
    if stage.kind in ("branch", "joint") or stage.lora_lr > 0:
        groups.append({"params": lora, "lr": stage.lr if stage.kind != "mix" else stage.lora_lr})
    if stage.kind in ("mix", "joint"):
        groups.append({"params": router, "lr": stage.router_lr})
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    return groups


def lr_lambda(total: int, warmup_ratio: float, min_ratio: float):
    warm = max(1, int(total * warmup_ratio))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def stage_routing(stage: StageConfig, model: PathwayLM, step: int, total: int) -> Routing:
    if stage.kind == "branch":
        return Routing("force", force=model.pathway_names.index(stage.pathway))
    temp = 1.0 + (stage.anneal_to - 1.0) * (step / max(1, total - 1))  # linear anneal toward top-1
    return Routing("soft", temperature=temp)


def usage_by_domain(router_logits: torch.Tensor, gate_labels: torch.Tensor, names: list[str]) -> dict:
    """Mean gate per pathway over the tokens labelled with each pathway: {domain: {pathway: weight}}."""
    gates = torch.softmax(router_logits.float(), -1).mean(2)  # (B, T, P)
    out = {}
    for i, domain in enumerate(names):
        mask = gate_labels == i
        if mask.any():
            out[domain] = {p: round(float(gates[mask][:, j].mean()), 4) for j, p in enumerate(names)}
    return out


class Runner:
    """Trains one model through a list of stages with checkpoints; used for the run and its baseline."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, model: PathwayLM, tokenizer, d: distributed.Dist):
        self.cfg, self.run_dir, self.model, self.tokenizer, self.d = cfg, run_dir, model, tokenizer, d
        self.metrics_path = run_dir / "metrics.jsonl"
        self.global_step, self.tokens_seen = 0, 0
        self.writer = None
        if cfg.runtime.tensorboard and d.main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError(
                    "runtime.tensorboard needs the tensorboard package: pip install tensorboard"
                ) from None
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict) -> None:
        if not self.d.main:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "global_step"):
                    self.writer.add_scalar(f"{row['stage']}/{k}", v, row["global_step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def run_stage(self, index: int, stage: StageConfig, examples: list[Example], resume: dict | None) -> None:
        cfg, d, model = self.cfg, self.d, self.model
        o = cfg.optim
        rows_per_step = o.batch_size * o.grad_accum * d.world
        steps = plan_steps(examples, cfg.data, stage.epochs, rows_per_step, seed=cfg.runtime.seed + index)
        steps = self._cap(steps, stage)
        total = len(steps)
        groups = set_trainable(model, stage)
        trainable = [p for g in groups for p in g["params"]]
        opt = torch.optim.AdamW(groups, weight_decay=o.weight_decay, betas=tuple(o.betas))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, o.warmup_ratio, o.min_lr_ratio))
        ddp = distributed.wrap(model, d, cfg.runtime.fsdp)
        frozen = self._frozen_slices(stage)
        start = 0
        if resume is not None:
            ckpt, state = resume["path"], resume["state"]
            _, opt_tensors, _ = load_checkpoint(ckpt)
            load_optimizer_state(opt, opt_tensors, state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start = state["position"]["stage_step"]
        bar = tqdm(
            total=total,
            initial=start,
            desc=f"{stage.name}",
            disable=not d.main,
            unit="step",
            dynamic_ncols=True,
        )
        model.train()
        for s in range(start, total):
            t0 = time.perf_counter()
            mine = steps[s][d.rank :: d.world]  # this process's share of the global batch
            micro = [
                collate(mine[i : i + o.batch_size], self.pad_id, cfg.data.pack)
                for i in range(0, len(mine), o.batch_size)
            ]
            n_sup = d.all_sum(float(sum(b.supervised for b in micro)))
            routing = stage_routing(stage, model, s, total)
            parts_sum: dict[str, float] = {}
            logged_logits, logged_labels = [], []
            for b in micro:
                b = _to(b, d.device)
                with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=d.device.type == "cuda"):
                    out = ddp(
                        b.input_ids,
                        position_ids=b.position_ids,
                        seq_ids=b.seq_ids,
                        key_valid=None if b.seq_ids is not None else b.valid,
                        routing=routing,
                        return_router_logits=True,
                    )
                loss_cfg = cfg.loss if stage.kind != "branch" else LossConfig(0, 0, 0, 0)
                # LM loss: global token mean over micro-batches and processes; gate terms: micro-batch means
                loss, parts = total_loss(
                    loss_cfg,
                    out.logits,
                    out.router_logits,
                    b.labels,
                    b.gate_labels,
                    b.valid,
                    routing.temperature,
                    lm_normaliser=n_sup / d.world,
                    aux_scale=1.0 / len(micro),
                )
                loss.backward()
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v
                logged_logits.append(out.router_logits.detach())
                logged_labels.append(b.gate_labels)
            parts_sum = {k: d.all_sum(v) / d.world for k, v in parts_sum.items()}  # global means for the log
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, o.max_grad_norm))
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            self._restore(frozen)
            step_tokens = int(d.all_sum(float(sum(b.tokens for b in micro))))
            self.tokens_seen += step_tokens
            self.global_step += 1
            dt = time.perf_counter() - t0
            row = self._metrics(
                stage,
                s,
                total,
                parts_sum,
                grad_norm,
                opt,
                step_tokens,
                dt,
                routing,
                logged_logits,
                logged_labels,
            )
            self.log(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tok_s']:.0f}")
            bar.update(1)
            last = s + 1 == total
            if d.main and ((s + 1) % cfg.checkpoint.every == 0 or last):
                self.checkpoint(index, s + 1, opt, sched, done=last)
            d.barrier()
        bar.close()
        model.eval()

    def _cap(self, steps: list, stage: StageConfig) -> list:
        if stage.max_steps:
            steps = steps[: stage.max_steps]
        if stage.max_tokens:
            kept, seen = [], 0
            for rows in steps:
                if seen >= stage.max_tokens:
                    break
                kept.append(rows)
                seen += sum(len(e.input_ids) for row in rows for e in row)
            steps = kept
        return steps

    def _frozen_slices(self, stage: StageConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """In a branch stage, the other pathways' LoRA slices; restored after every optimiser step so that
        weight decay or stale moments can never touch them."""
        if stage.kind != "branch":
            return []
        p = self.model.pathway_names.index(stage.pathway)
        out = []
        for layer in self.model.layers:
            paths = layer.mlp.pathways
            for t in (paths.lora_A_gate_up, paths.lora_B_gate_up, paths.lora_A_down, paths.lora_B_down):
                others = [q for q in range(t.shape[0]) if q != p]
                out.append((t, torch.tensor(others), t.detach()[others].clone()))
        return out

    @staticmethod
    def _restore(frozen) -> None:
        with torch.no_grad():
            for t, idx, saved in frozen:
                t[idx] = saved

    def _metrics(self, stage, s, total, parts, grad_norm, opt, tokens, dt, routing, logits, labels) -> dict:
        from ..model.losses import gate_accuracy

        names = self.model.pathway_names
        row = {
            "stage": stage.name,
            "step": s + 1,
            "stage_steps": total,
            "global_step": self.global_step,
            "loss": sum(parts.values()),
            **{k: v for k, v in parts.items()},
            "grad_norm": grad_norm,
            "lr": opt.param_groups[0]["lr"],
            "tokens": self.tokens_seen,
            "tok_s": tokens / dt,
            "gate_temperature": routing.temperature,
            "peak_mem_mb": peak_memory_mb(self.d.device),
        }
        if len(names) > 1:
            lg = torch.cat([x.reshape(-1, *x.shape[2:]) for x in logits])[:, None]  # (N, 1, L, P)
            gl = torch.cat([y.reshape(-1) for y in labels])[:, None]
            acc = gate_accuracy(lg, gl)
            if acc is not None:
                row["gate_acc"] = acc
            row["usage"] = usage_by_domain(lg, gl, names)
        return row

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def checkpoint(self, stage_index: int, stage_step: int, opt, sched, done: bool) -> None:
        position = {
            "stage": stage_index,
            "stage_step": stage_step,
            "stage_done": done,
            "global_step": self.global_step,
            "tokens_seen": self.tokens_seen,
        }
        save_checkpoint(
            self.run_dir,
            self.global_step,
            pathway_weights(self.model),
            opt,
            sched,
            position,
            self.cfg.checkpoint.keep_last,
        )


def _to(b: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return b
    return Batch(*(None if t is None else t.to(device) for t in dataclasses.astuple(b)))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- the run


# An active-learning round's picker: (model, tokenizer, pool left, budgets, ids used) -> (records, scores).
# Curation owns it (qwythos.curate.select.next_round); the caller passes it in, so training never imports it.
Selector = Callable[[PathwayLM, object, list[Record], dict, set[str]], tuple[list[Record], dict]]


def train(cfg: TrainConfig, out: Path, resume: bool = False, selector: Selector | None = None) -> Path:
    """Run every stage (then active-learning rounds, picked by ``selector``, then the optional dense
    baseline) into ``out``."""
    out = Path(out)
    d = distributed.setup(cfg.runtime.device)
    if cfg.runtime.num_threads:
        torch.set_num_threads(cfg.runtime.num_threads)
    if (out / "model" / "qwythos.json").is_file():
        raise FileExistsError(f"{out} holds a finished run (model/ exists); choose a new --out")
    ckpt = latest_checkpoint(out) if resume else None
    if resume and not (out / "config.yaml").is_file():
        raise FileNotFoundError(
            f"--resume: {out} is not a run folder (no config.yaml); start it without --resume"
        )
    if not resume and out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"--out {out} exists and is not empty; pass --resume to continue it, or a new folder"
        )

    torch.manual_seed(cfg.runtime.seed)
    model, base_folder, base_source = make_model(cfg)
    model.to(d.device)
    model.gradient_checkpointing = cfg.runtime.gradient_checkpointing
    tokenizer = load_tokenizer(Path(cfg.model.init_from) if cfg.model.init_from else base_folder)
    records = load_records(cfg.data.dataset, cfg.data.limit)
    pool = _pool(cfg) if cfg.rounds.count else []
    examples, skipped = render_all(records, tokenizer, model.pathway_names, cfg.data)
    check_inputs(cfg, examples, pool)
    if cfg.rounds.count and selector is None:
        raise ValueError(
            "rounds.count > 0 needs a selector: pass selector=qwythos.curate.select.next_round (the CLI does)"
        )
    if d.main and not resume:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        (out / "data.json").write_text(
            json.dumps(
                {
                    "records": len(records),
                    "examples": len(examples),
                    "skipped": skipped,
                    "pool": len(pool),
                    "by_pathway": _count(e.pathway for e in examples),
                },
                indent=2,
            )
        )
    fresh = not (cfg.model.init_from or cfg.model.pathway_sources)
    if fresh and cfg.model.router_init == "prompts" and len(model.pathway_names) > 1 and ckpt is None:
        init_router(model, tokenizer, records)

    runner = Runner(cfg, out, model, tokenizer, d)
    start, stage_state = 0, None
    if ckpt is not None:
        weights, _, state = load_checkpoint(ckpt)
        load_pathway_weights(model, {k: v.to(d.device) for k, v in weights.items()})
        pos = state["position"]
        runner.global_step, runner.tokens_seen = pos["global_step"], pos["tokens_seen"]
        start = pos["stage"] + (1 if pos["stage_done"] else 0)
        stage_state = None if pos["stage_done"] else {"path": ckpt, "state": state}
        restore_rng(ckpt, state)  # mid-stage or at a stage's end: the next step draws what it would have
        if d.main:
            _truncate_metrics(runner.metrics_path, pos["global_step"])
        log.info("resuming %s from %s (stage %d, step %d)", out, ckpt.name, pos["stage"], pos["stage_step"])

    for i, stage in enumerate(cfg.stages):
        if i >= start:
            runner.run_stage(i, stage, stage_examples(stage, examples), stage_state if i == start else None)

    used = {r.id for r in records}
    for k in range(1, cfg.rounds.count + 1):
        index = len(cfg.stages) + k - 1
        picked = _round_selection(cfg, out, k, model, tokenizer, pool, used, d, selector)
        used |= {r.id for r in picked}
        if index >= start and picked:
            chosen, _ = render_all(picked, tokenizer, model.pathway_names, cfg.data)
            stage = dataclasses.replace(cfg.rounds.stage, name=f"round-{k}")
            runner.run_stage(index, stage, chosen, stage_state if index == start else None)

    runner.close()
    if d.main:
        save_model(model.cpu(), out / "model", base_source, base_folder)
        model.to(d.device)
        from .plots import plot_metrics

        plot_metrics(runner.metrics_path, out / "plots")
    d.barrier()
    if cfg.baseline.dense_lora:
        _train_dense_baseline(cfg, out, runner.tokens_seen, resume)
    distributed.teardown()
    return out


def _pool(cfg: TrainConfig) -> list[Record]:
    path = Path(cfg.data.dataset)
    if not path.is_dir():
        return []
    from ..dataset import read_pool

    return read_pool(path)


def _round_selection(cfg, out, k, model, tokenizer, pool, used, d, selector: Selector) -> list[Record]:
    """Round k's records: recorded in rounds/round-k.json, so a resumed run selects exactly the same."""
    path = out / "rounds" / f"round-{k}.json"
    by_id = {r.id: r for r in pool}
    if path.is_file():
        return [by_id[i] for i in json.loads(path.read_text())["ids"]]
    remaining = [r for r in pool if r.id not in used]
    model.eval()
    picked, scores = selector(
        model, tokenizer, remaining, {p: dict(b) for p, b in cfg.rounds.budgets.items()}, used
    )
    picked = picked[: cfg.rounds.per_round]
    if d.main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "round": k,
                    "ids": [r.id for r in picked],
                    "pool_remaining": len(remaining),
                    "scores": {r.id: scores[r.id] for r in picked},
                    "by_pathway": _count(r.pathway for r in picked),
                },
                indent=2,
            )
        )
        tmp.replace(path)
    d.barrier()
    return picked


def _train_dense_baseline(cfg: TrainConfig, out: Path, tokens: int, resume: bool) -> None:
    """A single-LoRA model (one pathway, no gate) on the same mixed data and token budget."""
    sub = dataclasses.replace(
        cfg,
        model=dataclasses.replace(
            cfg.model, pathways=["dense"], router_init="zero", pathway_sources={}, init_from=None
        ),
        data=dataclasses.replace(cfg.data, mixed_default="dense"),
        stages=[
            StageConfig("dense", "joint", epochs=1000.0, max_tokens=tokens, lr=max(s.lr for s in cfg.stages))
        ],
        rounds=dataclasses.replace(cfg.rounds, count=0),
        baseline=dataclasses.replace(cfg.baseline, dense_lora=False),
    )
    target = out / "baselines" / "dense_lora"
    if (target / "model" / "qwythos.json").is_file():
        return
    train(sub, target, resume=resume and (target / "config.yaml").is_file())


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def _truncate_metrics(path: Path, upto_step: int) -> None:
    """Drop metric lines after the checkpoint: the resumed run writes them again."""
    if path.is_file():
        keep = [
            line for line in path.read_text().splitlines() if json.loads(line)["global_step"] <= upto_step
        ]
        path.write_text("".join(line + "\n" for line in keep))
