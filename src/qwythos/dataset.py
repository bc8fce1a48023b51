"""The curated dataset folder: the contract between curation (writer) and training and evaluation (readers).

    data/shard-00000.parquet ...   selected records in curriculum order (column `order`)
    pool/shard-00000.parquet ...   good records over budget: the active-learning pool
    rejects/shard-00000.parquet    every dropped record or raw row: step, reason, evidence, the record
    manifest.json                  config + hash, input hashes, counts per step and reason, totals, curriculum
    card.md, plots/*.png           the data card
Shards are written atomically; a shard whose recorded ids match the plan is not rewritten on resume.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .records import UNLABELLED, Record

FORMAT, VERSION = "qwythos-curated-dataset", 1

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SPANS = pa.list_(
    pa.struct([("message", pa.int64()), ("start", pa.int64()), ("end", pa.int64()), ("pathway", pa.string())])
)
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("messages", MESSAGES),
        ("pathway", pa.string()),
        ("pathway_confidence", pa.float64()),
        ("spans", SPANS),
        ("meta", pa.string()),
        ("difficulty", pa.float64()),
        ("quality", pa.float64()),
        ("tokens", pa.int64()),
        ("stage", pa.int64()),
        ("order", pa.int64()),
    ]
)


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.parquet"


def records_table(rows: dict[str, list]) -> pa.Table:
    """The output schema from plain columns (messages/spans given as JSON strings or lists)."""
    cols = dict(rows)
    for key in ("messages", "spans"):
        cols[key] = [json.loads(v) if isinstance(v, str) else v for v in cols[key]]
    return pa.table(cols, schema=SCHEMA)


def table_records(table: pa.Table) -> list[Record]:
    out = []
    for row in table.to_pylist():
        meta = json.loads(row["meta"]) if row["meta"] else {}
        for key in ("difficulty", "quality", "tokens", "stage", "order"):
            meta[key] = row[key]
        out.append(
            Record(
                id=row["id"],
                source=row["source"],
                messages=[dict(m) for m in row["messages"]],
                pathway=row["pathway"],
                pathway_confidence=row["pathway_confidence"],
                spans=[dict(s) for s in row["spans"]],
                meta=meta,
            )
        )
    return out


def read_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise ValueError(
            f"{folder} is not a curated dataset (no manifest.json); build one with `qwythos curate`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


def _read(folder: Path, part: str) -> list[Record]:
    manifest = read_manifest(folder)
    records: list[Record] = []
    for name in manifest["shards"][part]:
        path = folder / part / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is listed in {folder}/manifest.json but missing; re-run qwythos curate"
            )
        table = pq.read_table(path)
        missing = {"pathway", "spans", "pathway_confidence"} - set(table.column_names)
        if missing:
            raise ValueError(
                f"{path} lacks pathway labels ({sorted(missing)}); re-curate it with qwythos curate"
            )
        records += table_records(table)
    unlabelled = [r.id for r in records if r.pathway == UNLABELLED or not r.pathway]
    if unlabelled:
        raise ValueError(
            f"{folder}: {len(unlabelled)} records without a pathway label (e.g. {unlabelled[0]}); "
            "re-curate with qwythos curate"
        )
    return records


def read_dataset(folder: str | Path) -> list[Record]:
    """The selected records of a curated dataset folder, in curriculum order.

    Each record's meta also holds difficulty, quality, tokens, stage and order."""
    return _read(Path(folder), "data")


def read_pool(folder: str | Path) -> list[Record]:
    """The over-budget records of a curated folder: the pool that active-learning rounds draw from."""
    return _read(Path(folder), "pool")


def write_dataset(folder: str | Path, records: list[Record], info: dict, shard_size: int = 10_000) -> Path:
    """A small curated folder from records already in order (an active-learning round): data shards and a
    manifest; read_dataset reads it back."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"--out {folder} exists and is not empty; choose a new folder or delete it")
    (folder / "data").mkdir(parents=True)
    names = []
    for k, lo in enumerate(range(0, max(1, len(records)), shard_size)):
        chunk = records[lo : lo + shard_size]
        cols: dict[str, list] = {name: [] for name in SCHEMA.names}
        for i, r in enumerate(chunk, start=lo):
            meta = dict(r.meta)
            for key, default in (("difficulty", 0.0), ("quality", 1.0), ("tokens", 0), ("stage", 0)):
                cols[key].append(meta.pop(key, default))
            meta.pop("order", None)
            cols["order"].append(i)
            for key in ("id", "source", "messages", "pathway", "pathway_confidence", "spans"):
                cols[key].append(getattr(r, key))
            cols["meta"].append(json.dumps(meta, ensure_ascii=False, default=str))
        pq.write_table(records_table(cols), folder / "data" / shard_name(k))
        names.append(shard_name(k))
    totals: dict[str, dict[str, int]] = {}
    for r in records:
        t = totals.setdefault(r.pathway, {"samples": 0, "tokens": 0})
        t["samples"] += 1
        t["tokens"] += int(r.meta.get("tokens", 0) or 0)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "selected": len(records),
        "pathways": totals,
        "shards": {"data": names, "pool": [], "rejects": []},
        **info,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


def read_records_jsonl(path: str | Path, labelled: bool = False) -> list[Record]:
    """Chat records from a JSONL[.gz] file (``messages`` required; ``labelled``: a ``pathway`` too)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            d = json.loads(line)
            if "messages" not in d:
                raise ValueError(f"{path}:{n}: a record needs 'messages' (OpenAI chat form)")
            if labelled and "pathway" not in d:
                raise ValueError(f"{path}:{n}: record without a pathway label; curate it first")
            d.setdefault("id", f"{path.name}-{n}")
            d.setdefault("source", path.name)
            out.append(Record(**{k: d[k] for k in Record.__dataclass_fields__ if k in d}))
    return out


def load_records(path: str | Path, limit: int = 0) -> list[Record]:
    """A training set: a curated dataset folder (``qwythos curate``) or a JSONL of labelled records, in
    curriculum order."""
    path = Path(path)
    if not str(path):
        raise ValueError("data.dataset is empty; point it at a curated folder (qwythos curate --out DIR)")
    if path.is_dir():
        records = read_dataset(path)
    elif path.is_file() and path.name.endswith((".jsonl", ".json", ".jsonl.gz")):
        records = read_records_jsonl(path, labelled=True)
    else:
        raise FileNotFoundError(
            f"data.dataset {path} does not exist (a curated folder or a .jsonl of records)"
        )
    return records[:limit] if limit else records
