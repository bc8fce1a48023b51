"""The dialogue engine over HTTP on a real `qwythos serve` process: a PNG card in, a session with a state,
turns plain and streamed, events checked, fork, export/import; per-key isolation with --api-keys; one turn
at a time per session (409); and SIGKILL mid-conversation loses nothing that was acknowledged."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from qwythos.dialogue.cards import card_to_png, parse_card
from serving import AUTH, Server, tiny_model_dir

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Mira",
        "description": "{{char}} keeps a lamp shop and greets {{user}}.",
        "character_book": {
            "entries": [{"keys": ["road"], "content": "The road is haunted.", "insertion_order": 1}]
        },
        "extensions": {"studio": {"mood": "wry"}},
    },
}
EVENTS = [
    {"type": "inventory.add", "item": "gold", "qty": 12},
    {"type": "set", "key": "price.lamp", "value": 7},
]
K2 = {"Authorization": "Bearer second-key"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("dlg"))


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("srv")
    (root / "keys.txt").write_text("# owners and keys\nalice first-key\nbob second-key\n")
    s = Server(model, "--db", str(root / "d.sqlite"), "--api-keys", str(root / "keys.txt"))
    yield s
    s.stop()


def post(server, path, headers=AUTH, **kw):
    return httpx.post(server.url + path, headers=headers, timeout=60, **kw)


def new_session(server, headers=AUTH, **settings) -> int:
    png = card_to_png(parse_card(CARD))
    c = post(server, "/v1/characters", headers={**headers, "Content-Type": "image/png"}, content=png)
    assert c.status_code == 200, c.text
    body = {"character_id": c.json()["id"], "player_name": "Arin", "events": EVENTS, "settings": settings}
    s = post(server, "/v1/sessions", headers=headers, json=body)
    assert s.status_code == 200, s.text
    return s.json()["id"]


def test_a_conversation_over_http(server):
    sid = new_session(server, reply_tokens=6, lead_tokens=2)
    r = post(server, f"/v1/sessions/{sid}/turns", json={"message": "How much gold do I have?", "trace": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "You have 12 gold." in body["choices"][0]["message"]["content"] and body["seq"] == 2
    x = body["x_qwythos"]
    assert set(x) == {"context", "grounding", "consistency", "gear", "voice"}
    assert x["grounding"]["verified_facts"][0]["source_event"] == 1 and x["gear"]["trace"]

    bad = post(
        server,
        f"/v1/sessions/{sid}/events",
        json={"events": [{"type": "inventory.remove", "item": "gold", "qty": 99}]},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "events[0].qty"
    ok = post(
        server,
        f"/v1/sessions/{sid}/events",
        json={"events": [{"type": "inventory.remove", "item": "gold", "qty": 5}]},
    )
    assert ok.status_code == 200 and ok.json()["state"]["inventory"] == {"gold": 7}

    with httpx.stream(
        "POST",
        server.url + f"/v1/sessions/{sid}/turns",
        headers=AUTH,
        timeout=60,
        json={"message": "And now, how much gold?", "stream": True},
    ) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    chunks = [e for e in events if e["object"] == "dialogue.turn.chunk"]
    final = events[-1]
    assert (
        final["object"] == "dialogue.turn" and "You have 7 gold." in final["choices"][0]["message"]["content"]
    )
    assert "".join(c.get("delta", "") for c in chunks if not c.get("restart")).strip()
    assert any(c["pinned"] for c in chunks if "pinned" in c)

    session = httpx.get(server.url + f"/v1/sessions/{sid}", headers=AUTH).json()
    assert session["messages"] == 4 and session["consistency"]["replies_checked"] == 2
    fork = post(server, f"/v1/sessions/{sid}/fork", json={"at_message": 2}).json()  # events before message 3
    assert (
        fork["messages"] == 2 and fork["parent_session"] == sid and fork["state"]["inventory"] == {"gold": 7}
    )
    exported = httpx.get(server.url + f"/v1/sessions/{sid}/export", headers=AUTH).text
    again = post(server, "/v1/sessions/import", content=exported.encode())
    assert again.status_code == 200 and again.json()["messages"] == 4
    card = httpx.get(server.url + f"/v1/characters/{session['character_id']}", headers=AUTH).json()
    assert card["card"]["data"]["extensions"] == {"studio": {"mood": "wry"}}  # unknown extensions survive
    broken = post(
        server,
        "/v1/characters",
        headers={**AUTH, "Content-Type": "image/png"},
        content=b"\x89PNG\r\n\x1a\nxx",
    )
    assert broken.status_code == 400 and broken.json()["error"]["message"]


def test_another_keys_session_is_a_404(server):
    sid = new_session(server, headers={"Authorization": "Bearer first-key"})
    for path in (f"/v1/sessions/{sid}", f"/v1/sessions/{sid}/export", f"/v1/sessions/{sid}/messages"):
        r = httpx.get(server.url + path, headers=K2)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert post(server, f"/v1/sessions/{sid}/turns", headers=K2, json={"message": "hi"}).status_code == 404
    assert httpx.get(server.url + "/v1/characters", headers=K2).json()["data"] == []
    assert (
        httpx.get(server.url + "/v1/sessions/1", headers={"Authorization": "Bearer nope"}).status_code == 401
    )


def test_two_turns_on_one_session_never_interleave(server):
    sid = new_session(server, reply_tokens=400, lead_tokens=0, seed=1)
    results = {}

    def turn(name):
        results[name] = post(
            server, f"/v1/sessions/{sid}/turns", json={"message": f"Tell me a long tale {name}."}
        )

    first = threading.Thread(target=turn, args=("a",))
    first.start()
    time.sleep(0.3)
    turn("b")
    first.join()
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 409], codes
    assert results["b"].json()["error"]["code"] == "session_busy"
    messages = httpx.get(server.url + f"/v1/sessions/{sid}/messages", headers=AUTH).json()["data"]
    assert [m["role"] for m in messages] == ["user", "assistant"] and "tale a" in messages[0]["content"]


def test_sigkill_loses_nothing_acknowledged(model, tmp_path):
    db = tmp_path / "d.sqlite"
    s = Server(model, "--db", str(db))
    sid = new_session(s, reply_tokens=4, lead_tokens=0)
    acknowledged = 0
    for i in range(5):
        assert post(s, f"/v1/sessions/{sid}/turns", json={"message": f"Turn {i}, friend."}).status_code == 200
        acknowledged += 2
        assert (
            post(
                s, f"/v1/sessions/{sid}/events", json={"events": [{"type": "happening", "text": f"bell {i}"}]}
            ).status_code
            == 200
        )
    s.stop(signal.SIGKILL)
    again = Server(model, "--db", str(db))
    try:
        body = httpx.get(again.url + f"/v1/sessions/{sid}", headers=AUTH).json()
        assert body["messages"] == acknowledged and body["state"]["happenings"] == [
            f"bell {i}" for i in range(5)
        ]
        assert post(again, f"/v1/sessions/{sid}/turns", json={"message": "Still there?"}).json()["seq"] == 12
    finally:
        again.stop()
