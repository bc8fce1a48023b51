"""What the routes do: turn validated OpenAI requests into engine jobs, await or stream them, shape replies.

The scheduler decodes in its own thread; results come back to the event loop through
``loop.call_soon_threadsafe``. A client that disconnects cancels its jobs (they leave the batch at the next
step). Bad input raises ``ApiError`` with a 4xx status before anything is queued.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import lru_cache

from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import StreamingResponse

from ..inference.constrain import GrammarConstraint
from ..inference.engine import Completion, Engine, Request, TokenEvent
from ..inference.sampling import GearSampling, PathwaySampling, SamplingParams
from ..inference.scheduler import Job, QueueFull, Scheduler
from ..model.block import Routing
from . import protocol as P
from . import tools as T
from .metrics import Metrics


@dataclass
class ServeSettings:
    model_name: str  # the id clients send as "model" (default: the model folder's name)
    api_key: str | None = None  # bearer key required on every route but /health (its owner: "default")
    api_keys: dict[str, str] = field(default_factory=dict)  # more keys: key -> owner (--api-keys FILE)
    db: str | None = None  # the dialogue engine's SQLite file (None: no dialogue routes)
    recall: str = "auto"  # the dialogue engine's recall of old turns: auto | minilm | lexical
    max_batch: int = 8  # requests decoded together
    max_queue: int = 64  # requests waiting for a batch slot before 429
    max_prompt_tokens: int | None = None  # default: the model's context
    max_total_tokens: int | None = None  # prompt + generated; default: the model's context
    default_max_tokens: int = 512  # chat replies without max_tokens (bounded by the context)
    max_body_bytes: int = 4 * 1024 * 1024  # larger request bodies get 413


class ApiError(HTTPException):
    """A 4xx/5xx answer in the OpenAI error shape. An HTTPException, so FastAPI passes it through even when it
    is raised while the body is read (the body-size guard's limited receive)."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(status, message, headers)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return P.error_body(self.message, self.type, self.param, self.code)


class CancellingStream(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends (finished, error or disconnect)."""

    def __init__(self, content, on_close: Callable[[], None]):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


class Service:
    def __init__(self, engine: Engine, scheduler: Scheduler, settings: ServeSettings, metrics: Metrics):
        self.engine, self.scheduler, self.settings, self.metrics = engine, scheduler, settings, metrics
        self.max_total = min(settings.max_total_tokens or engine.max_len, engine.max_len)
        self.max_prompt = min(settings.max_prompt_tokens or self.max_total, self.max_total)
        self.token_text = lru_cache(maxsize=65536)(
            lambda tid: engine.tokenizer.decode([tid], skip_special_tokens=False)
        )

    # ------------------------------------------------------------ checks

    def check_model(self, name: str) -> None:
        if name != self.settings.model_name:
            raise ApiError(
                404,
                f"model {name!r} does not exist; this server serves {self.settings.model_name!r} "
                "(see GET /v1/models)",
                param="model",
                code="model_not_found",
            )

    def routing(self, gear: P.Gear | None) -> tuple[Routing, list[float]]:
        try:
            return self.engine.routing(gear.routing_mode() if gear else None, gear.bias if gear else None)
        except ValueError as e:
            raise ApiError(400, str(e).replace("--mode", "gear.mode"), param="gear") from None

    def gear_sampling(self, gear: P.Gear | None) -> GearSampling | None:
        """The request's ``gear.sampling`` for this model (400 naming the field for an unknown pathway)."""
        if gear is None or gear.sampling is None:
            return None
        per = {
            p: PathwaySampling(s.temperature, s.top_p, s.top_k) for p, s in gear.sampling.per_pathway.items()
        }
        gs = GearSampling(per, gear.sampling.policy)
        try:
            gs.check(self.engine.pathways)
        except ValueError as e:
            raise ApiError(400, f"gear.sampling: {e}", param="gear.sampling") from None
        return gs

    def check_lengths(self, ids: list[int], max_tokens: int) -> None:
        if not ids:
            raise ApiError(400, "prompt is empty: send at least one token", param="prompt")
        if len(ids) > self.max_prompt:
            raise ApiError(
                413,
                f"prompt has {len(ids)} tokens; this server accepts at most {self.max_prompt} "
                "(shorten the prompt)",
                param="prompt",
                code="prompt_too_long",
            )
        if len(ids) + max_tokens > self.max_total:
            raise ApiError(
                400,
                f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds this server's limit of "
                f"{self.max_total} tokens; lower max_tokens or shorten the prompt",
                param="max_tokens",
                code="context_length_exceeded",
            )
        if min(ids) < 0 or max(ids) >= self.engine.vocab_size:
            raise ApiError(400, f"prompt token ids must be in [0, {self.engine.vocab_size})", param="prompt")

    def params(self, req: P.SamplingFields, max_tokens: int, index: int, **logprobs) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=max(req.top_k, 0),
            repetition_penalty=req.repetition_penalty,
            stop=list(req.stop or []),
            seed=None if req.seed is None else req.seed + index,  # n > 1: different but reproducible
            ignore_eos=req.ignore_eos,
            **logprobs,
        )

    def prompts(self, prompt) -> list[tuple[list[int], str | None]]:
        """A completions prompt as [(token ids, original text or None)]."""
        if isinstance(prompt, str):
            prompt = [prompt]
        elif prompt and isinstance(prompt[0], int):
            prompt = [prompt]
        tok = self.engine.tokenizer
        return [(tok.encode(p), p) if isinstance(p, str) else (list(p), None) for p in prompt]

    # ------------------------------------------------------------ running jobs

    def submit(self, jobs: list[Job]) -> None:
        try:
            self.scheduler.submit(jobs)
        except QueueFull as e:
            wait = math.ceil(max(1.0, self.scheduler.waiting / max(self.settings.max_batch, 1)))
            raise ApiError(
                429,
                f"the server is busy ({e}); retry after {wait} s",
                type_="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(wait)},
            ) from None
        except RuntimeError as e:
            raise ApiError(503, str(e), type_="server_error", code="shutting_down") from None
        except ValueError as e:
            raise ApiError(400, str(e), param="prompt") from None

    async def run(self, jobs: list[Job], http: HttpRequest) -> list[Completion]:
        """Queue the jobs and wait for all; a client that goes away cancels them."""
        loop = asyncio.get_running_loop()
        futures = []
        for j in jobs:
            f = loop.create_future()
            j.on_done = lambda job, f=f: (self.record(job), loop.call_soon_threadsafe(_resolve, f))
            futures.append(f)
        self.submit(jobs)
        try:
            pending = set(futures)
            while pending:
                _, pending = await asyncio.wait(pending, timeout=0.25)
                if pending and await http.is_disconnected():
                    break
        finally:
            for j in jobs:
                j.cancel()  # no-op for finished jobs; stops the rest (client gone or task cancelled)
        for j in jobs:
            if not j.done.is_set():
                raise ApiError(499, "client closed the request", code="client_closed")
            if j.error is not None:
                raise ApiError(500, f"generation failed: {j.error}", type_="server_error")
        return [j.completion for j in jobs]

    def stream(self, jobs: list[Job]) -> Callable[[], AsyncIterator[tuple[int, TokenEvent | Job]]]:
        """Queue the jobs now (so 429/400 can still be answered); iterate (job index, event or done job)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        for i, j in enumerate(jobs):
            j.request.on_event = lambda ev, i=i: loop.call_soon_threadsafe(queue.put_nowait, (i, ev))
            j.on_done = lambda job, i=i: (
                self.record(job),
                loop.call_soon_threadsafe(queue.put_nowait, (i, job)),
            )
        self.submit(jobs)

        async def events() -> AsyncIterator[tuple[int, TokenEvent | Job]]:
            remaining = len(jobs)
            while remaining:
                i, item = await queue.get()
                if isinstance(item, Job):
                    remaining -= 1
                yield i, item

        return events

    def record(self, job: Job) -> None:
        """Metrics for one finished job (called in the decoding thread, cancelled jobs included)."""
        c = job.completion
        if c is None:
            return
        ttft = None if job.first_token is None else job.first_token - job.submitted
        gates = c.gates.float().mean(1) if c.gates is not None and c.gates.numel() else None
        self.metrics.generation(c.prompt_tokens, len(c.token_ids), ttft, gates, c.finish_reason)

    # ------------------------------------------------------------ shaping replies

    def trace(self, token_ids: list[int], pieces: list[str], gates) -> list[dict]:
        per_token = gates.float().mean(1).tolist() if gates is not None and gates.numel() else []
        return [
            P.trace_entry(
                t,
                pieces[i] if i < len(pieces) else "",
                per_token[i] if i < len(per_token) else None,
                self.engine.pathways,
            )
            for i, t in enumerate(token_ids)
        ]

    def tops(self, top: list[tuple[int, float]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for t, lp in top:
            out.setdefault(self.token_text(t), lp)
        return out

    def usage(self, jobs: list[Job], n: int) -> dict:
        prompt = sum(len(j.request.prompt_ids) for j in jobs[::n])
        return P.usage(prompt, sum(len(j.completion.token_ids) for j in jobs if j.completion))


def _resolve(f: asyncio.Future) -> None:
    if not f.done():
        f.set_result(None)


# ---------------------------------------------------------------- /v1/completions


async def completions(svc: Service, req: P.CompletionRequest, http: HttpRequest):
    svc.check_model(req.model)
    routing, bias = svc.routing(req.gear)
    gs = svc.gear_sampling(req.gear)
    prompts = svc.prompts(req.prompt)
    max_tokens = 16 if req.max_tokens is None else req.max_tokens
    if max_tokens == 0 and not req.echo:
        raise ApiError(
            400, "max_tokens=0 returns nothing unless echo=true (to score a prompt)", param="max_tokens"
        )
    k = req.logprobs
    jobs = []
    for ids, _ in prompts:
        svc.check_lengths(ids, max_tokens)
        for i in range(req.n):
            prompt_lp = k if (req.echo and k is not None) else None
            params = svc.params(req, max_tokens, i, logprobs=k, prompt_logprobs=prompt_lp)
            jobs.append(Job(Request(ids, params, gear_bias=bias, gear_sampling=gs), routing))
    texts = [text if text is not None else svc.engine.tokenizer.decode(ids) for ids, text in prompts]
    rid, created = P.new_id("cmpl"), P.now()

    def head(k_: int, c: Completion | None) -> dict:
        """The echoed prompt part of choice k_ (text and prompt logprobs)."""
        ids = jobs[k_].request.prompt_ids
        if k is None:
            return {"text": texts[k_ // req.n], "logprobs": None}
        plp = c.prompt_logprobs if c is not None else None
        tokens = [svc.token_text(t) for t in ids]
        lps = [None] + [x.logprob for x in plp[1:]] if plp else [None] * len(ids)
        tops = [None] + [svc.tops(x.top) for x in plp[1:]] if plp else [None] * len(ids)
        return {"text": texts[k_ // req.n], "logprobs": (tokens, lps, tops)}

    def tail(c: Completion) -> tuple[list[str], list, list]:
        lps = c.logprobs or []
        return (
            [svc.token_text(x.token_id) for x in lps],
            [x.logprob for x in lps],
            [svc.tops(x.top) for x in lps],
        )

    if not req.stream:
        done = await svc.run(jobs, http)
        choices = []
        for k_, c in enumerate(done):
            text, logprobs = c.text, None
            if req.echo:
                h = head(k_, c)
                text = h["text"] + text
            if k is not None:
                toks, lps, tops = tail(c)
                offset = 0
                if req.echo:
                    toks, lps, tops = h["logprobs"][0] + toks, h["logprobs"][1] + lps, h["logprobs"][2] + tops
                logprobs = P.legacy_logprobs(toks, lps, tops, offset)
            choice = {"index": k_, "text": text, "logprobs": logprobs, "finish_reason": c.finish_reason}
            if req.pathway_trace:
                choice["pathway_trace"] = svc.trace(c.token_ids, c.pieces, c.gates)
            choices.append(choice)
        return {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": req.model,
            "choices": choices,
            "usage": svc.usage(jobs, req.n),
        }

    events = svc.stream(jobs)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    offsets = [0] * len(jobs)

    def chunk(choice: dict) -> dict:
        out = {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": req.model,
            "choices": [choice],
        }
        if include_usage:
            out["usage"] = None
        return out

    async def body():
        if req.echo and k is None:
            for k_ in range(len(jobs)):
                yield sse(
                    chunk({"index": k_, "text": texts[k_ // req.n], "logprobs": None, "finish_reason": None})
                )
        async for k_, item in events():
            if isinstance(item, Job):
                c = item.completion
                if item.error is not None:
                    yield sse(P.error_body(f"generation failed: {item.error}", "server_error"))
                    continue
                if req.echo and k is not None:  # prompt logprobs exist only once the prefill ran
                    h = head(k_, c)
                    toks, lps, tops = h["logprobs"]
                    yield sse(
                        chunk(
                            {
                                "index": k_,
                                "text": h["text"],
                                "finish_reason": None,
                                "logprobs": P.legacy_logprobs(toks, lps, tops, 0),
                            }
                        )
                    )
                yield sse(
                    chunk({"index": k_, "text": "", "logprobs": None, "finish_reason": c.finish_reason})
                )
                continue
            ev: TokenEvent = item
            logprobs = None
            if ev.logprob is not None:
                tok = svc.token_text(ev.token_id)
                logprobs = P.legacy_logprobs(
                    [tok], [ev.logprob.logprob], [svc.tops(ev.logprob.top)], offsets[k_]
                )
            offsets[k_] += len(ev.delta)
            choice = {"index": k_, "text": ev.delta, "logprobs": logprobs, "finish_reason": None}
            if req.pathway_trace:
                choice["pathway_trace"] = svc.trace([ev.token_id], [ev.piece], _one(ev.gates))
            yield sse(chunk(choice))
        if include_usage:
            yield sse(
                {
                    "id": rid,
                    "object": "text_completion",
                    "created": created,
                    "model": req.model,
                    "choices": [],
                    "usage": svc.usage(jobs, req.n),
                }
            )
        yield sse("[DONE]")

    return CancellingStream(body(), on_close=lambda: [j.cancel() for j in jobs])


def _one(gates):
    return None if gates is None else gates[None]


# ---------------------------------------------------------------- /v1/chat/completions


def _constraints(svc: Service, req: P.ChatCompletionRequest) -> list[GrammarConstraint | None]:
    """One grammar per choice: the tool-call grammar, response_format's JSON schema, or none (free text)."""
    if (tool_grammar := T.grammar(req)) is not None:
        try:
            return [GrammarConstraint.lark(svc.engine.tokenizer, tool_grammar) for _ in range(req.n)]
        except ValueError as e:
            raise ApiError(400, f"tools: a function's parameters schema: {e}", param="tools") from None
    try:
        schema = req.json_schema()
    except ValueError as e:
        raise ApiError(400, str(e), param="response_format") from None
    if schema is None:
        return [None] * req.n
    try:
        return [GrammarConstraint.json(svc.engine.tokenizer, schema) for _ in range(req.n)]
    except ValueError as e:
        raise ApiError(400, f"response_format.json_schema.schema: {e}", param="response_format") from None


async def chat_completions(svc: Service, req: P.ChatCompletionRequest, http: HttpRequest):
    svc.check_model(req.model)
    if (field := req.unsupported()) is not None:
        raise ApiError(
            400,
            f"{field} is the deprecated form of tool calling and is not supported: send tools and "
            "tool_choice instead (a reply that ignored it would mislead the client)",
            param=field,
            code="unsupported_parameter",
        )
    routing, bias = svc.routing(req.gear)
    gs = svc.gear_sampling(req.gear)
    constraints = _constraints(svc, req)
    reading_calls = req.tool_mode() != "none"
    try:
        ids = svc.engine.encode_chat(T.chat_messages(req))
    except ValueError as e:
        raise ApiError(400, str(e), param="messages") from None
    room = svc.max_total - len(ids)
    asked = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    max_tokens = asked if asked is not None else max(0, min(svc.settings.default_max_tokens, room))
    svc.check_lengths(ids, max_tokens)
    k = (req.top_logprobs or 0) if req.logprobs else None
    if req.top_logprobs and not req.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    jobs = [
        Job(
            Request(
                ids,
                svc.params(req, max_tokens, i, logprobs=k),
                gear_bias=bias,
                gear_sampling=gs,
                constraint=constraints[i],
            ),
            routing,
        )
        for i in range(req.n)
    ]
    rid, created = P.new_id("chatcmpl"), P.now()

    def content_logprobs(lps) -> list[dict]:
        return [
            P.chat_logprob(svc.token_text(x.token_id), x.logprob, [(svc.token_text(t), v) for t, v in x.top])
            for x in lps
        ]

    if not req.stream:
        done = await svc.run(jobs, http)
        choices = []
        for i, c in enumerate(done):
            message, finish = {"role": "assistant", "content": c.text}, c.finish_reason
            if reading_calls:
                reader = T.CallReader()
                reader.feed(c.text)
                reader.finish()
                message["content"] = reader.content
                if reader.calls:
                    message["tool_calls"] = [call.wire() for call in reader.calls]
                finish = T.finish_reason(reader, c.finish_reason)
            choice = {
                "index": i,
                "message": message,
                "logprobs": {"content": content_logprobs(c.logprobs)} if k is not None else None,
                "finish_reason": finish,
            }
            if req.pathway_trace:
                choice["pathway_trace"] = svc.trace(c.token_ids, c.pieces, c.gates)
            choices.append(choice)
        return {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": choices,
            "usage": svc.usage(jobs, req.n),
        }

    events = svc.stream(jobs)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def chunk(choice: dict) -> dict:
        out = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "choices": [choice],
        }
        if include_usage:
            out["usage"] = None
        return out

    readers = [T.CallReader() if reading_calls else None for _ in range(req.n)]

    async def body():
        for i in range(req.n):
            yield sse(
                chunk(
                    {
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                )
            )
        async for i, item in events():
            if isinstance(item, Job):
                if item.error is not None:
                    yield sse(P.error_body(f"generation failed: {item.error}", "server_error"))
                    continue
                finish, reader = item.completion.finish_reason, readers[i]
                if reader is not None:
                    for delta in reader.finish():
                        yield sse(
                            chunk({"index": i, "delta": delta, "logprobs": None, "finish_reason": None})
                        )
                    finish = T.finish_reason(reader, finish)
                yield sse(chunk({"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}))
                continue
            ev: TokenEvent = item
            # a tool call's text arrives as tool_calls deltas; a token that completes none sends an empty
            # delta, so its logprobs and gate trace still reach the client
            deltas = readers[i].feed(ev.delta) if readers[i] is not None else [{"content": ev.delta}]
            for j, delta in enumerate(deltas or [{}]):
                choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
                if j == 0 and ev.logprob is not None:
                    choice["logprobs"] = {"content": content_logprobs([ev.logprob])}
                if j == 0 and req.pathway_trace:
                    choice["pathway_trace"] = svc.trace([ev.token_id], [ev.piece], _one(ev.gates))
                yield sse(chunk(choice))
        if include_usage:
            yield sse(
                {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": req.model,
                    "choices": [],
                    "usage": svc.usage(jobs, req.n),
                }
            )
        yield sse("[DONE]")

    return CancellingStream(body(), on_close=lambda: [j.cancel() for j in jobs])
