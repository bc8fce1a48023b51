"""Readers: every schema in JSONL, Parquet and CSV; detection and override; malformed rows -> rejects."""

from __future__ import annotations

import gzip
import json

import pytest

from qwythos.curate.readers import plan_units, read_file, read_unit
from unit.curate.curate_data import ROWS, write_csv, write_jsonl, write_parquet

WRITERS = {"jsonl": write_jsonl, "parquet": write_parquet, "csv": write_csv}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("schema", sorted(ROWS))
def test_every_schema_in_every_format(tmp_path, schema, fmt):
    path = WRITERS[fmt](tmp_path / f"{schema}.{fmt}", ROWS[schema])
    records, rejects = read_file(path)
    assert rejects == []
    assert len(records) == len(ROWS[schema])
    for r in records:
        assert r.meta["schema"] == schema
        assert r.messages[-1]["role"] == "assistant" and r.response.strip()
        assert all(m["role"] in ("system", "user", "assistant") for m in r.messages)
    if schema == "dolly":
        assert records[1].meta["category"] == "creative_writing"
    if schema == "sharegpt":
        assert records[0].id == "sharegpt/s1" and records[0].messages[0]["role"] == "user"
    if schema == "alpaca":  # instruction and input are joined into the user turn
        assert records[1].messages[0]["content"] == "Translate to French.\n\nGood morning"


def test_schema_override_beats_detection(tmp_path):
    rows = [{"text": "plain", "question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}]
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    assert read_file(path)[0][0].meta["schema"] == "gsm8k"  # question+answer wins over text
    records, _ = read_file(path, schema="text")
    assert records[0].meta["schema"] == "text" and records[0].response == "plain"


def test_malformed_rows_become_rejects_with_reasons(tmp_path):
    good = {"instruction": "Say hi.", "response": "Hi there, nice to meet you."}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({"instruction": "No response here."}),
        json.dumps({"instruction": 3, "response": "number instruction"}),
        json.dumps({"instruction": "Empty answer", "response": "   "}),
        json.dumps({"conversations": [{"from": "alien", "value": "zzz"}, {"from": "gpt", "value": "ok"}]}),
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps({"instruction": "big", "response": "x" * 5000}),
        json.dumps(["a", "list"]),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        ("\n".join(lines) + "\n").encode() + b'{"instruction": "caf\xe9", "response": "bad utf8"}\n'
    )
    (unit,) = plan_units(path, "dolly", "bad", chunk=100)
    records, rejects = read_unit(unit, max_bytes=2000)
    assert [r.id for r in records] == ["bad/0"]
    reasons = {j.id: j.reason for j in rejects}
    assert reasons == {
        "bad/1": "bad_json",
        "bad/2": "missing_field",
        "bad/3": "bad_type",
        "bad/4": "empty_turn",
        "bad/5": "missing_field",  # a ShareGPT row read as Dolly: no instruction
        "bad/6": "missing_field",
        "bad/7": "oversize",
        "bad/8": "bad_type",
        "bad/9": "bad_utf8",
    }
    by_id = {j.id: j for j in rejects}
    assert by_id["bad/2"].evidence == "response" and "No response here" in by_id["bad/2"].record
    # the same rows read as their own schema: role and missing-answer problems are named
    role = write_jsonl(tmp_path / "role.jsonl", [json.loads(lines[5]), json.loads(lines[6])])
    _, rejects = read_file(role, schema="sharegpt")
    assert rejects[0].reason == "bad_role"
    _, rejects = read_file(role, schema="openai")
    assert [j.reason for j in rejects] == ["missing_field", "no_response"]


def test_units_cover_every_row_once(tmp_path):
    rows = [{"text": f"row number {i}"} for i in range(23)]
    for path in (
        write_jsonl(tmp_path / "a.jsonl", rows),
        write_parquet(tmp_path / "a.parquet", rows),
        write_csv(tmp_path / "a.csv", rows),
    ):
        units = plan_units(path, "auto", "a", chunk=5)
        assert len(units) >= 4
        seen = [r.response for u in units for r in read_unit(u, 1 << 20)[0]]
        assert seen == [r["text"] for r in rows], path


def test_gzip_and_json_array_and_spans(tmp_path):
    row = {
        "id": "m1",
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "story. 2 + 2 = 4"}],
        "pathway": "mixed",
        "spans": [{"message": 1, "start": 0, "end": 6, "pathway": "narrative"}],
    }
    gz = tmp_path / "s.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps(row) + "\n")
    (r,), _ = read_file(gz)
    assert r.pathway == "mixed" and r.spans[0]["end"] == 6 and r.meta["pathway_from"] == "source"
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps([{**row, "spans": [{"message": 1, "start": 0, "end": 99, "pathway": "x"}]}]))
    records, rejects = read_file(arr)
    assert records == [] and rejects[0].reason == "bad_spans"


def test_unknown_schema_rejects_rows_without_crashing(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1}, {"bar": 2}])
    records, rejects = read_file(path)
    assert records == [] and {j.reason for j in rejects} == {"unknown_schema"}
