"""Readers: JSONL (optionally gzipped, or one JSON array), Parquet and CSV into Records, in units of work.

A file is cut into units of ``read.chunk_size`` rows (JSONL by byte offsets, Parquet by row groups) so
workers read only their part and a resumed run skips finished units. The schema (Dolly, UltraChat, Alpaca,
ShareGPT, OpenAI chat, GSM8K, plain text) is detected from the first rows unless the input names it. A row
that cannot become a valid Record (bad JSON or UTF-8, missing or mistyped fields, empty turns, oversize)
becomes a Reject with its reason: the run never crashes on data.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..records import Record, Reject, check_spans

log = logging.getLogger(__name__)

ROLE_NAMES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
}


class BadRecord(Exception):
    """A row that cannot become a Record: ``reason`` (a short key for counts) and ``evidence``."""

    def __init__(self, reason: str, evidence: str = ""):
        super().__init__(f"{reason}: {evidence}")
        self.reason, self.evidence = reason, evidence


# ---------------------------------------------------------------- schemas: detection and conversion


def detect_schema(row: dict) -> str | None:
    keys = set(row)
    if "conversations" in keys:
        return "sharegpt"
    if "messages" in keys:
        return "ultrachat" if "prompt_id" in keys else "openai"
    if {"instruction", "response"} <= keys:
        return "dolly"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"question", "answer"} <= keys:
        return "gsm8k"
    if "text" in keys:
        return "text"
    return None


def _str(row: dict, key: str, required: bool = True) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise BadRecord("missing_field", key)
        return ""
    if not isinstance(value, str):
        raise BadRecord("bad_type", f"{key} is {type(value).__name__}, expected a string")
    return value


def _list(row: dict, key: str) -> list:
    value = row.get(key)
    if value is None:
        raise BadRecord("missing_field", key)
    if isinstance(value, str) and value.lstrip().startswith("["):  # a JSON list inside a CSV cell
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise BadRecord("bad_json", f"{key}: {e}") from None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list):
        raise BadRecord("bad_type", f"{key} is {type(value).__name__}, expected a list")
    return value


def _content(value: Any, where: str) -> str:
    if isinstance(value, list):  # OpenAI content parts
        parts = [p.get("text", "") for p in value if isinstance(p, dict) and p.get("type") == "text"]
        if len(parts) != len(value):
            raise BadRecord("bad_type", f"{where}: only text content parts are supported")
        return "".join(parts)
    if not isinstance(value, str):
        raise BadRecord("bad_type", f"{where} is {type(value).__name__}, expected a string")
    return value


def _turns(items: list, role_key: str, content_key: str) -> list[dict[str, str]]:
    messages = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise BadRecord("bad_type", f"turn {i} is {type(m).__name__}, expected an object")
        if role_key not in m or content_key not in m:
            raise BadRecord("missing_field", f"turn {i} needs {role_key!r} and {content_key!r}")
        role = ROLE_NAMES.get(str(m[role_key]).strip().lower())
        if role is None:
            raise BadRecord("bad_role", f"turn {i}: role {m[role_key]!r}")
        messages.append({"role": role, "content": _content(m[content_key], f"turn {i} {content_key}")})
    return messages


def _join(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p and p.strip())


def convert(row: dict, schema: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """(messages, meta) of one raw row in ``schema``; raises BadRecord."""
    meta: dict[str, Any] = {}
    if schema == "dolly":
        meta["category"] = _str(row, "category", required=False)
        messages = [
            {"role": "user", "content": _join(_str(row, "instruction"), _str(row, "context", False))},
            {"role": "assistant", "content": _str(row, "response")},
        ]
    elif schema == "alpaca":
        messages = [
            {"role": "user", "content": _join(_str(row, "instruction"), _str(row, "input", False))},
            {"role": "assistant", "content": _str(row, "output")},
        ]
    elif schema == "gsm8k":
        messages = [
            {"role": "user", "content": _str(row, "question")},
            {"role": "assistant", "content": _str(row, "answer")},
        ]
    elif schema == "text":
        messages = [{"role": "assistant", "content": _str(row, "text")}]
    elif schema == "sharegpt":
        messages = _turns(_list(row, "conversations"), "from", "value")
    elif schema in ("openai", "ultrachat"):
        messages = _turns(_list(row, "messages"), "role", "content")
        if schema == "ultrachat" and row.get("prompt") is not None:
            meta["prompt"] = _str(row, "prompt")
    else:
        raise BadRecord("unknown_schema", f"keys {sorted(row)}")
    if not messages:
        raise BadRecord("empty_conversation")
    for i, m in enumerate(messages):
        if not m["content"].strip():
            raise BadRecord("empty_turn", f"turn {i} ({m['role']}) is empty")
    if not any(m["role"] == "assistant" for m in messages):
        raise BadRecord("no_response", "no assistant turn")
    extra = row.get("meta")
    if isinstance(extra, str) and extra.startswith("{"):
        extra = json.loads(extra)
    if isinstance(extra, dict):
        meta.update(extra)
    return messages, meta


def to_record(row: Any, schema: str, source: str, index: int) -> Record:
    """A Record from one parsed row; raises BadRecord. Keeps a pathway/spans the row already carries."""
    if not isinstance(row, dict):
        raise BadRecord("bad_type", f"row is {type(row).__name__}, expected an object")
    messages, meta = convert(row, schema)
    orig = row.get("id", row.get("prompt_id"))
    rid = f"{source}/{orig}" if isinstance(orig, (str, int)) and str(orig) else f"{source}/{index}"
    record = Record(id=rid, source=source, messages=messages, meta={"schema": schema, "row": index, **meta})
    pathway = row.get("pathway")
    if isinstance(pathway, str) and pathway:
        record.pathway = pathway
        conf = row.get("pathway_confidence")
        record.pathway_confidence = float(conf) if isinstance(conf, (int, float)) else 1.0
        record.meta["pathway_from"] = "source"
        spans = row.get("spans") or []
        if isinstance(spans, str):
            spans = json.loads(spans)
        record.spans = list(spans) if isinstance(spans, list) else []
        if (problem := check_spans(record)) is not None:
            raise BadRecord("bad_spans", problem)
    return record


# ---------------------------------------------------------------- files and units


@dataclass
class Unit:
    """One unit of work: rows [start, start + rows) of a file (JSONL: bytes [byte_start, byte_end))."""

    path: str
    fmt: str  # 'jsonl' | 'jsonl.gz' | 'json' | 'parquet' | 'csv'
    schema: str
    source: str
    index: int  # position of this unit in its file
    start: int
    rows: int
    byte_start: int = 0
    byte_end: int = 0
    row_groups: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.source}-{self.index:05d}"

    def to_dict(self) -> dict:
        return asdict(self)


def file_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in ((".jsonl.gz", "jsonl.gz"), (".json.gz", "jsonl.gz"), (".jsonl", "jsonl")):
        if name.endswith(suffix):
            return fmt
    if name.endswith(".json"):
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
        return "json" if head.startswith(b"[") else "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    raise ValueError(f"input {path}: unsupported file type; use .jsonl, .jsonl.gz, .json, .parquet or .csv")


def source_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".parquet", ".csv"):
        name = name.removesuffix(suffix)
    return name


def plan_units(path: Path, schema: str, source: str, chunk: int) -> list[Unit]:
    """Cut one file into units of about ``chunk`` rows (the schema is resolved here, once per file)."""
    fmt = file_format(path)
    if schema == "auto":
        schema = _detect_file_schema(path, fmt)
    units: list[Unit] = []

    def unit(start: int, rows: int, *more, **kw) -> Unit:
        return Unit(str(path), fmt, schema, source, len(units), start, rows, *more, **kw)

    if fmt == "jsonl":
        with open(path, "rb") as f:
            start, first_byte, rows, offset = 0, 0, 0, 0
            for line in f:
                rows += 1
                offset += len(line)
                if rows == chunk:
                    units.append(unit(start, rows, first_byte, offset))
                    start, first_byte, rows = start + rows, offset, 0
            if rows:
                units.append(unit(start, rows, first_byte, offset))
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        groups, rows, start = [], 0, 0
        for g in range(meta.num_row_groups):
            groups.append(g)
            rows += meta.row_group(g).num_rows
            if rows >= chunk or g == meta.num_row_groups - 1:
                units.append(unit(start, rows, row_groups=tuple(groups)))
                start, rows, groups = start + rows, 0, []
    else:  # gzipped JSONL, a JSON array, CSV: count rows once, workers parse the file and slice it
        total = sum(1 for _ in _raw_rows(path, fmt))
        for s in range(0, total, chunk):
            units.append(unit(s, min(chunk, total - s)))
    return units


def _detect_file_schema(path: Path, fmt: str, rows: int = 50) -> str:
    votes: Counter = Counter()
    for i, (_, row) in enumerate(_raw_rows(path, fmt)):
        if i >= rows:
            break
        if isinstance(row, dict):
            votes[detect_schema(row)] += 1
    votes.pop(None, None)
    if not votes:
        log.warning(
            "%s: no known schema in the first rows; its rows go to the rejects. Set the input's "
            "`schema` (one of dolly, ultrachat, alpaca, sharegpt, openai, gsm8k, text)",
            path,
        )
        return "unknown"
    schema = votes.most_common(1)[0][0]
    log.info("%s: detected schema %s", path, schema)
    return schema


# A raw row is a dict, or a BadRecord for a line that could not be parsed.
RawRow = tuple[int, "dict | BadRecord"]


def _parse_line(line: bytes, max_bytes: int) -> dict | BadRecord:
    if len(line) > max_bytes:
        return BadRecord("oversize", f"{len(line)} bytes > read.max_record_bytes={max_bytes}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return BadRecord("bad_utf8", f"byte {e.start}: {line[max(0, e.start - 20) : e.start + 20]!r}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return BadRecord("bad_json", f"{e.msg} at column {e.colno}")


def _raw_rows(path: Path, fmt: str, max_bytes: int = 1 << 30) -> Iterator[RawRow]:
    """Every row of a file (blank JSONL lines are skipped but keep their row numbers)."""
    if fmt in ("jsonl", "jsonl.gz"):
        opener = gzip.open if fmt == "jsonl.gz" else open
        with opener(path, "rb") as f:
            for i, line in enumerate(f):
                if line.strip():
                    yield i, _parse_line(line, max_bytes)
    elif fmt == "json":
        data = json.loads(Path(path).read_bytes())
        if not isinstance(data, list):
            raise ValueError(f"input {path}: a .json file must hold one array of records (or use JSONL)")
        yield from enumerate(data)
    elif fmt == "csv":
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            for i, row in enumerate(csv.DictReader(f)):
                yield i, _check_csv_row(row, max_bytes)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        i = 0
        for batch in pf.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                yield i, row
                i += 1


def _check_csv_row(row: dict, max_bytes: int) -> dict | BadRecord:
    size = 0
    for key, value in row.items():
        if key is None or value is None:
            return BadRecord("bad_csv", "row has a different number of fields than the header")
        try:
            size += len(value.encode("utf-8"))
        except UnicodeEncodeError:
            return BadRecord("bad_utf8", f"field {key!r}")
    if size > max_bytes:
        return BadRecord("oversize", f"{size} bytes > read.max_record_bytes={max_bytes}")
    return {k: v for k, v in row.items() if v != "" or k in ("text", "response", "output", "answer")}


def unit_rows(unit: Unit, max_bytes: int) -> Iterator[RawRow]:
    """The raw rows of one unit, reading as little of the file as the format allows."""
    if unit.fmt == "jsonl":
        with open(unit.path, "rb") as f:
            f.seek(unit.byte_start)
            data = f.read(unit.byte_end - unit.byte_start)
        for i, line in enumerate(io.BytesIO(data), start=unit.start):
            if line.strip():
                yield i, _parse_line(line, max_bytes)
    elif unit.fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(unit.path).read_row_groups(list(unit.row_groups))
        yield from enumerate(table.to_pylist(), start=unit.start)
    else:
        for i, row in _raw_rows(Path(unit.path), unit.fmt, max_bytes):
            if i >= unit.start + unit.rows:
                break
            if i >= unit.start:
                yield i, row


def read_unit(unit: Unit, max_bytes: int) -> tuple[list[Record], list[Reject]]:
    """Records and rejects of one unit."""
    records, rejects = [], []
    for i, row in unit_rows(unit, max_bytes):
        try:
            if isinstance(row, BadRecord):
                raise row
            if unit.fmt == "parquet" and len(json.dumps(row, default=str)) > max_bytes:
                raise BadRecord("oversize", f"> read.max_record_bytes={max_bytes}")
            records.append(to_record(row, unit.schema, unit.source, i))
        except BadRecord as e:
            raw = row if not isinstance(row, BadRecord) else None
            rejects.append(
                Reject(f"{unit.source}/{i}", unit.source, "read", e.reason, e.evidence, _dump(raw)[:10_000])
            )
        except (ValueError, TypeError, AttributeError) as e:  # anything else odd in one row
            rejects.append(Reject(f"{unit.source}/{i}", unit.source, "read", "bad_record", str(e)[:500]))
    return records, rejects


def _dump(raw: Any) -> str:
    if raw is None:
        return ""
    try:
        return json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(raw)


def read_file(path: str | Path, schema: str = "auto", source: str = "") -> tuple[list[Record], list[Reject]]:
    """All records of one file (evaluation sets, a core set, tests)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    records, rejects = [], []
    for unit in plan_units(path, schema, source or source_name(path), chunk=1 << 62):
        r, j = read_unit(unit, 1 << 30)
        records += r
        rejects += j
    return records, rejects
