"""The dialogue engine's HTTP API on `qwythos serve` (README, "Dialogue engine"): characters, sessions,
events, turns (plain and SSE), fork, export/import. Thin routes over ``dialogue.turn.Dialogue``.

Every row belongs to the API key that created it (the Guard puts its owner name in the request's state);
another key's session or character is a 404. A turn on a session that is answering another is a 409. Bad
cards, events and settings are 4xx naming the field; nothing is stored.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from pydantic import ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from ..dialogue.cards import MAX_CARD_BYTES, CardError, card_to_dict, card_to_png, load_card_bytes
from ..dialogue.state import EventError, event_to_dict
from ..dialogue.turn import Busy, Dialogue, NotFound
from .handlers import ApiError
from .protocol import WireModel

PNG = b"\x89PNG\r\n\x1a\n"
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]  # an SQLite row id (larger: 422, not an overflow)


class SessionRequest(WireModel):
    model_config = ConfigDict(extra="forbid")
    character_id: int = Field(ge=1, le=2**63 - 1)
    player_name: str = Field("Player", min_length=1, max_length=100)
    events: list[dict[str, Any]] = Field(default_factory=list)  # the initial state, as events
    settings: dict[str, Any] = Field(default_factory=dict)  # dialogue.turn.Settings keys


class EventsRequest(WireModel):
    model_config = ConfigDict(extra="forbid")
    events: list[dict[str, Any]] = Field(min_length=1)


class TurnRequest(WireModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, max_length=20_000)
    probe: bool = False  # answer without appending anything (a fork of one turn)
    stream: bool = False
    trace: bool = False  # the per-token gear trace in x_qwythos.gear.trace
    steering: dict[str, Any] = Field(default_factory=dict)  # settings for this turn only


class ForkRequest(WireModel):
    model_config = ConfigDict(extra="forbid")
    at_message: int = Field(ge=0, le=2**63 - 1)


def owner(http: Request) -> str:
    return getattr(http.state, "owner", "local")


def api_error(e: Exception) -> ApiError | None:
    """The API's answer to a dialogue error (None: not a client's fault)."""
    if isinstance(e, NotFound):
        return ApiError(404, str(e), code="not_found")
    if isinstance(e, Busy):
        return ApiError(409, str(e), code="session_busy")
    if isinstance(e, CardError):
        return ApiError(400, str(e), param="card", code="invalid_card")
    if isinstance(e, EventError):
        return ApiError(400, str(e), param=getattr(e, "param", None) or e.field, code="invalid_event")
    if isinstance(e, ValueError | LookupError):
        return ApiError(400, str(e), param=getattr(e, "param", None), code="invalid_value")
    return None


def mapped(fn, *args, **kwargs):
    """Run a dialogue call, turning its errors into the API's."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        if (err := api_error(e)) is None:
            raise
        raise err from None


def character_view(row: dict) -> dict:
    return {
        "id": row["id"],
        "name": row["name"],
        "created": row["created"],
        "has_avatar": row.get("avatar_png") is not None,
        "card": card_to_dict(row["card"]),
    }


def state_view(state) -> dict:
    return {
        "inventory": state.inventory,
        "locations": state.locations,
        "values": state.values,
        "quests": state.quests,
        "happenings": state.happenings,
    }


def turn_body(result, model: str) -> dict:
    return {
        "id": f"turn-{uuid.uuid4().hex[:24]}",
        "object": "dialogue.turn",
        "created": int(time.time()),
        "model": model,
        "seq": result.seq,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": result.reply}, "finish_reason": "stop"}
        ],
        "x_qwythos": result.x_qwythos,
    }


def add_routes(app: FastAPI, dialogue: Dialogue, model_name: str) -> None:
    store = dialogue.store

    @app.post("/v1/characters")
    async def create_character(http: Request):
        """A card as JSON (V1/V2/V3) or a PNG carrying it (Content-Type image/png)."""
        data = await http.body()
        if len(data) > MAX_CARD_BYTES:
            raise ApiError(413, f"card is {len(data)} bytes; the limit is {MAX_CARD_BYTES}", param="card")
        avatar = data if data.startswith(PNG) else None
        card = mapped(load_card_bytes, data, "request body")
        cid = mapped(store.add_character, owner(http), card, avatar)
        return character_view(store.get_character(owner(http), cid))

    @app.get("/v1/characters")
    async def list_characters(http: Request):
        return {"object": "list", "data": [character_view(c) for c in store.list_characters(owner(http))]}

    def character(http: Request, cid: int) -> dict:
        row = store.get_character(owner(http), cid)
        if row is None:
            raise ApiError(404, f"character {cid} not found", code="not_found")
        return row

    @app.get("/v1/characters/{cid}")
    async def get_character(cid: RowId, http: Request):
        return character_view(character(http, cid))

    @app.get("/v1/characters/{cid}/card.png")
    async def character_png(cid: RowId, http: Request):
        row = character(http, cid)
        return Response(card_to_png(row["card"], row.get("avatar_png")), media_type="image/png")

    @app.post("/v1/sessions")
    async def create_session(req: SessionRequest, http: Request):
        sid = mapped(
            dialogue.create_session, owner(http), req.character_id, req.player_name, req.events, req.settings
        )
        return session_view(http, sid)

    def session_view(http: Request, sid: int) -> dict:
        s, card, settings = mapped(dialogue.session, owner(http), sid)
        messages = store.messages(sid)
        checks = [m["meta"].get("consistency", {}) for m in messages if m["role"] == "assistant"]
        summary = store.latest_summary(sid)
        return {
            "id": sid,
            "object": "dialogue.session",
            "character_id": s["character_id"],
            "character": card.name,
            "player_name": s["player_name"],
            "parent_session": s["parent_session"],
            "forked_at_message": s["forked_at_message"],
            "settings": asdict(settings),
            "messages": len(messages),
            "state": state_view(dialogue.state(owner(http), sid)),
            "ledger": store.facts(sid),
            "recap": summary["text"] if summary else "",
            "consistency": {
                "replies_checked": len(checks),
                "contradictions": sum(len(c.get("contradictions", [])) for c in checks),
                "repaired": sum(bool(c.get("repaired")) for c in checks),
            },
        }

    @app.get("/v1/sessions")
    async def list_sessions(http: Request):
        return {"object": "list", "data": store.list_sessions(owner(http))}

    @app.get("/v1/sessions/{sid}")
    async def get_session(sid: RowId, http: Request):
        return session_view(http, sid)

    @app.get("/v1/sessions/{sid}/messages")
    async def get_messages(sid: RowId, http: Request):
        mapped(dialogue.session, owner(http), sid)
        return {"object": "list", "data": store.messages(sid)}

    @app.get("/v1/sessions/{sid}/events")
    async def get_events(sid: RowId, http: Request):
        mapped(dialogue.session, owner(http), sid)
        return {"object": "list", "data": [event_to_dict(e) for e in store.events(sid)]}

    @app.post("/v1/sessions/{sid}/events")
    async def push_events(sid: RowId, req: EventsRequest, http: Request):
        new, state = await asyncio.to_thread(mapped, dialogue.push_events, owner(http), sid, req.events)
        return {"events": [event_to_dict(e) for e in new], "state": state_view(state)}

    @app.post("/v1/sessions/{sid}/turns")
    async def turn(sid: RowId, req: TurnRequest, http: Request):
        who = owner(http)
        mapped(dialogue.session, who, sid)  # 404 before a stream starts
        if not req.stream:
            result = await asyncio.to_thread(
                mapped, dialogue.turn, who, sid, req.message, req.probe, req.trace, req.steering
            )
            return turn_body(result, model_name)
        return StreamingResponse(
            stream(dialogue, who, sid, req, model_name),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    @app.post("/v1/sessions/{sid}/fork")
    async def fork(sid: RowId, req: ForkRequest, http: Request):
        mapped(dialogue.session, owner(http), sid)
        new = mapped(store.fork, owner(http), sid, req.at_message)
        return session_view(http, new)

    @app.get("/v1/sessions/{sid}/export")
    async def export(sid: RowId, http: Request):
        mapped(dialogue.session, owner(http), sid)  # 404 for another key's
        records = mapped(store.export_session, owner(http), sid)
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        return Response(body, media_type="application/x-ndjson")

    @app.post("/v1/sessions/import")
    async def import_session(http: Request):
        text = (await http.body()).decode("utf-8", errors="replace")
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise ApiError(400, f"line {e.lineno}: not JSON ({e.msg}); send the JSONL of an export") from None
        sid = mapped(store.import_session, owner(http), records)
        return session_view(http, sid)


async def stream(dialogue: Dialogue, who: str, sid: int, req: TurnRequest, model: str):
    """SSE: one `dialogue.turn.chunk` per token (delta, pinned, gate), then the whole turn, then [DONE]."""
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()
    rid, done = f"turn-{uuid.uuid4().hex[:24]}", object()

    def on_token(ev: dict) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ev)

    def work() -> None:
        try:
            result = dialogue.turn(who, sid, req.message, req.probe, req.trace, req.steering, on_token)
            loop.call_soon_threadsafe(queue.put_nowait, ("result", result))
        except Exception as e:  # noqa: BLE001 - reported to the client as an error event
            err = api_error(e) or ApiError(500, f"internal error: {type(e).__name__}", type_="server_error")
            loop.call_soon_threadsafe(queue.put_nowait, ("error", err))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, done)

    threading.Thread(target=work, daemon=True).start()
    while (ev := await queue.get()) is not done:
        if isinstance(ev, tuple) and ev[0] == "result":
            yield f"data: {json.dumps(turn_body(ev[1], model) | {'id': rid})}\n\n"
        elif isinstance(ev, tuple):
            yield f"data: {json.dumps(ev[1].body())}\n\n"
        else:
            chunk = {"id": rid, "object": "dialogue.turn.chunk", **ev}
            yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"
