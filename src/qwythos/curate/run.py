"""`qwythos curate`: config -> plan -> map stage (per unit, parallel) -> reduce stage -> dataset folder.

The reduce stage needs the whole set at once and runs in this process, on compact columns only: exact and
near dedup (optionally seeded with an existing core), the embedding classifier for unsure pathway labels,
difficulty, budgeted diverse selection and the curriculum. Record payloads stay in the map units' Parquet
files and are gathered only when the output shards are written. Work lives in ``<out>/.work``: a run that
was interrupted resumes there, skipping finished units and shards.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from .. import gym
from ..config import ConfigError, load_config, to_dict
from ..dataset import FORMAT, VERSION, read_dataset, records_table, shard_name
from ..gym import args_digest
from ..records import Record
from .config import CurateConfig, InputConfig, config_hash
from .decontam import EvalIndex
from .dedup import ExactDedup, NearDedup, SkeletonCap, signatures, text_hash
from .embed import Embedder
from .holdout import split_input
from .label import PathwayClassifier, from_logodds, prototypes
from .normalise import normalise
from .pipeline import REJECT_SCHEMA, TokenCounter, run_units, write_atomic
from .readers import plan_units, read_file, source_name
from .select import curriculum, difficulty, select

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[3]
MAP_SECTIONS = ("read", "normalise", "quality", "label", "dedup", "decontam", "tokenizer")


def preset_path(name: str) -> Path:
    path = REPO / "configs" / f"curate-{name}.yaml"
    if not path.is_file():
        found = sorted(p.stem.removeprefix("curate-") for p in (REPO / "configs").glob("curate-*.yaml"))
        raise ConfigError(f"--preset {name!r}: no {path}; available presets: {found}")
    return path


def resolve_config(
    inputs: list[Path] | None = None,
    decontaminate: list[Path] | None = None,
    config: Path | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
) -> CurateConfig:
    if config is not None and preset is not None:
        raise ConfigError("pass either --config or --preset, not both (copy the preset and edit it)")
    cfg = load_config(CurateConfig, preset_path(preset) if preset else config, overrides)
    if preset:  # a preset's relative paths are relative to the repository root
        for inp in cfg.inputs:
            for key in ("path", "fallback"):
                value = getattr(inp, key)
                if value and not Path(value).is_absolute():
                    setattr(inp, key, str(REPO / value))
    cfg.inputs += [InputConfig(path=str(p)) for p in inputs or []]
    cfg.decontam.evals += [str(p) for p in decontaminate or []]
    if not cfg.inputs:
        raise ConfigError(
            "no inputs: pass --input PATH (repeatable), --preset quickstart, or `inputs:` in --config"
        )
    return cfg


def curate(
    inputs: list[Path] | None = None,
    out: Path | str = "curated",
    decontaminate: list[Path] | None = None,
    config: Path | None = None,
    preset: str | None = None,
    executor: str = "local",
    overrides: list[str] | None = None,
) -> Path:
    """Curate the inputs into a dataset folder ``out`` (see qwythos.dataset); returns ``out``."""
    if executor not in ("local", "ray"):
        raise ValueError(f"--executor {executor!r} must be 'local' or 'ray'")
    cfg = resolve_config(inputs, decontaminate, config, preset, overrides)
    return run(cfg, Path(out), executor)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- plan


def _prepare_out(out: Path, chash: str) -> Path | None:
    """The work folder, or None when ``out`` already holds this exact finished run."""
    work = out / ".work"
    manifest = out / "manifest.json"
    if manifest.is_file():
        done = json.loads(manifest.read_text())
        if done.get("config_hash") == chash and not work.exists():
            changed = [f["path"] for f in done["inputs"] if _changed(f)]
            if not changed:
                return None
            raise FileExistsError(
                f"--out {out} holds a dataset built from earlier contents of {', '.join(changed)}; choose a "
                "new folder or delete it"
            )
        raise FileExistsError(f"--out {out} holds a finished dataset; choose a new folder or delete it")
    stamp = work / "run.json"
    if stamp.is_file():
        if json.loads(stamp.read_text())["config_hash"] != chash:
            raise FileExistsError(
                f"--out {out} holds an unfinished run with a different config; resume it with the same "
                "config, or delete the folder"
            )
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out {out} exists and is not empty; choose a new folder or delete it")
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"config_hash": chash}))
    return work


def _changed(recorded: dict) -> bool:
    """An input file of a finished run whose contents differ now (generated inputs, gone with the work
    folder, are fixed by the config)."""
    path = Path(recorded["path"])
    return path.is_file() and sha256_file(path) != recorded["sha256"]


def materialise(inp: InputConfig, work: Path) -> Path:
    """The file to read for an input: its path, its fallback, or a generated file."""
    if inp.generator:
        name = inp.generator.split(":", 1)[1]
        path = work / "inputs" / f"{name}-{args_digest(inp.args)}-{inp.size}-{inp.seed}.jsonl"
        if not path.is_file():
            try:
                items = gym.problems(name, inp.size, inp.seed, inp.args)
            except ValueError as e:
                raise ConfigError(f"inputs: generator {inp.generator} {e}") from None
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w") as f:
                for i, p in enumerate(items):
                    row = {
                        "id": i,
                        "question": p.question,
                        "answer": p.solution,
                        "meta": {"answer": p.answer, **p.meta},
                    }
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            os.replace(tmp, path)
        return path
    path = Path(inp.path)
    if not path.is_file() and inp.fallback:
        log.warning("input %s does not exist; using the fallback %s", path, inp.fallback)
        path = Path(inp.fallback)
    if not path.is_file():
        raise FileNotFoundError(f"input {path} does not exist")
    return path


# ---------------------------------------------------------------- run


def run(cfg: CurateConfig, out: Path, executor: str = "local") -> Path:
    t0 = time.time()
    timings: dict[str, float] = {}
    chash = config_hash(cfg)
    work = _prepare_out(out, chash)
    if work is None:
        log.info("%s already holds this finished run", out)
        return out
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    # plan: inputs, their hashes and units; the decontamination index
    files, units, heldout = [], [], {}
    for inp in cfg.inputs:
        path = materialise(inp, work)
        source = inp.source or (inp.generator.split(":", 1)[1] if inp.generator else source_name(path))
        read = path
        if inp.holdout:
            read, held, info = split_input(path, source, inp.holdout, inp.holdout_seed, work)
            heldout[source] = {"file": held, **info}
        file_units = plan_units(read, inp.schema, source, cfg.read.chunk_size)
        schema = file_units[0].schema if file_units else inp.schema
        files.append({"path": str(path), "sha256": sha256_file(path), "source": source, "schema": schema})
        units += file_units
    sources = [f["source"] for f in files]
    if len(set(sources)) != len(sources):
        raise ConfigError(f"inputs: source names must be unique, got {sources}; set `source` on the inputs")
    evals = [{"path": p, "sha256": sha256_file(Path(p))} for p in cfg.decontam.evals]
    map_hash = hashlib.sha256(
        json.dumps([config_hash(cfg, MAP_SECTIONS), files, evals], sort_keys=True).encode()
    ).hexdigest()[:16]
    map_dir = work / f"map-{map_hash}"
    map_dir.mkdir(parents=True, exist_ok=True)
    index_dir = None
    if evals:
        index_dir = map_dir / "decontam"
        if not (index_dir / "index.json").is_file():
            eval_records = []
            for e in evals:
                records, _ = read_file(e["path"])
                eval_records += records
            EvalIndex.build(eval_records, cfg.decontam.n).save(index_dir)
    timings["plan"] = time.time() - t0

    # map stage
    t = time.time()
    ctx = {"config": to_dict(cfg), "work": str(map_dir), "index": str(index_dir) if index_dir else None}
    unit_counts = run_units(units, ctx, executor, cfg.executor.workers, cfg.executor.ray_address)
    counts: Counter = Counter()
    for c in unit_counts:
        counts.update(c)
    timings["map"] = time.time() - t

    reduce = Reduce(cfg, [map_dir / f"{u.key}.parquet" for u in units], work)
    reduce.run(counts, timings)
    write_outputs(cfg, out, work, reduce, [map_dir / f"{u.key}.rejects.parquet" for u in units])
    timings["total"] = time.time() - t0
    manifest = build_manifest(cfg, chash, files, evals, counts, reduce, timings, executor)
    manifest["heldout"] = write_heldout(out, heldout)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    from .card import write_card

    write_card(out, manifest, reduce, plots=cfg.output.plots)
    if not cfg.output.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    log.info("curated %d records into %s in %.1fs", manifest["selected"], out, timings["total"])
    return out


def write_heldout(out: Path, heldout: dict[str, dict]) -> dict[str, dict]:
    """Copy each input's held-out rows to ``<out>/heldout/<source>.jsonl``; the manifest's entries."""
    entries = {}
    for source, info in heldout.items():
        rel = Path("heldout") / f"{source}.jsonl"
        (out / "heldout").mkdir(exist_ok=True)
        shutil.copyfile(info["file"], out / rel)
        rest = {k: v for k, v in info.items() if k != "file"}
        entries[source] = {"path": str(rel), "sha256": sha256_file(out / rel), **rest}
    return entries


# ---------------------------------------------------------------- reduce


FEATURES = ["id", "pathway", "pathway_confidence", "logodds", "needs_embed", "prompt_hash", "response_hash",
            "skeleton_hash", "sig", "tokens", "response_tokens", "steps", "quality"]  # fmt: skip


PAYLOAD = ["id", "source", "messages", "spans", "meta"]


class Reduce:
    """The global steps over all map outputs; holds one row per surviving record (in input order)."""

    def __init__(self, cfg: CurateConfig, unit_files: list[Path], work: Path):
        self.cfg, self.unit_files, self.work = cfg, unit_files, work
        tables = [pq.read_table(p, columns=FEATURES) for p in unit_files]
        self.unit_sizes = np.asarray([t.num_rows for t in tables], dtype=np.int64)
        self.unit_start = np.concatenate([[0], np.cumsum(self.unit_sizes)]).astype(np.int64)
        t = pa.concat_tables(tables) if tables else pa.table({k: [] for k in FEATURES})
        self.n = t.num_rows
        self.ids = t.column("id").to_pylist()
        self.pathway = np.asarray(t.column("pathway").to_pylist(), dtype=object)
        self.confidence = t.column("pathway_confidence").to_numpy().astype(float)
        self.logodds = t.column("logodds").to_numpy().astype(float)
        self.needs_embed = t.column("needs_embed").to_numpy(zero_copy_only=False).astype(bool)
        self.prompt_hash = t.column("prompt_hash").to_pylist()
        self.response_hash = t.column("response_hash").to_pylist()
        self.skeleton_hash = t.column("skeleton_hash").to_pylist()
        sig = t.column("sig").combine_chunks() if self.n else None
        p = cfg.dedup.near.num_perm
        self.sigs = (
            np.frombuffer(
                sig.buffers()[1], dtype=np.uint32, count=self.n * p, offset=sig.offset * 4 * p
            ).reshape(self.n, p)
            if self.n
            else np.zeros((0, p), np.uint32)
        )
        self.tokens = t.column("tokens").to_numpy().astype(np.int64)
        self.response_tokens = t.column("response_tokens").to_numpy().astype(np.int64)
        self.steps = t.column("steps").to_numpy().astype(float)
        self.quality = t.column("quality").to_numpy().astype(float)
        self.alive = np.ones(self.n, dtype=bool)
        self.rejected: list[tuple[int, str, str, str]] = []  # (row, step, reason, evidence)
        self.embed_logodds = np.full(self.n, np.nan)
        self.diff = np.zeros(self.n)
        self.loss = np.full(self.n, np.nan)

    def gather(self, rows: np.ndarray, columns: list[str]) -> pa.Table:
        """Payload columns of the given global rows, in that order (each unit file is read once)."""
        rows = np.asarray(rows, dtype=np.int64)
        unit_of = np.searchsorted(self.unit_start, rows, side="right") - 1
        parts = []
        for u in np.unique(unit_of):
            pick = np.flatnonzero(unit_of == u)
            t = pq.read_table(self.unit_files[u], columns=columns).take(
                pa.array(rows[pick] - self.unit_start[u])
            )
            parts.append(t.append_column("_pos", pa.array(pick, pa.int64())))
        if not parts:
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        t = pa.concat_tables(parts)
        return t.take(pc.sort_indices(t, [("_pos", "ascending")])).drop_columns(["_pos"])

    def column(self, name: str, rows: np.ndarray) -> list:
        return self.gather(rows, [name]).column(name).to_pylist()

    def drop(self, row: int, step: str, reason: str, evidence: str = "") -> None:
        self.alive[row] = False
        self.rejected.append((row, step, reason, evidence))

    def run(self, counts: Counter, timings: dict) -> None:
        for name in ("dedup_exact", "dedup_skeleton", "dedup_near", "label_embed", "difficulty", "select"):
            t = time.time()
            counts[f"{name}:in"] = int(self.alive.sum())
            getattr(self, name)(counts)
            counts[f"{name}:out"] = int(self.alive.sum())
            timings[name] = time.time() - t

    # steps 2-3: dedup (seeded with the core first)
    def core_records(self) -> list[Record]:
        records: list[Record] = []
        for path in self.cfg.dedup.core:
            p = Path(path)
            got = read_dataset(p) if p.is_dir() else read_file(p)[0]
            for r in got:
                normalise(r, self.cfg.normalise)
            records += got
        return records

    def dedup_exact(self, counts: Counter) -> None:
        d = self.cfg.dedup
        self.core = self.core_records()
        exact = ExactDedup(d.exact_prompt, d.exact_response)
        for r in self.core:
            exact.check(f"core:{r.id}", text_hash(r.prompt), text_hash(r.response))
        for i in range(self.n):
            hit = exact.check(self.ids[i], self.prompt_hash[i], self.response_hash[i])
            if hit is not None:
                reason = hit[0] + ("_core" if hit[1].startswith("core:") else "")
                self.drop(i, "dedup_exact", reason, hit[1])
                counts[f"dedup_exact:{reason}"] += 1

    def dedup_skeleton(self, counts: Counter) -> None:
        sk = self.cfg.dedup.skeleton
        if not sk.enabled:
            return
        cap = SkeletonCap(sk.max_per_skeleton)
        for i in np.flatnonzero(self.alive).tolist():
            if (first := cap.check(self.ids[i], self.skeleton_hash[i])) is not None:
                self.drop(i, "dedup_skeleton", "skeleton_cap", first)
                counts["dedup_skeleton:skeleton_cap"] += 1
        counts["dedup_skeleton:skeletons"] = len(cap.seen)

    def dedup_near(self, counts: Counter) -> None:
        near = self.cfg.dedup.near
        if not near.enabled:
            return
        index = NearDedup(near)
        if self.core:
            field = {"text": "text", "prompt": "prompt", "response": "response"}[near.field]
            index.add(
                signatures([getattr(r, field) for r in self.core], near), [f"core:{r.id}" for r in self.core]
            )
        rows = np.flatnonzero(self.alive)
        for i, hit in zip(
            rows.tolist(), index.add(self.sigs[rows], [self.ids[i] for i in rows]), strict=True
        ):
            if hit is not None:
                reason = "near_dup_core" if hit[0].startswith("core:") else "near_dup"
                self.drop(i, "dedup_near", reason, json.dumps({"match": hit[0], "jaccard": round(hit[1], 4)}))
                counts[f"dedup_near:{reason}"] += 1

    # step 5b: the embedding classifier for records the rules were unsure about
    def label_embed(self, counts: Counter) -> None:
        cfg = self.cfg.label
        unsure = np.flatnonzero(self.alive & self.needs_embed)
        counts["label_embed:unsure"] = len(unsure)
        if not len(unsure):
            return
        sure = self.alive & ~self.needs_embed & np.isin(self.pathway, ["reasoning", "narrative"])
        train_rows = []
        for p in ("reasoning", "narrative"):
            rows = np.flatnonzero(sure & (self.pathway == p))
            best = rows[np.lexsort((rows, -self.confidence[rows]))][: cfg.train_per_pathway]
            train_rows += best.tolist()
        protos = prototypes()
        texts = [t for p in ("reasoning", "narrative") for t in protos.get(p, [])]
        labels = [
            1.0 if p == "reasoning" else 0.0 for p in ("reasoning", "narrative") for _ in protos.get(p, [])
        ]
        texts += self.column("etext", np.asarray(train_rows, dtype=np.int64))
        labels += [1.0 if self.pathway[i] == "reasoning" else 0.0 for i in train_rows]
        embed = Embedder(cfg.embed, self.work / "embeddings")
        clf = PathwayClassifier().fit(embed(texts).astype(np.float64), np.asarray(labels))
        z = clf.logodds(embed(self.column("etext", unsure)).astype(np.float64))
        for i, zi in zip(unsure.tolist(), z.tolist(), strict=True):
            self.embed_logodds[i] = zi
            pathway, confidence = from_logodds(self.logodds[i] + zi)
            if pathway != self.pathway[i]:
                counts["label_embed:changed"] += 1
            self.pathway[i], self.confidence[i] = pathway, confidence

    # step 7: difficulty
    def difficulty(self, counts: Counter) -> None:
        rows = np.flatnonzero(self.alive)
        if self.cfg.difficulty.model and len(rows):
            self.loss[rows] = self.model_loss(rows)
        feats = [self.steps[rows], self.response_tokens[rows].astype(float), self.loss[rows]]
        self.diff[rows] = difficulty(self.pathway[rows], feats)

    def model_loss(self, rows: np.ndarray) -> np.ndarray:
        from ..model.formats import load_model
        from .select import score_with_model

        d = self.cfg.difficulty
        log.info("scoring %d records with %s for difficulty", len(rows), d.model)
        model, tokenizer, _ = load_model(d.model)
        messages = self.column("messages", rows)
        records = [Record(str(i), "", json.loads(m)) for i, m in zip(rows.tolist(), messages, strict=True)]
        scores = score_with_model(model, tokenizer, records, d.batch_size, d.max_tokens)
        return np.asarray([scores[r.id]["loss"] for r in records])

    # steps 8-9: selection and curriculum
    def select(self, counts: Counter) -> None:
        s = self.cfg.select
        rows = np.flatnonzero(self.alive)
        score = self.quality[rows] * np.power(np.maximum(self.diff[rows], 1e-3), s.difficulty_weight)
        embedder = Embedder(s.embed, self.work / "embeddings")
        etext = self.gather(rows, ["etext"]).column("etext") if s.tau < 1 else None

        def embed(idx: np.ndarray) -> np.ndarray:
            return embedder(etext.take(pa.array(idx)).to_pylist())

        result = select(score, self.pathway[rows], self.tokens[rows], s.budgets, embed, s.tau)
        for c, (j, cos) in sorted(result.similar.items()):
            evidence = json.dumps({"neighbour": self.ids[rows[j]], "cosine": round(cos, 4)})
            self.drop(int(rows[c]), "select", "too_similar", evidence)
            counts["select:too_similar"] += 1
        self.pool = rows[np.sort(result.pool)]
        kept = rows[result.kept]
        order, stage, self.stages = curriculum(
            self.diff[kept], [self.ids[i] for i in kept], self.cfg.curriculum
        )
        self.selected = kept[order]
        self.stage = stage[order]
        counts["select:kept"] = len(self.selected)
        counts["select:pool"] = len(self.pool)


# ---------------------------------------------------------------- outputs


def _output_table(
    reduce: Reduce, payload: pa.Table, rows: np.ndarray, stage: np.ndarray, first: int
) -> pa.Table:
    cols = {name: payload.column(name).to_pylist() for name in ("id", "source", "messages", "spans", "meta")}
    metas = []
    for m, i in zip(cols["meta"], rows.tolist(), strict=True):
        meta = json.loads(m)
        if not np.isnan(reduce.embed_logodds[i]):
            meta.setdefault("label", {})["embedding"] = round(float(reduce.embed_logodds[i]), 3)
        if not np.isnan(reduce.loss[i]):
            meta["model_loss"] = float(reduce.loss[i])
        metas.append(json.dumps(meta, ensure_ascii=False))
    cols["meta"] = metas
    cols["pathway"] = reduce.pathway[rows].tolist()
    cols["pathway_confidence"] = reduce.confidence[rows].tolist()
    cols["difficulty"] = reduce.diff[rows].round(6).tolist()
    cols["quality"] = reduce.quality[rows].round(6).tolist()
    cols["tokens"] = reduce.tokens[rows].tolist()
    cols["stage"] = stage.tolist()
    cols["order"] = list(range(first, first + len(rows)))
    return records_table(cols)


def _write_shards(folder: Path, work: Path, part: str, rows: np.ndarray, size: int, make) -> list[str]:
    """Write rows in shards of ``size``; a shard already written for the same rows (resume) is skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k, lo in enumerate(range(0, len(rows), size)):
        chunk = rows[lo : lo + size]
        name = shard_name(k)
        names.append(name)
        stamp = work / "shards" / f"{part}-{name}.json"
        key = hashlib.sha256(chunk.tobytes()).hexdigest()
        if stamp.is_file() and (folder / name).is_file() and json.loads(stamp.read_text())["rows"] == key:
            continue
        write_atomic(make(chunk, lo), folder / name)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"rows": key}))
    return names


def write_outputs(cfg: CurateConfig, out: Path, work: Path, reduce: Reduce, reject_files: list[Path]) -> None:
    size = cfg.output.shard_size
    reduce.shards = {}
    pool_stage = np.zeros(len(reduce.pool), dtype=np.int64)
    for part, rows, stage in (("data", reduce.selected, reduce.stage), ("pool", reduce.pool, pool_stage)):
        payload = reduce.gather(rows, PAYLOAD)

        def make(chunk: np.ndarray, lo: int, payload=payload, stage=stage) -> pa.Table:
            n = len(chunk)
            return _output_table(reduce, payload.slice(lo, n), chunk, stage[lo : lo + n], lo)

        reduce.shards[part] = _write_shards(out / part, work, part, rows, size, make)
    # rejects: the map units' own, then the reduce steps' with their records
    rows = np.asarray([r[0] for r in reduce.rejected], dtype=np.int64)
    payload = reduce.gather(rows, ["source", "messages"])
    records = payload.column("messages").to_pylist()
    late = pa.table(
        {"id": [reduce.ids[i] for i in rows], "source": payload.column("source").to_pylist(),
         "step": [r[1] for r in reduce.rejected], "reason": [r[2] for r in reduce.rejected],
         "evidence": [r[3] for r in reduce.rejected],
         "record": [json.dumps({"messages": json.loads(m)}, ensure_ascii=False) for m in records]},
        schema=REJECT_SCHEMA,
    )  # fmt: skip
    rejects = pa.concat_tables([pq.read_table(p) for p in reject_files] + [late])
    (out / "rejects").mkdir(exist_ok=True)
    names = []
    for k, lo in enumerate(range(0, max(1, rejects.num_rows), size)):
        names.append(shard_name(k))
        write_atomic(rejects.slice(lo, size), out / "rejects" / shard_name(k))
    reduce.shards["rejects"] = names
    reduce.reject_reasons = Counter(
        zip(rejects.column("step").to_pylist(), rejects.column("reason").to_pylist(), strict=True)
    )


def build_manifest(cfg, chash, files, evals, counts, reduce: Reduce, timings, executor) -> dict:
    steps: dict[str, dict] = {}
    for key, n in sorted(counts.items()):
        step, what = key.split(":", 1)
        steps.setdefault(step, {})[what] = n
    rejected: dict[str, dict[str, int]] = {}
    for (step, reason), n in sorted(reduce.reject_reasons.items()):
        rejected.setdefault(step, {})[reason] = n

    def totals(rows: np.ndarray) -> dict:
        out = {}
        for p in sorted(set(reduce.pathway[rows].tolist())):
            pick = rows[reduce.pathway[rows] == p]
            out[p] = {"samples": int(len(pick)), "tokens": int(reduce.tokens[pick].sum())}
        return out

    stages = reduce.stages
    for s in stages:
        pick = reduce.selected[reduce.stage == s["stage"]]
        s["pathways"] = {k: v["samples"] for k, v in totals(pick).items()}
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config_hash": chash,
        "config": to_dict(cfg),
        "inputs": files,
        "evals": evals,
        "executor": executor,
        "token_counter": TokenCounter(cfg.tokenizer).name,
        "steps": steps,
        "rejected": rejected,
        "selected": int(len(reduce.selected)),
        "pathways": totals(reduce.selected),
        "pool": totals(reduce.pool),
        "curriculum": {"order": cfg.curriculum.order, "stages": stages},
        "shards": reduce.shards,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
