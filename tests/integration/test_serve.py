"""A real `qwythos serve` on loopback (uvicorn subprocess, tiny random model): the official openai client,
streaming and not, gear and traces, the API key, a client that disconnects, graceful shutdown, and the
terminal chat through a pty."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from serving import AUTH, KEY, Server, tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("serve"), context=1024)  # room for tool schemas


@pytest.fixture(scope="module")
def server(model_dir):
    s = Server(model_dir)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def test_openai_client_completions_chat_and_streams(client, model_dir):
    name = model_dir.name
    assert [m.id for m in client.models.list().data] == [name]
    done = client.completions.create(model=name, prompt="Tom has 3", max_tokens=8, temperature=0)
    text = done.choices[0].text
    assert done.usage.completion_tokens == len(done.choices[0].pathway_trace) > 0
    chunks = list(
        client.completions.create(
            model=name,
            prompt="Tom has 3",
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens
    msgs = [{"role": "user", "content": "Tell me a story"}]
    chat = client.chat.completions.create(
        model=name,
        messages=msgs,
        max_tokens=8,
        temperature=0,
        n=2,
        extra_body={"gear": {"mode": "force", "force": "narrative"}},
    )
    assert len(chat.choices) == 2 and chat.choices[0].message.content == chat.choices[1].message.content
    assert all(t["gate"]["narrative"] == 1.0 for t in chat.choices[0].pathway_trace)
    stream = client.chat.completions.create(
        model=name,
        messages=msgs,
        max_tokens=8,
        temperature=0,
        stream=True,
        extra_body={"gear": {"mode": "force", "force": "narrative"}},
    )
    pieces, traced = [], 0
    for c in stream:
        if c.choices:
            pieces.append(c.choices[0].delta.content or "")
            traced += len(getattr(c.choices[0], "pathway_trace", None) or [])
    assert "".join(pieces) == chat.choices[0].message.content and traced == chat.usage.completion_tokens // 2


LOOKUP = {
    "type": "object",
    "properties": {
        "tool": {"enum": ["inventory", "where_is", "can_afford"]},
        "item": {"type": "string", "maxLength": 12},
        "qty": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["tool", "item", "qty"],
    "additionalProperties": False,
}


def test_openai_client_response_format_is_grammar_constrained(client, model_dir):
    """A random model's replies still parse and validate: the grammar, not the model, makes them so."""
    import jsonschema

    name, msgs = model_dir.name, [{"role": "user", "content": "How many lamps do I have? Answer in JSON."}]
    rf = {"type": "json_schema", "json_schema": {"name": "lookup", "schema": LOOKUP, "strict": True}}
    chat = client.chat.completions.create(
        model=name, messages=msgs, max_tokens=96, temperature=1.0, seed=3, n=4, response_format=rf
    )
    for choice in chat.choices:
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), LOOKUP)
    stream = client.chat.completions.create(
        model=name, messages=msgs, max_tokens=96, temperature=0, stream=True, response_format=rf
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), LOOKUP)
    obj = client.chat.completions.create(
        model=name, messages=msgs, max_tokens=96, temperature=0, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(obj.choices[0].message.content), dict)


WHERE = {
    "type": "function",
    "function": {
        "name": "where_is",
        "description": "Where an item is",
        "parameters": {
            "type": "object",
            "properties": {"item": {"type": "string", "maxLength": 10}, "room": {"enum": ["hall", "cellar"]}},
            "required": ["item"],
            "additionalProperties": False,
        },
    },
}
GIVE = {
    "type": "function",
    "function": {
        "name": "give",
        "parameters": {
            "type": "object",
            "properties": {
                "item": {"type": "string", "maxLength": 8},
                "qty": {"type": "integer", "minimum": 1},
            },
            "required": ["item", "qty"],
            "additionalProperties": False,
        },
    },
}
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in (WHERE, GIVE)}


def valid_calls(message) -> list[str]:
    """The names of a reply's tool calls, each checked against its tool's schema."""
    import jsonschema

    for call in message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])
    return [call.function.name for call in message.tool_calls]


def test_openai_client_tool_calls_are_grammar_constrained_and_stream_as_deltas(client, model_dir):
    """A random model calls only listed tools with schema-valid arguments: the grammar makes it so."""
    name, msgs = model_dir.name, [{"role": "user", "content": "Where is my lamp?"}]
    kw = dict(model=name, messages=msgs, tools=[WHERE, GIVE], max_tokens=160)
    chat = client.chat.completions.create(**kw, tool_choice="required", temperature=1.0, seed=5, n=4)
    for choice in chat.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert valid_calls(choice.message)
    named = client.chat.completions.create(
        **kw, tool_choice={"type": "function", "function": {"name": "give"}}, temperature=1.0, seed=1, n=3
    )
    assert [valid_calls(c.message) for c in named.choices] == [["give"]] * 3
    single = client.chat.completions.create(
        **kw, tool_choice="required", parallel_tool_calls=False, temperature=1.0, seed=2, n=3
    )
    assert all(len(valid_calls(c.message)) == 1 for c in single.choices)
    auto = client.chat.completions.create(**kw, temperature=1.0, seed=4, n=4)  # tool_choice auto
    for c in auto.choices:  # text or calls, never a malformed call
        assert (c.finish_reason, c.message.content is None) in {
            ("stop", False),
            ("length", False),
            ("tool_calls", True),
        }
        assert c.message.tool_calls is None or valid_calls(c.message)

    one = dict(tool_choice="required", parallel_tool_calls=False, temperature=0)  # greedy could call forever
    whole = client.chat.completions.create(**kw, **one)
    streamed: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(**kw, **one, stream=True):
        if not chunk.choices:
            continue
        finish = chunk.choices[0].finish_reason or finish
        for tc in chunk.choices[0].delta.tool_calls or []:
            if tc.id:
                streamed[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            streamed[tc.index]["arguments"] += tc.function.arguments or ""
    assert finish == "tool_calls"
    assert [(s["name"], s["arguments"]) for s in streamed.values()] == [
        (c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls
    ]

    # the call and its result go back in the history, the OpenAI way
    call = whole.choices[0].message.tool_calls[0]
    back = msgs + [
        whole.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "in the cellar"},
    ]
    after = client.chat.completions.create(model=name, messages=back, tools=[WHERE, GIVE], max_tokens=8)
    assert after.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_openai_client_sees_4xx_errors_without_retrying(client, model_dir, server):
    import openai

    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model=model_dir.name, prompt="x", temperature=5)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="x")
    with pytest.raises(openai.BadRequestError, match="limit of 1024 tokens"):
        client.completions.create(model=model_dir.name, prompt="x", max_tokens=100_000)
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert httpx.get(server.url + "/health").status_code == 200


def test_a_body_over_the_limit_is_a_413_not_a_reset_connection(server, model_dir):
    """20 MB with a Content-Length, and a chunked body with none: the server reads and drops the rest, then
    answers 413 in the OpenAI shape (it used to close the socket mid-upload: 'connection reset')."""
    headers = {**AUTH, "Content-Type": "application/json"}
    big = b'{"model": "x", "prompt": "' + b"a" * (20 * 1024 * 1024) + b'"}'

    def chunks():
        for _ in range(80):
            yield b"a" * 65536

    for content in (big, chunks()):
        r = httpx.post(server.url + "/v1/completions", content=content, headers=headers, timeout=60)
        err = r.json()["error"]
        assert (
            r.status_code == 413 and err["code"] == "body_too_large" and "--max-body-bytes" in err["message"]
        )
    ok = {"model": model_dir.name, "prompt": "x", "max_tokens": 1}
    assert httpx.post(server.url + "/v1/completions", json=ok, headers=headers).status_code == 200


def test_a_disconnecting_client_cancels_its_generation(server, model_dir):
    before = server.metric('qwythos_finished_total{reason="abort"}')
    body = {
        "model": model_dir.name,
        "prompt": "Once upon",
        "max_tokens": 480,
        "temperature": 0,
        "n": 4,
        "stream": True,
    }
    headers = AUTH
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", server.url + "/v1/completions", json=body, headers=headers) as r,
    ):
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    # the connection is closed: all 4 choices leave the batch long before 480 tokens each
    deadline = time.time() + 20
    while server.metric('qwythos_finished_total{reason="abort"}') < before + 4 and time.time() < deadline:
        time.sleep(0.1)
    assert server.metric('qwythos_finished_total{reason="abort"}') == before + 4
    assert server.metric("qwythos_running_requests") == 0


def test_graceful_shutdown_finishes_in_flight_requests(model_dir):
    s = Server(model_dir)
    result = {}

    def ask():
        r = httpx.post(
            s.url + "/v1/completions",
            headers=AUTH,
            timeout=60,
            json={"model": model_dir.name, "prompt": "Once", "max_tokens": 300, "temperature": 0},
        )
        result["r"] = r

    t = threading.Thread(target=ask)
    t.start()
    deadline = time.time() + 20
    while s.metric("qwythos_running_requests") < 1 and time.time() < deadline:
        time.sleep(0.02)
    out = s.stop(signal.SIGTERM)
    t.join(30)
    assert s.proc.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in out, out
    r = result["r"]
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] in ("length", "stop") and r.json()["usage"]["completion_tokens"] > 0


def test_chat_through_a_pty(model_dir):
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qwythos.cli", "chat", str(model_dir), "--max-new-tokens", "5"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    out = b""

    def read_until(marker: bytes, timeout: float = 60) -> None:
        nonlocal out
        deadline = time.time() + timeout
        while marker not in out and time.time() < deadline:
            try:
                out += os.read(master, 4096)
            except OSError:
                break
        assert marker in out, out.decode(errors="replace")

    read_until(b"you> ")
    os.write(master, b"hello\n")
    read_until(b"tokens]")
    os.write(master, b"/gear narrative=+40\n")
    read_until(b"gear: narrative=+40")
    os.write(master, b"/quit\n")
    proc.wait(30)
    os.close(master)
    text = out.decode(errors="replace")
    assert "\x1b[36m■ reasoning" in text  # a terminal: coloured legend and tokens
    assert re.search(r"\[reasoning \d+% · narrative \d+% · \d+ switches · 5 tokens\]", text)
    assert proc.returncode == 0
