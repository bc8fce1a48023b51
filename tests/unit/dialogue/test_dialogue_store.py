"""The SQLite store: owners, history, supersession, fork, export/import, threads and a SIGKILLed writer."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import qwythos
from qwythos.dialogue.cards import Card, minimal_png
from qwythos.dialogue.state import EventLog, InventoryAdd, InventoryRemove, MoveItem
from qwythos.dialogue.store import SCHEMA_VERSION, Store


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "dialogue.db") as s:
        yield s


def session(store: Store, owner: str = "ann") -> int:
    cid = store.add_character(owner, Card(name="Mara", extensions={"x": 1}), minimal_png())
    return store.create_session(owner, cid, "Ann", {"budget": 1024})


def test_schema_and_pragmas(tmp_path, store):
    raw = sqlite3.connect(tmp_path / "dialogue.db")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"characters", "sessions", "messages", "events", "facts", "summaries"}
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(ValueError, match="schema version 99"):
        Store(tmp_path / "dialogue.db")


def test_owners_see_only_their_own(store):
    sid = session(store)
    char = store.list_characters("ann")[0]
    assert (
        char["card"].name == "Mara"
        and char["card"].extensions == {"x": 1}
        and char["avatar_png"] == minimal_png()
    )
    assert store.get_character("bob", char["id"]) is None and store.list_characters("bob") == []
    assert store.get_session("bob", sid) is None
    assert store.get_session("ann", sid)["settings"] == {"budget": 1024}
    with pytest.raises(LookupError, match="not found for owner 'bob'"):
        store.create_session("bob", char["id"], "Bob")
    with pytest.raises(LookupError):
        store.fork("bob", sid, 1)


def test_messages_events_and_summaries(store):
    sid = session(store)
    assert [store.add_message(sid, "user", f"m{i}", {"gear": i}) for i in range(3)] == [1, 2, 3]
    assert store.messages(sid)[2]["meta"] == {"gear": 2}
    log = EventLog()
    for event in (InventoryAdd("gold", 12), InventoryRemove("gold", 5), MoveItem("key", "under the mat")):
        store.add_event(sid, log.append(event))
    events = store.events(sid)
    assert [e.id for e in events] == [1, 2, 3] and all(e.turn == 3 for e in events)  # the latest message
    assert EventLog(events).state == log.state
    with pytest.raises(ValueError, match="disagree"):
        store.add_event(sid, InventoryAdd("gold", 1, id=9))
    with pytest.raises(ValueError, match="never go back"):
        store.add_event(sid, InventoryAdd("gold", 1), turn=1)
    assert len(store.events(sid)) == 3
    assert store.latest_summary(sid) is None
    store.add_summary(sid, 2, "early")
    store.add_summary(sid, 3, "later")
    assert store.latest_summary(sid)["text"] == "later"


def test_facts_supersede_and_keep_old_rows(store):
    sid = session(store)
    first = store.add_fact(sid, "player", "home", "Dunmore", source_event=None)
    store.add_fact(sid, "player", "age", 30)
    second = store.add_fact(sid, "player", "home", "Kell")
    current = store.facts(sid)
    assert [(f["attribute"], f["value"]) for f in current] == [("age", 30), ("home", "Kell")]
    everything = store.facts(sid, include_superseded=True)
    assert [f for f in everything if f["id"] == first][0]["superseded_by"] == second


def fill(store: Store, sid: int) -> None:
    log = EventLog()
    for i in range(1, 7):
        store.add_message(sid, "user" if i % 2 else "assistant", f"line {i}", {"i": i})
        if i in (2, 5):
            store.add_event(sid, log.append(InventoryAdd("gold", i)))
        if i in (3, 5):
            store.add_fact(sid, "player", "mood", f"mood {i}")
        if i in (4, 6):
            store.add_summary(sid, i, f"recap to {i}")


def test_fork_copies_the_prefix(store):
    sid = session(store)
    fill(store, sid)
    fork = store.fork("ann", sid, 4)
    info = store.get_session("ann", fork)
    assert (info["parent_session"], info["forked_at_message"]) == (sid, 4)
    assert [m["content"] for m in store.messages(fork)] == [f"line {i}" for i in range(1, 5)]
    assert [e.qty for e in store.events(fork)] == [2]
    facts = store.facts(fork, include_superseded=True)
    assert [(f["value"], f["superseded_by"]) for f in facts] == [("mood 3", None)]  # its superseder is later
    assert store.latest_summary(fork)["text"] == "recap to 4"
    store.add_message(fork, "user", "another road")
    assert len(store.messages(sid)) == 6 and store.messages(fork)[-1]["seq"] == 5
    with pytest.raises(ValueError, match="no such message"):
        store.fork("ann", sid, 99)


def test_export_import_round_trip(store):
    sid = session(store)
    fill(store, sid)
    records = store.export_session("ann", sid)
    assert [r["kind"] for r in records][:2] == ["session", "message"]
    assert {r["kind"] for r in records} == {"session", "message", "event", "fact", "summary"}
    lines = [json.dumps(r) for r in records]  # JSONL-able
    new = store.import_session("bob", [json.loads(line) for line in lines])
    assert new != sid and store.get_session("ann", new) is None
    assert store.export_session("bob", new) == records
    assert [f["value"] for f in store.facts(new)] == ["mood 5"]


def test_import_is_all_or_nothing(store):
    sid = session(store)
    fill(store, sid)
    records = store.export_session("ann", sid) + [{"kind": "telegram"}]
    with pytest.raises(ValueError, match="unknown kind 'telegram'"):
        store.import_session("bob", records)
    assert store.list_characters("bob") == []
    with pytest.raises(ValueError, match="session header"):
        store.import_session("bob", records[1:])


def test_threads_share_one_store(store):
    sid = session(store)

    def write(k: int) -> None:
        for i in range(20):
            store.add_message(sid, "user", f"{k}-{i}")

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [m["seq"] for m in store.messages(sid)] == list(range(1, 81))


WRITER = """
import sys
from qwythos.dialogue.cards import Card
from qwythos.dialogue.store import Store
store = Store(sys.argv[1])
sid = store.create_session("ann", store.add_character("ann", Card(name="Mara")), "Ann")
print(sid, flush=True)
i = 0
while True:
    i += 1
    store.add_message(sid, "user", f"message {i}")
    print("ok", flush=True)
"""


def test_acknowledged_writes_survive_sigkill(tmp_path):
    path, n = tmp_path / "killed.db", 15
    env = os.environ | {"PYTHONPATH": str(Path(qwythos.__file__).parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        sid = int(proc.stdout.readline())
        for _ in range(n):
            assert proc.stdout.readline().strip() == "ok"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with Store(path) as store:
        got = [m["content"] for m in store.messages(sid)]
    assert len(got) >= n and got[:n] == [f"message {i}" for i in range(1, n + 1)]


def test_a_second_connection_sees_each_committed_write(tmp_path, store):
    sid = session(store)
    with Store(tmp_path / "dialogue.db") as other:
        store.add_message(sid, "user", "hello")
        assert [m["content"] for m in other.messages(sid)] == ["hello"]
        other.add_message(sid, "assistant", "hi")
        assert store.add_message(sid, "user", "again") == 3
