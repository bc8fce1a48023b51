"""Teachers answer chat requests: the local model (batched decoding) or any OpenAI-compatible endpoint.

A teacher streams (index, reply) pairs as replies arrive (a local batch at a time, or ``concurrency``
HTTP requests at a time). ``CachedTeacher`` sits in front of either: requests already in the SQLite cache
cost nothing, new ones are sent, and each reply is cached the moment it arrives. Failed requests come
back with ``error`` set (and are not cached), so the caller rejects them with a reason.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from ..files import model_files, sha256_files
from .cache import RequestCache, request_key
from .config import TeacherConfig

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int = 128
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop: list[str] = field(default_factory=list)


@dataclass
class Reply:
    text: str = ""
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None


class Teacher(Protocol):
    name: str  # identity that goes into the cache key

    def stream(self, requests: list[ChatRequest]) -> Iterator[tuple[int, Reply]]:
        """Yield (index into requests, reply) as replies arrive, in any order."""
        ...


def complete(teacher: Teacher, requests: list[ChatRequest]) -> list[Reply]:
    """All replies, in request order."""
    replies: list[Reply | None] = [None] * len(requests)
    for i, reply in teacher.stream(requests):
        replies[i] = reply
    return [r or Reply(finish_reason="error", error="no reply") for r in replies]


# ---------------------------------------------------------------- the local model


class LocalTeacher:
    """A loadable model folder (None = the embedded base, built once in $QWYTHOS_CACHE), batched decoding."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        batch_size: int = 32,
        threads: int = 0,
        dtype: str = "float32",
    ):
        import torch

        from ..inference.api import load_engine

        if threads > 0:
            torch.set_num_threads(threads)
        self.model_dir = Path(model_dir) if model_dir else embedded_model_dir()
        self.engine = load_engine(self.model_dir, dtype)
        self.batch_size = batch_size
        self.routing, _ = self.engine.routing(None, None)
        # the cache key: config, tokenizer, the base's verified sha256 (in qwythos.json) and the trained
        # weights, so a retrained model never gets the old one's replies; another dtype is another teacher
        digest = sha256_files(model_files(self.model_dir))
        suffix = "" if dtype == "float32" else f":{dtype}"
        self.name = f"local:{self.model_dir.name}:{digest[:16]}{suffix}"

    def stream(self, requests: list[ChatRequest]) -> Iterator[tuple[int, Reply]]:
        from ..inference.engine import Request
        from ..inference.sampling import SamplingParams

        encoded = [self.engine.encode_chat(r.messages) for r in requests]
        todo = []
        for i, (r, ids) in enumerate(zip(requests, encoded, strict=True)):
            if len(ids) + r.max_tokens > self.engine.max_len:  # reject this one, not its whole batch
                error = (
                    f"prompt ({len(ids)} tokens) + max_tokens ({r.max_tokens}) exceeds the "
                    f"teacher's context ({self.engine.max_len})"
                )
                yield i, Reply(finish_reason="error", error=error)
            else:
                todo.append(i)
        # similar budgets and lengths decode together: less padding; finished rows are refilled at once
        order = sorted(todo, key=lambda i: (requests[i].max_tokens, len(encoded[i])))
        ordered = [
            Request(
                encoded[i],
                SamplingParams(
                    max_new_tokens=requests[i].max_tokens,
                    temperature=requests[i].temperature,
                    top_p=requests[i].top_p,
                    top_k=requests[i].top_k,
                    seed=requests[i].seed,
                    stop=list(requests[i].stop),
                ),
            )
            for i in order
        ]
        for k, c in self.engine.stream(ordered, self.routing, trace=False, max_batch=self.batch_size):
            yield order[k], Reply(c.text.strip(), c.finish_reason, c.prompt_tokens, len(c.token_ids))


def embedded_model_dir() -> Path:
    """A pathway folder on the embedded base (LoRAs zero: it generates exactly like the base)."""
    from ..model.api import init_model
    from ..model.base import cache_dir

    folder = cache_dir() / "synth" / "embedded-teacher"
    if not (folder / "qwythos.json").is_file():
        log.info("building the embedded teacher model in %s (once)", folder)
        init_model(out=folder)
    return folder


# ---------------------------------------------------------------- any OpenAI-compatible endpoint


class OpenAITeacher:
    """POST /chat/completions with retries (exponential backoff), per-request timeout, a concurrency limit."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        concurrency: int = 8,
    ):
        import httpx

        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.max_retries, self.backoff_s = model, max_retries, backoff_s
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            timeout=timeout_s, headers=headers, limits=httpx.Limits(max_connections=concurrency)
        )
        self.name = f"openai:{base_url.rstrip('/')}:{model}"

    def body(self, r: ChatRequest) -> dict:
        body = {
            "model": self.model,
            "messages": r.messages,
            "max_tokens": r.max_tokens,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "seed": r.seed,
            "n": 1,
        }
        if r.top_k > 0:
            body["top_k"] = r.top_k
        if r.stop:
            body["stop"] = r.stop
        return body

    def send(self, r: ChatRequest) -> Reply:
        import httpx

        error, error_delay = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(error_delay)
            try:
                resp = self.client.post(self.url, json=self.body(r))
            except httpx.HTTPError as e:  # timeouts and connection errors
                error = f"{type(e).__name__}: {e}"
                error_delay = self.backoff_s * 2**attempt * (1 + 0.1 * random.random())
                continue
            if resp.status_code == 200:
                return parse_chat_response(resp.json())
            error = f"HTTP {resp.status_code}: {resp.text[:200]}"
            if resp.status_code not in RETRY_STATUS:
                break
            retry_after = resp.headers.get("retry-after", "")
            error_delay = (
                min(float(retry_after), 60.0)
                if retry_after.replace(".", "", 1).isdigit()
                else self.backoff_s * 2**attempt * (1 + 0.1 * random.random())
            )
        return Reply(finish_reason="error", error=f"{self.url}: {error}")

    def stream(self, requests: list[ChatRequest]) -> Iterator[tuple[int, Reply]]:
        """``concurrency`` requests in flight; replies are yielded on the calling thread as they arrive."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self.send, r): i for i, r in enumerate(requests)}
            for f in as_completed(futures):
                yield futures[f], f.result()


def parse_chat_response(data: dict) -> Reply:
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        return Reply(finish_reason="error", error=f"malformed chat completion: {str(data)[:200]}")
    usage = data.get("usage") or {}
    return Reply(
        text.strip(),
        choice.get("finish_reason") or "stop",
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )


# ---------------------------------------------------------------- the cache in front of either


class CachedTeacher:
    def __init__(self, teacher: Teacher, cache: RequestCache):
        self.teacher, self.cache = teacher, cache
        self.stats = {"requests": 0, "cached": 0, "paid": 0, "errors": 0}
        self.tokens = {"prompt": 0, "completion": 0, "paid_prompt": 0, "paid_completion": 0}

    def complete(
        self, requests: list[ChatRequest], progress: Callable[[int], None] | None = None
    ) -> list[Reply]:
        progress = progress or (lambda n: None)
        keys = [request_key(self.teacher.name, asdict(r)) for r in requests]
        replies: list[Reply | None] = [None] * len(requests)
        todo = []
        for i, key in enumerate(keys):
            hit = self.cache.get(key)
            if hit is not None:
                replies[i] = Reply(**{**hit, "cached": True})
            else:
                todo.append(i)
        progress(len(requests) - len(todo))
        seen: dict[str, int] = {}  # identical requests within one call are paid once
        unique = [i for i in todo if seen.setdefault(keys[i], i) == i]

        for j, reply in self.teacher.stream([requests[i] for i in unique]):
            i = unique[j]
            replies[i] = reply
            if reply.error is None:  # cached the moment it arrives; errors are retried by the next run
                self.cache.put(keys[i], {k: v for k, v in asdict(reply).items() if k != "cached"})
            self.stats["paid"] += 1
            self.stats["errors"] += reply.error is not None
            self.tokens["paid_prompt"] += reply.prompt_tokens
            self.tokens["paid_completion"] += reply.completion_tokens
            progress(1)
        for i in todo:
            if replies[i] is None:
                replies[i] = replies[seen[keys[i]]]
                progress(1)
        out = [r or Reply(finish_reason="error", error="no reply") for r in replies]
        self.stats["requests"] += len(out)
        self.stats["cached"] += len(requests) - len(todo)
        for r in out:
            self.tokens["prompt"] += r.prompt_tokens
            self.tokens["completion"] += r.completion_tokens
        return out


def make_teacher(cfg: TeacherConfig) -> Teacher:
    if cfg.kind == "local":
        return LocalTeacher(cfg.model_dir, cfg.batch_size, cfg.threads, cfg.dtype)
    base_url = cfg.base_url or os.environ.get("QWYTHOS_TEACHER_BASE_URL")
    model = cfg.model or os.environ.get("QWYTHOS_TEACHER_MODEL")
    if not base_url or not model:
        raise ValueError(
            "teacher.kind=openai needs teacher.base_url and teacher.model "
            "(or $QWYTHOS_TEACHER_BASE_URL and $QWYTHOS_TEACHER_MODEL), e.g. http://127.0.0.1:8000/v1"
        )
    key = cfg.api_key or os.environ.get("QWYTHOS_TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY")
    return OpenAITeacher(base_url, model, key, cfg.timeout_s, cfg.max_retries, cfg.backoff_s, cfg.concurrency)
