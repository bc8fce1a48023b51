"""The per-record part of the pipeline (the map stage) and the executors that run it over units of work.

One unit: read -> normalise -> pathway rules -> quality filters -> decontamination -> features (dedup
hashes, MinHash signature, tokens, steps, quality). It writes its kept rows and its rejects as Parquet and
then a small JSON of counts; that JSON is the unit's "done" marker, so a resumed run skips the unit. The
same function runs in this process, in a local process pool, or as Ray tasks: output is identical.
"""

from __future__ import annotations

import json
import logging
import os
import string
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import from_dict
from ..records import Record, Reject, reject
from .config import CurateConfig
from .decontam import EvalIndex, contamination
from .dedup import signatures, skeleton_hash, text_hash
from .filters import first_failure, quality_score
from .label import embed_text, label_rules
from .ngrams import tokens_bytes
from .normalise import normalise
from .readers import Unit, read_unit
from .select import solution_steps

log = logging.getLogger(__name__)
_PUNCT = string.punctuation.encode()

REJECT_SCHEMA = pa.schema(
    [("id", pa.string()), ("source", pa.string()), ("step", pa.string()), ("reason", pa.string()),
     ("evidence", pa.string()), ("record", pa.string())]
)  # fmt: skip


def unit_schema(num_perm: int) -> pa.Schema:
    return pa.schema(
        [("id", pa.string()), ("source", pa.string()), ("messages", pa.string()), ("pathway", pa.string()),
         ("pathway_confidence", pa.float64()), ("spans", pa.string()), ("meta", pa.string()),
         ("logodds", pa.float64()), ("needs_embed", pa.bool_()), ("etext", pa.string()),
         ("prompt_hash", pa.uint64()), ("response_hash", pa.uint64()), ("skeleton_hash", pa.uint64()),
         ("sig", pa.binary(4 * num_perm)),
         ("tokens", pa.int64()), ("response_tokens", pa.int64()), ("steps", pa.int64()),
         ("quality", pa.float64())]
    )  # fmt: skip


class TokenCounter:
    """Token counts for budgets: a real tokenizer (tokenizer.json in a folder) or words + punctuation."""

    def __init__(self, folder: str = ""):
        self.tokenizer = None
        self.name = "approx: words and punctuation"
        if folder:
            from tokenizers import Tokenizer

            path = Path(folder) / "tokenizer.json"
            if not path.is_file():
                raise FileNotFoundError(
                    f"tokenizer: {path} does not exist; point `tokenizer` at an HF folder"
                )
            self.tokenizer, self.name = Tokenizer.from_file(str(path)), f"tokenizer: {folder}"

    def __call__(self, texts: list[str]) -> list[int]:
        if self.tokenizer is not None:
            return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        out = []
        for t in texts:
            b = tokens_bytes(t)  # punctuation became spaces: words, plus one token per punctuation mark
            out.append(
                len(b.split())
                + len(t.encode("utf-8", "surrogatepass"))
                - len(t.encode("utf-8", "surrogatepass").translate(None, _PUNCT))
            )
        return out


def write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def rejects_table(rejects: list[Reject]) -> pa.Table:
    cols = {f: [getattr(r, f) for r in rejects] for f in REJECT_SCHEMA.names}
    return pa.table(cols, schema=REJECT_SCHEMA)


def process_unit(unit_data: dict, ctx: dict) -> dict:
    """Run the map stage on one unit; returns (and stores) its counts. Skips a unit already done."""
    unit = Unit(**{**unit_data, "row_groups": tuple(unit_data.get("row_groups", ()))})
    folder = Path(ctx["work"])
    done = folder / f"{unit.key}.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = from_dict(CurateConfig, ctx["config"])
    counts: Counter = Counter()
    records, rejects = read_unit(unit, cfg.read.max_record_bytes)
    counts["read:in"] = len(records) + len(rejects)
    counts.update(f"read:{r.reason}" for r in rejects)
    kept: list[tuple[Record, bool]] = []
    for r in records:
        normalise(r, cfg.normalise)
        needs_embed = label_rules(r, cfg.label)
        verdict = first_failure(r, cfg.quality)
        if verdict is not None:
            rejects.append(reject(r, "quality", *verdict))
            counts[f"quality:{verdict[0]}"] += 1
        else:
            r.meta["_quality"] = quality_score(r)  # now, while repetition() still has this text cached
            kept.append((r, needs_embed))
    if ctx.get("index") and kept:
        index = EvalIndex.load(Path(ctx["index"]))
        verdicts = contamination(index, [r for r, _ in kept])
        clean = []
        for (r, e), v in zip(kept, verdicts, strict=True):
            if v is None:
                clean.append((r, e))
            else:
                rejects.append(reject(r, "decontam", *v))
                counts[f"decontam:{v[0]}"] += 1
        kept = clean
    counts["map:out"] = len(kept)
    pq_table = features(kept, cfg)
    write_atomic(pq_table, folder / f"{unit.key}.parquet")
    write_atomic(rejects_table(rejects), folder / f"{unit.key}.rejects.parquet")
    result = dict(counts)
    tmp = done.with_name(f".{done.name}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, done)
    return result


def features(kept: list[tuple[Record, bool]], cfg: CurateConfig) -> pa.Table:
    records = [r for r, _ in kept]
    quality = [r.meta.pop("_quality") for r in records]
    near, sk = cfg.dedup.near, cfg.dedup.skeleton
    field_text = {"text": lambda r: r.text, "prompt": lambda r: r.prompt, "response": lambda r: r.response}
    sigs = (
        signatures([field_text[near.field](r) for r in records], near)
        if records
        else np.zeros((0, near.num_perm), dtype=np.uint32)
    )
    count = TokenCounter(cfg.tokenizer)
    response_tokens = count([r.response for r in records])
    tokens = count([r.text for r in records])
    cols = {
        "id": [r.id for r in records],
        "source": [r.source for r in records],
        "messages": [json.dumps(r.messages, ensure_ascii=False) for r in records],
        "pathway": [r.pathway for r in records],
        "pathway_confidence": [float(r.pathway_confidence) for r in records],
        "spans": [json.dumps(r.spans) for r in records],
        "meta": [json.dumps(r.meta, ensure_ascii=False, default=str) for r in records],
        "logodds": [_logodds(r) for r in records],
        "needs_embed": [e for _, e in kept],
        "etext": [embed_text(r.prompt, r.response) for r in records],
        "prompt_hash": [text_hash(r.prompt) for r in records],
        "response_hash": [text_hash(r.response) for r in records],
        "skeleton_hash": [skeleton_hash(field_text[sk.field](r)) if sk.enabled else 0 for r in records],
        "sig": [row.tobytes() for row in sigs],
        "tokens": tokens,
        "response_tokens": response_tokens,
        "steps": [solution_steps(r.response) for r in records],
        "quality": quality,
    }
    return pa.table(cols, schema=unit_schema(near.num_perm))


def _logodds(r: Record) -> float:
    label = r.meta.get("label")
    return float(label["prior"] + label["rules"]) if isinstance(label, dict) else float("nan")


# ---------------------------------------------------------------- executors


def run_units(units: list[Unit], ctx: dict, executor: str, workers: int, address: str = "") -> list[dict]:
    """Counts of every unit (finished ones are read back), computed locally or on Ray."""
    from tqdm import tqdm

    folder = Path(ctx["work"])
    todo = [u for u in units if not (folder / f"{u.key}.json").is_file()]
    if len(todo) < len(units):
        log.info("resuming: %d of %d units already done, skipped", len(units) - len(todo), len(units))
    bar = tqdm(total=len(todo), desc="map", unit="unit", disable=not todo)
    if executor == "ray":
        _run_ray(todo, ctx, workers, address, bar)
    elif workers <= 1 or len(todo) <= 1:
        for u in todo:
            process_unit(u.to_dict(), ctx)
            bar.update()
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(workers, len(todo))) as pool:
            for _ in pool.imap_unordered(_process_star, [(u.to_dict(), ctx) for u in todo]):
                bar.update()
    bar.close()
    return [json.loads((folder / f"{u.key}.json").read_text()) for u in units]


def _process_star(args: tuple[dict, dict]) -> dict:
    return process_unit(*args)


def _run_ray(todo: list[Unit], ctx: dict, workers: int, address: str, bar) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'qwythos[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(process_unit)
        pending = [task.remote(u.to_dict(), ctx) for u in todo]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready)
            bar.update(len(ready))
    finally:
        if started:
            ray.shutdown()
