"""The OpenAI-compatible teacher against a real HTTP server on loopback, and resuming a killed run.

``ChatServer`` is a small real server (http.server, in a thread) that speaks the chat-completions JSON:
it writes solutions for the worked-examples prompts, stories that mention the asked-for word, judge
scores; it can fail, stall or hold requests, and it logs every request it answered.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qwythos.synth.cache import RequestCache
from qwythos.synth.run import synth
from qwythos.synth.teachers import CachedTeacher, ChatRequest, OpenAITeacher, complete

WORDS = (
    "river lantern quiet storm harbour silver morning whisper garden mountain bright ancient gentle "
    "shadow window laughter bridge meadow candle journey secret letter golden forest winter ember"
).split()


def reply_for(body: dict) -> str:
    """Deterministic answers: right sums for '+' problems, wrong for '-' ones, varied stories."""
    prompt = body["messages"][-1]["content"]
    rng = random.Random(json.dumps(body, sort_keys=True))
    if prompt.startswith("Rate the following"):
        return "8"
    if prompt.rstrip().endswith("Solution:"):
        question = prompt.rsplit("Problem:", 1)[1]
        a, b = map(int, re.findall(r"\d+", question)[:2])
        if "unsure" in question:  # a different answer for every seed: no majority
            return f"Maybe {a} + {b} = {a + b}, or not.\n#### {rng.randint(100, 999)}"
        if "gets" in question:
            return f"We add: {a} + {b} = {a + b}.\n#### {a + b}"
        return f"I think it is {a + b}.\n#### {a + b}"  # wrong for anything but a sum
    word = re.search(r"[Mm]ention a (\w+)", prompt)
    sentences = []
    for _ in range(6):
        sentences.append(" ".join(rng.sample(WORDS, 7)).capitalize() + ".")
    if word:
        sentences.insert(1, f"There was a {word.group(1)} on the table.")
    name = re.search(r": ([A-Z][a-z]+) the [a-z]+", prompt)  # a mixed story's hero
    if name:
        sentences.insert(0, f"{name.group(1)} looked around.")
    return " ".join(sentences)


class ChatServer:
    def __init__(self, api_key: str | None = None):
        self.api_key = api_key
        self.log: list[str] = []  # key of every request answered
        self.attempts = 0
        self.fail: list[int] = []  # status codes to answer the next requests with
        self.delay_s = 0.0
        self.hold_after: int | None = None  # hold every request after this many answers ...
        self.release = threading.Event()  # ... until this is set
        self.in_flight = self.max_in_flight = 0
        self.admitted = 0  # requests let through, counted on arrival (two at once cannot both slip past)
        self.auth: set[str] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.attempts += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.auth.add(self.headers.get("Authorization", ""))
                    status = server.fail.pop(0) if server.fail else 200
                    hold = server.hold_after is not None and server.admitted >= server.hold_after
                    server.admitted += not hold
                try:
                    if hold:
                        server.release.wait(30)
                        return  # the client was killed while this request was in flight
                    time.sleep(server.delay_s)
                    if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                        status = 401
                    if self.path != "/v1/chat/completions":
                        status = 404
                    if status != 200:
                        self.send_json(status, {"error": {"message": "nope", "type": "test", "code": status}})
                        return
                    text = reply_for(body)
                    with server.lock:
                        server.log.append(
                            hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
                        )
                    self.send_json(
                        200,
                        {
                            "id": "chatcmpl-1",
                            "object": "chat.completion",
                            "model": body["model"],
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {"prompt_tokens": 11, "completion_tokens": len(text.split())},
                        },
                    )
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def send_json(self, status: int, data: dict) -> None:
                raw = json.dumps(data).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def requests(n: int) -> list[ChatRequest]:
    return [
        ChatRequest([{"role": "user", "content": f"Write about a fox. Mention a key. ({i})"}], seed=i)
        for i in range(n)
    ]


def test_replies_usage_auth_and_the_concurrency_limit():
    with ChatServer(api_key="sekret") as server:
        server.delay_s = 0.05
        teacher = OpenAITeacher(server.url, "stub", api_key="sekret", concurrency=3)
        replies = complete(teacher, requests(12))
    assert all(r.error is None and "key" in r.text for r in replies)
    assert [r.completion_tokens for r in replies] == [len(r.text.split()) for r in replies]
    assert 1 < server.max_in_flight <= 3
    assert server.auth == {"Bearer sekret"}


def test_retries_with_backoff_on_429_and_5xx_but_not_on_4xx():
    with ChatServer() as server:
        server.fail = [429, 503, 500]
        teacher = OpenAITeacher(server.url, "stub", max_retries=3, backoff_s=0.01, concurrency=1)
        (reply,) = complete(teacher, requests(1))
        assert reply.error is None and server.attempts == 4
        server.fail = [400]
        (bad,) = complete(teacher, requests(1))
        assert server.attempts == 5  # a bad request is not retried
        assert bad.finish_reason == "error" and "HTTP 400" in bad.error


def test_a_request_that_times_out_is_an_error_not_a_crash():
    with ChatServer() as server:
        server.delay_s = 1.0
        teacher = OpenAITeacher(server.url, "stub", timeout_s=0.2, max_retries=1, backoff_s=0.0)
        start = time.time()
        (reply,) = complete(teacher, requests(1))
    assert reply.error is not None and "Timeout" in reply.error
    assert server.attempts == 2 and time.time() - start < 1.5


def test_cached_requests_are_not_sent_again(tmp_path):
    with ChatServer() as server:
        cached = CachedTeacher(OpenAITeacher(server.url, "stub"), RequestCache(tmp_path / "c.sqlite"))
        first = cached.complete(requests(5) + requests(2))  # the last two repeat: paid once
        assert len(server.log) == 5 and cached.stats["paid"] == 5
        again = cached.complete(requests(5))
    assert len(server.log) == 5 and all(r.cached for r in again)
    assert [r.text for r in again] == [r.text for r in first[:5]]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_synth_end_to_end_through_the_endpoint(tmp_path, monkeypatch):
    with ChatServer(api_key="k") as server:
        monkeypatch.setenv("QWYTHOS_TEACHER_BASE_URL", server.url)
        monkeypatch.setenv("QWYTHOS_TEACHER_API_KEY", "k")
        overrides = [
            "teacher.kind=openai",
            "teacher.model=stub",
            "tasks.narrative=4",
            "tasks.roleplay=2",
            "tasks.mixed_story=6",
            "tasks.mixed_gm=2",
            "select.n=2",
            "select.k=2",
            "score.coherence=false",
            "score.judge=true",
            "score.min_words=10",
        ]
        report = json.loads(synth(tmp_path / "run", overrides=overrides).read_text())
    records = read_jsonl(tmp_path / "run" / "records.jsonl")
    rejects = read_jsonl(tmp_path / "run" / "rejects.jsonl")
    assert report["accepted"] == len(records) and report["rejected"] == len(rejects)
    assert report["tasks"] == 14 and report["requests"]["paid"] == len(server.log)
    # the stub solves sums and fails differences and products: those mixed tasks are rejected as wrong
    assert report["rejected_by_reason"].get("wrong_answer", 0) >= 1
    assert all(r["reason"] == "wrong_answer" for r in rejects)
    assert report["by_kind"]["roleplay"]["accepted"] == 2
    for r in records:
        assert r["messages"][-1]["role"] == "assistant" and r["pathway"] in ("narrative", "mixed")
        for s in r["spans"]:
            content = r["messages"][s["message"]]["content"]
            assert r["messages"][s["message"]]["role"] == "assistant" and 0 <= s["start"] < s["end"] <= len(
                content
            )
        if r["pathway"] == "mixed":
            (span,) = [s for s in r["spans"] if s["pathway"] == "reasoning"]
            text = r["messages"][span["message"]]["content"][span["start"] : span["end"]]
            assert f"= {r['meta']['reference']}" in text
    roleplay = [r for r in records if r["meta"]["kind"] == "roleplay"]
    assert [m["role"] for m in roleplay[0]["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]


def test_reasoning_with_and_without_references(tmp_path, monkeypatch):
    """With a reference the answer must match it; without one, a majority of the k samples must agree."""
    problems = [
        {"question": "Ann has 3 pens and gets 4 more. How many pens?", "answer": 7},
        {"question": "Ann has 3 pens and gives away 2. How many pens?", "answer": 1},  # the stub says 5
        {"question": "Bo has 10 cups and gets 5 more. How many cups?"},  # consistent: consensus on 15
        {"question": "Bo is unsure: 2 cups and 6 plates?"},  # a different answer each time
    ]
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in problems))
    with ChatServer() as server:
        monkeypatch.setenv("QWYTHOS_TEACHER_BASE_URL", server.url)
        overrides = ["teacher.kind=openai", "teacher.model=stub", "tasks.reasoning=4", "select.k=3"]
        report = json.loads(
            synth(tmp_path / "run", overrides=[*overrides, f"tasks.reasoning_source={path}"]).read_text()
        )
    records = {r["id"].rsplit("-", 1)[1]: r for r in read_jsonl(tmp_path / "run" / "records.jsonl")}
    assert sorted(records) == ["0", "2"]
    assert records["0"]["messages"][-1]["content"].endswith("#### 7")
    assert records["2"]["messages"][-1]["content"].endswith("#### 15")
    assert records["2"]["spans"] == [
        {"message": 1, "start": 0, "end": len(records["2"]["messages"][1]["content"]), "pathway": "reasoning"}
    ]
    assert report["rejected_by_reason"] == {"wrong_answer": 1, "no_consensus": 1}


def test_an_interrupted_run_resumes_without_paying_twice(tmp_path):
    """Kill the CLI mid-run (SIGKILL), rerun the same command: answered requests are never sent again."""
    out = tmp_path / "run"
    with ChatServer() as server:
        server.hold_after = 7  # answer 7 requests, then hold the rest until the client is gone
        cmd = [
            sys.executable, "-m", "qwythos.cli", "synth", "--out", str(out),
            "teacher.kind=openai", f"teacher.base_url={server.url}", "teacher.model=stub",
            "teacher.concurrency=2", "tasks.narrative=6", "tasks.mixed_gm=2", "select.n=2", "select.k=2",
            "score.coherence=false", "score.min_words=10",
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and cached_rows(out / "cache.sqlite") < 7:
            time.sleep(0.05)
        time.sleep(0.2)
        assert server.in_flight == 2  # two requests were in flight when the run died
        first.kill()
        first.wait()
        answered_before = list(server.log)
        assert len(answered_before) == 7 and cached_rows(out / "cache.sqlite") == 7
        server.hold_after = None
        server.release.set()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    resumed = server.log[7:]
    assert not set(answered_before) & set(resumed)  # nothing answered before was paid for again
    assert len(resumed) == len(set(resumed))
    report = json.loads((out / "report.json").read_text())
    assert report["requests"]["cached"] == 7 and report["requests"]["paid"] == len(resumed)
    assert report["requests"]["requests"] == 6 * 2 + 2 * (2 + 2)


def cached_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("missing", ["base_url", "model"])
def test_openai_teacher_without_an_endpoint_names_the_fix(tmp_path, monkeypatch, missing):
    monkeypatch.delenv("QWYTHOS_TEACHER_BASE_URL", raising=False)
    monkeypatch.delenv("QWYTHOS_TEACHER_MODEL", raising=False)
    given = {"base_url": "teacher.base_url=http://127.0.0.1:9/v1", "model": "teacher.model=m"}
    overrides = ["teacher.kind=openai", "tasks.narrative=1"] + [v for k, v in given.items() if k != missing]
    with pytest.raises(ValueError, match="QWYTHOS_TEACHER_BASE_URL"):
        synth(tmp_path / "run", overrides=overrides)
