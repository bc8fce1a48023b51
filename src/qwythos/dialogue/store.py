"""SQLite persistence for the dialogue engine: characters, sessions, messages, events, facts, summaries.

One connection per Store (WAL, ``synchronous=FULL``, foreign keys on), every method one transaction under a
lock, committed before it returns: an acknowledged write survives a killed process. Reads that take an
owner return None for another owner's rows (the API answers 404). An event's and a fact's ``turn`` is the
seq of the latest message when it arrived (unless given) and never goes backwards, so ``fork`` at a message
copies exactly the prefix of the history up to it. ``export_session`` gives JSONL-able records without
database ids; ``import_session`` reads them back, so export -> import -> export is the identity.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from qwythos.dialogue.cards import Card, card_to_dict, parse_card
from qwythos.dialogue.state import Event, event_to_dict, parse_event

SCHEMA_VERSION = 1  # PRAGMA user_version
SCHEMA = """
CREATE TABLE characters (
    id INTEGER PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, card_json TEXT NOT NULL,
    avatar_png BLOB, created TEXT NOT NULL);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY, owner TEXT NOT NULL, character_id INTEGER NOT NULL REFERENCES characters(id),
    player_name TEXT NOT NULL, settings_json TEXT NOT NULL, parent_session INTEGER REFERENCES sessions(id),
    forked_at_message INTEGER, created TEXT NOT NULL);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id), seq INTEGER NOT NULL,
    role TEXT NOT NULL, content TEXT NOT NULL, meta_json TEXT NOT NULL, created TEXT NOT NULL,
    UNIQUE (session_id, seq));
CREATE TABLE events (
    id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id), seq INTEGER NOT NULL,
    type TEXT NOT NULL, payload_json TEXT NOT NULL, turn INTEGER NOT NULL, created TEXT NOT NULL,
    UNIQUE (session_id, seq));
CREATE TABLE facts (
    id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id), subject TEXT NOT NULL,
    attribute TEXT NOT NULL, value TEXT NOT NULL, turn INTEGER NOT NULL, source_event INTEGER,
    superseded_by INTEGER REFERENCES facts(id));
CREATE TABLE summaries (
    id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id), upto_seq INTEGER NOT NULL,
    text TEXT NOT NULL, created TEXT NOT NULL);
CREATE INDEX facts_current ON facts (session_id, subject, attribute, superseded_by);
CREATE INDEX summaries_by_session ON summaries (session_id, upto_seq);
"""
HISTORY = {  # record kind -> (table, its columns besides id and session_id, the column a fork cuts on)
    "message": ("messages", ("seq", "role", "content", "meta_json", "created"), "seq"),
    "event": ("events", ("seq", "type", "payload_json", "turn", "created"), "turn"),
    "fact": ("facts", ("subject", "attribute", "value", "turn", "source_event", "superseded_by"), "turn"),
    "summary": ("summaries", ("upto_seq", "text", "created"), "upto_seq"),
}
JSON_COLUMNS = {"meta_json": "meta", "payload_json": "payload", "value": "value"}  # column -> record key


HOME_ENV = "QWYTHOS_HOME"  # where the dialogue store lives when --db is not given


def default_db(model_dir: str | Path, db: str | Path | None) -> Path:
    """--db, else $QWYTHOS_HOME/dialogue.sqlite, else dialogue.sqlite in the model's folder (serve and
    dialogue share it)."""
    if db is not None:
        return Path(db)
    home = os.environ.get(HOME_ENV)
    if home:
        Path(home).mkdir(parents=True, exist_ok=True)
        return Path(home) / "dialogue.sqlite"
    return Path(model_dir) / "dialogue.sqlite"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _insert(db: sqlite3.Connection, table: str, **values) -> int:
    cols = ", ".join(values)
    marks = ", ".join("?" * len(values))
    return db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(values.values())).lastrowid


def _one(db: sqlite3.Connection, sql: str, *args) -> sqlite3.Row | None:
    return db.execute(sql, args).fetchone()


def _all(db: sqlite3.Connection, sql: str, *args) -> list[sqlite3.Row]:
    return db.execute(sql, args).fetchall()


class Store:
    """One SQLite file; safe to share between threads (one connection, a lock around each transaction)."""

    def __init__(self, path: str | Path):
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._tx() as db:  # under the write lock: two processes opening a new file create it once
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                version = SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            self._db.close()
            raise ValueError(
                f"{path}: schema version {version}, this qwythos reads {SCHEMA_VERSION}; "
                "open it with the qwythos that wrote it or export and re-import the sessions"
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # characters and sessions

    def add_character(self, owner: str, card: Card, avatar: bytes | None = None) -> int:
        card_json = json.dumps(card_to_dict(card), ensure_ascii=False)
        with self._tx() as db:
            return _insert(
                db,
                "characters",
                owner=owner,
                name=card.name,
                card_json=card_json,
                avatar_png=avatar,
                created=now(),
            )

    @staticmethod
    def _character(row: sqlite3.Row) -> dict:
        return {k: row[k] for k in row.keys() if k != "card_json"} | {
            "card": parse_card(json.loads(row["card_json"]))
        }

    def get_character(self, owner: str, character_id: int) -> dict | None:
        """The character (its card parsed), or None if it is missing or another owner's."""
        with self._tx(write=False) as db:
            row = _one(db, "SELECT * FROM characters WHERE id = ? AND owner = ?", character_id, owner)
        return None if row is None else self._character(row)

    def list_characters(self, owner: str) -> list[dict]:
        with self._tx(write=False) as db:
            rows = _all(db, "SELECT * FROM characters WHERE owner = ? ORDER BY id", owner)
        return [self._character(r) for r in rows]

    def create_session(
        self, owner: str, character_id: int, player_name: str, settings: dict | None = None
    ) -> int:
        with self._tx() as db:
            return self._new_session(db, owner, character_id, player_name, settings or {})

    @staticmethod
    def _new_session(
        db, owner, character_id, player_name, settings, parent=None, at=None, created=None
    ) -> int:
        if _one(db, "SELECT 1 FROM characters WHERE id = ? AND owner = ?", character_id, owner) is None:
            raise LookupError(f"character {character_id} not found for owner {owner!r}; add_character first")
        return _insert(
            db,
            "sessions",
            owner=owner,
            character_id=character_id,
            player_name=player_name,
            settings_json=json.dumps(settings),
            parent_session=parent,
            forked_at_message=at,
            created=created or now(),
        )

    def get_session(self, owner: str, session_id: int) -> dict | None:
        """The session, or None if it is missing or another owner's (the API answers 404)."""
        with self._tx(write=False) as db:
            row = _one(db, "SELECT * FROM sessions WHERE id = ? AND owner = ?", session_id, owner)
        if row is None:
            return None
        return {k: row[k] for k in row.keys() if k != "settings_json"} | {
            "settings": json.loads(row["settings_json"])
        }

    def list_sessions(self, owner: str) -> list[dict]:
        """The owner's sessions, newest first, with their character's name and message count."""
        with self._tx(write=False) as db:
            rows = _all(
                db,
                "SELECT s.id, s.character_id, c.name AS character, s.player_name, s.parent_session, "
                "s.forked_at_message, s.created, "
                "(SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id) AS messages "
                "FROM sessions s JOIN characters c ON c.id = s.character_id "
                "WHERE s.owner = ? ORDER BY s.id DESC",
                owner,
            )
        return [dict(r) for r in rows]

    # the history of a session

    @staticmethod
    def _last(db, table: str, session_id: int, column: str = "seq") -> int:
        return _one(db, f"SELECT MAX({column}) FROM {table} WHERE session_id = ?", session_id)[0] or 0

    def add_message(self, session_id: int, role: str, content: str, meta: dict | None = None) -> int:
        """Append a message (meta: the gear summary, the context report...); returns its seq (1, 2, ...)."""
        with self._tx() as db:
            return self._add_message(db, session_id, role, content, meta)

    def _add_message(self, db, session_id: int, role: str, content: str, meta: dict | None) -> int:
        seq = self._last(db, "messages", session_id) + 1
        _insert(
            db,
            "messages",
            session_id=session_id,
            seq=seq,
            role=role,
            content=content,
            meta_json=json.dumps(meta or {}),
            created=now(),
        )
        return seq

    def add_turn(
        self,
        session_id: int,
        messages: list[tuple[str, str, dict]],
        facts: list[tuple[str, str, object, int | None]] = (),
        summary: tuple[int, str] | None = None,
    ) -> int:
        """One dialogue turn in one transaction: its messages (role, content, meta), the facts it established
        (subject, attribute, value, source event) and a new recap (upto_seq, text); the last message's seq.
        A process killed mid-turn leaves the whole turn or none of it."""
        with self._tx() as db:
            seq = 0
            for role, content, meta in messages:
                seq = self._add_message(db, session_id, role, content, meta)
            for subject, attribute, value, source in facts:
                self._add_fact(db, session_id, subject, attribute, value, None, source)
            if summary is not None:
                self._add_summary(db, session_id, *summary)
        return seq

    def messages(self, session_id: int) -> list[dict]:
        with self._tx(write=False) as db:
            return self._messages(db, session_id)

    @staticmethod
    def _messages(db, session_id: int) -> list[dict]:
        rows = _all(db, "SELECT * FROM messages WHERE session_id = ? ORDER BY seq", session_id)
        return [
            {
                "seq": r["seq"],
                "role": r["role"],
                "content": r["content"],
                "meta": json.loads(r["meta_json"]),
                "created": r["created"],
            }
            for r in rows
        ]

    def _turn(self, db, session_id: int, table: str, turn: int | None) -> int:
        """The turn to record: given or the latest message's seq, and never before the table's last one."""
        turn = self._last(db, "messages", session_id) if turn is None else turn
        last = self._last(db, table, session_id, "turn")
        if turn < last:
            raise ValueError(f"turn {turn} is before the last {table} row's turn {last}; turns never go back")
        return turn

    def add_event(self, session_id: int, event: Event, turn: int | None = None) -> int:
        """Store an event the caller has already checked with an EventLog; returns its seq (= its log id)."""
        with self._tx() as db:
            return self._add_event(db, session_id, event, turn)

    def add_events(self, session_id: int, events: list[Event]) -> list[int]:
        """Several checked events in one transaction (all stored, or none)."""
        with self._tx() as db:
            return [self._add_event(db, session_id, e, None) for e in events]

    def _add_event(self, db, session_id: int, event: Event, turn: int | None) -> int:
        seq = self._last(db, "events", session_id) + 1
        if event.id is not None and event.id != seq:
            raise ValueError(
                f"event id {event.id} != next seq {seq}: the EventLog and the store disagree; "
                "rebuild the log with EventLog(store.events(session_id))"
            )
        turn = self._turn(db, session_id, "events", event.turn if turn is None else turn)
        payload = {k: v for k, v in event_to_dict(event).items() if k not in ("type", "id", "turn")}
        _insert(
            db,
            "events",
            session_id=session_id,
            seq=seq,
            type=event.TYPE,
            payload_json=json.dumps(payload),
            turn=turn,
            created=now(),
        )
        return seq

    def events(self, session_id: int) -> list[Event]:
        """The session's events with ids and turns, ready for ``EventLog(store.events(sid))``."""
        with self._tx(write=False) as db:
            rows = _all(db, "SELECT * FROM events WHERE session_id = ? ORDER BY seq", session_id)
        return [
            parse_event(
                {"type": r["type"], **json.loads(r["payload_json"]), "id": r["seq"], "turn": r["turn"]}
            )
            for r in rows
        ]

    def add_fact(
        self,
        session_id: int,
        subject: str,
        attribute: str,
        value: object,
        turn: int | None = None,
        source_event: int | None = None,
    ) -> int:
        """Record a fact; the current row for the same subject and attribute becomes superseded by it."""
        with self._tx() as db:
            return self._add_fact(db, session_id, subject, attribute, value, turn, source_event)

    def _add_fact(self, db, session_id, subject, attribute, value, turn, source_event) -> int:
        turn = self._turn(db, session_id, "facts", turn)
        new = _insert(
            db,
            "facts",
            session_id=session_id,
            subject=subject,
            attribute=attribute,
            value=json.dumps(value),
            turn=turn,
            source_event=source_event,
        )
        db.execute(
            "UPDATE facts SET superseded_by = ? WHERE session_id = ? AND subject = ? AND attribute = ?"
            " AND superseded_by IS NULL AND id != ?",
            (new, session_id, subject, attribute, new),
        )
        return new

    def facts(self, session_id: int, include_superseded: bool = False) -> list[dict]:
        """The current facts (or all, superseded rows too) in the order they were recorded."""
        with self._tx(write=False) as db:
            return self._facts(db, session_id, include_superseded)

    @staticmethod
    def _facts(db, session_id: int, include_superseded: bool) -> list[dict]:
        where = "" if include_superseded else " AND superseded_by IS NULL"
        rows = _all(db, f"SELECT * FROM facts WHERE session_id = ?{where} ORDER BY id", session_id)
        return [
            {k: r[k] for k in r.keys() if k != "session_id"} | {"value": json.loads(r["value"])} for r in rows
        ]

    def add_summary(self, session_id: int, upto_seq: int, text: str) -> int:
        with self._tx() as db:
            return self._add_summary(db, session_id, upto_seq, text)

    @staticmethod
    def _add_summary(db, session_id: int, upto_seq: int, text: str) -> int:
        return _insert(db, "summaries", session_id=session_id, upto_seq=upto_seq, text=text, created=now())

    def latest_summary(self, session_id: int) -> dict | None:
        with self._tx(write=False) as db:
            row = _one(
                db,
                "SELECT upto_seq, text, created FROM summaries WHERE session_id = ?"
                " ORDER BY upto_seq DESC, id DESC LIMIT 1",
                session_id,
            )
        return None if row is None else dict(row)

    # fork, export, import: all three move history as the same records

    @staticmethod
    def _history(db, session_id: int, upto: int | None = None) -> list[dict]:
        """Records of the session's history (up to message ``upto``); facts carry their position ``n`` and
        name the fact that superseded them by position, dropped when it lies beyond ``upto``."""
        records = []
        for kind, (table, cols, cut) in HISTORY.items():
            order = "seq" if "seq" in cols else "id"
            rows = _all(
                db,
                f"SELECT * FROM {table} WHERE session_id = ? AND {cut} <= ? ORDER BY {order}",
                session_id,
                2**62 if upto is None else upto,
            )
            n = {r["id"]: i for i, r in enumerate(rows, 1)}
            for i, r in enumerate(rows, 1):
                rec = {"kind": kind} | {JSON_COLUMNS.get(c, c): _decode(c, r[c]) for c in cols}
                if kind == "fact":
                    rec |= {"n": i, "superseded_by": n.get(r["superseded_by"])}
                records.append(rec)
        return records

    @staticmethod
    def _write_history(db, session_id: int, records: list[dict], first: int = 0) -> None:
        facts = {}  # position n -> (position of its superseder, new id)
        for i, rec in enumerate(records, first):
            if rec.get("kind") not in HISTORY:
                raise ValueError(
                    f"records[{i}]: unknown kind {rec.get('kind')!r}; expected one of {list(HISTORY)}"
                )
            table, cols, _ = HISTORY[rec["kind"]]
            if rec["kind"] == "event":
                parse_event({"type": rec["type"], **rec["payload"]})  # a bad event fails the whole write
            values = {c: _encode(c, rec[JSON_COLUMNS.get(c, c)]) for c in cols if c != "superseded_by"}
            new = _insert(db, table, session_id=session_id, **values)
            if rec["kind"] == "fact":
                facts[rec["n"]] = (rec["superseded_by"], new)
        for later, new in facts.values():
            if later is not None:
                db.execute("UPDATE facts SET superseded_by = ? WHERE id = ?", (facts[later][1], new))

    def fork(self, owner: str, session_id: int, at_message_seq: int) -> int:
        """A new session with this one's history up to and including message ``at_message_seq``: messages,
        events and facts with turns up to it (supersession by later facts undone), summaries up to it."""
        with self._tx() as db:
            row = _one(db, "SELECT * FROM sessions WHERE id = ? AND owner = ?", session_id, owner)
            if row is None:
                raise LookupError(f"session {session_id} not found for owner {owner!r}")
            if (
                _one(
                    db, "SELECT 1 FROM messages WHERE session_id = ? AND seq = ?", session_id, at_message_seq
                )
                is None
            ):
                raise ValueError(f"at_message_seq {at_message_seq}: session {session_id} has no such message")
            new = self._new_session(
                db,
                owner,
                row["character_id"],
                row["player_name"],
                json.loads(row["settings_json"]),
                session_id,
                at_message_seq,
            )
            self._write_history(db, new, self._history(db, session_id, at_message_seq))
        return new

    def export_session(self, owner: str, session_id: int) -> list[dict]:
        """JSONL-able records without database ids: a header (the session and its character's card), then
        the messages, events, facts and summaries in order, each with a "kind"."""
        with self._tx(write=False) as db:  # one snapshot
            session = _one(db, "SELECT * FROM sessions WHERE id = ? AND owner = ?", session_id, owner)
            if session is None:
                raise LookupError(f"session {session_id} not found for owner {owner!r}")
            char = _one(db, "SELECT * FROM characters WHERE id = ?", session["character_id"])
            history = self._history(db, session_id)
        avatar = None if char["avatar_png"] is None else base64.b64encode(char["avatar_png"]).decode("ascii")
        character = {
            "name": char["name"],
            "card": json.loads(char["card_json"]),
            "avatar_png": avatar,
            "created": char["created"],
        }
        header = {
            "kind": "session",
            "schema_version": SCHEMA_VERSION,
            "player_name": session["player_name"],
            "settings": json.loads(session["settings_json"]),
            "forked_at_message": session["forked_at_message"],
            "created": session["created"],
            "character": character,
        }
        return [header] + history

    def import_session(self, owner: str, records: list[dict]) -> int:
        """A new session (and character) for ``owner`` from ``export_session`` records; all or nothing."""
        if not records or records[0].get("kind") != "session":
            raise ValueError(
                "records[0] must be the session header (kind 'session') that export_session writes"
            )
        head, char = records[0], records[0]["character"]
        card_json = json.dumps(card_to_dict(parse_card(char["card"])), ensure_ascii=False)
        avatar = None if char["avatar_png"] is None else base64.b64decode(char["avatar_png"])
        with self._tx() as db:
            cid = _insert(
                db,
                "characters",
                owner=owner,
                name=char["name"],
                card_json=card_json,
                avatar_png=avatar,
                created=char["created"],
            )
            sid = self._new_session(
                db,
                owner,
                cid,
                head["player_name"],
                head["settings"],
                None,
                head["forked_at_message"],
                head["created"],
            )
            self._write_history(db, sid, records[1:], first=1)
        return sid


def _decode(column: str, value: object) -> object:
    return json.loads(value) if column in JSON_COLUMNS else value


def _encode(column: str, value: object) -> object:
    return json.dumps(value) if column in JSON_COLUMNS else value
