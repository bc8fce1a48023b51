"""The OpenAI-compatible HTTP app: thin routes over ``handlers``, a guard for keys and body sizes, errors.

Every error is ``{"error": {"message", "type", "param", "code"}}``: 400 bad input, 401 missing or wrong key,
404 unknown model or route, 413 body or prompt too large, 422 a field fails validation, 429 queue full
(with Retry-After). Bad input never yields a 5xx: the ``openai`` client retries those.
"""

from __future__ import annotations

import hmac
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse

from ..inference.engine import Engine
from ..inference.scheduler import Scheduler
from . import protocol as P
from .handlers import ApiError, ServeSettings, Service, chat_completions, completions
from .metrics import Metrics
from .page import PUBLIC, add_page

log = logging.getLogger(__name__)

ROUTES = (
    "/v1/models",
    "/v1/completions",
    "/v1/chat/completions",
    "/tokenize",
    "/detokenize",
    "/health",
    "/metrics",
)
PREFIXES = ("/v1/characters", "/v1/sessions")  # the dialogue routes, labelled by their prefix


class Guard:
    """ASGI middleware: bearer key on every route but /health and the playground page, body-size limit,
    request metrics."""

    def __init__(self, app, settings: ServeSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics
        self.keys = dict(settings.api_keys)  # key -> owner: whose sessions a request may see
        if settings.api_key:
            self.keys[settings.api_key] = "default"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, start, status = scope["path"], time.perf_counter(), [500]
        route = path if path in ROUTES else next((p for p in PREFIXES if path.startswith(p)), "other")

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        headers = dict(scope["headers"])
        error = None
        if self.keys and path != "/health" and path not in PUBLIC:
            auth = headers.get(b"authorization", b"").decode("latin-1")
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            owner = None
            for key, name in self.keys.items():  # every key compared: no early exit to time
                if hmac.compare_digest(given.encode(), key.encode()):
                    owner = name
            scope.setdefault("state", {})["owner"] = owner
            if owner is None:
                error = ApiError(
                    401,
                    "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                    type_="authentication_error",
                    code="invalid_api_key",
                )
        limit = self.settings.max_body_bytes
        length = headers.get(b"content-length")
        if error is None and length is not None and length.isdigit() and int(length) > limit:
            error = body_too_large(int(length), limit)
        if error is not None:
            receive = await drained(receive)  # a client still sending would see its connection reset
        try:
            if error is not None:
                await error_response(error)(scope, receive, send_status)
            else:
                await self.app(scope, limited(receive, limit), send_status)
        finally:
            self.metrics.request(route, status[0], time.perf_counter() - start)


def body_too_large(size: int, limit: int, more: bool = False) -> ApiError:
    return ApiError(
        413,
        f"request body is {size}{'+' if more else ''} bytes; this server's limit is {limit} "
        "(qwythos serve --max-body-bytes)",
        code="body_too_large",
    )


async def drained(receive):
    """Read (and drop) the rest of the request body; returns a receive that reports it as read."""
    message = {"more_body": True}
    while message.get("more_body") and message.get("type", "http.request") == "http.request":
        message = await receive()

    async def done():
        return {"type": "http.disconnect"} if message.get("type") == "http.disconnect" else await receive()

    return done


def limited(receive, limit: int):
    """A receive that raises 413 once a body without a Content-Length (chunked) grows past the limit."""
    size = 0

    async def guarded():
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                if message.get("more_body"):
                    await drained(receive)
                raise body_too_large(size, limit, more=True)
        return message

    return guarded


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _validation_error(_, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    param = ".".join(loc) or (first.get("ctx") or {}).get("param")  # a model-level check names its field
    if first.get("type") == "json_invalid":
        return error_response(ApiError(400, f"request body is not valid JSON: {first.get('msg')}"))
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return error_response(ApiError(422, f"{param or 'body'}: {msg}{more}", param=param, code="invalid_value"))


def _http_error(_, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 404:
        return error_response(
            ApiError(404, "no such route; see /v1/models, /v1/completions, ...", code="not_found")
        )
    if exc.status_code == 405:
        return error_response(ApiError(405, "method not allowed on this route", code="method_not_allowed"))
    return error_response(ApiError(exc.status_code, str(exc.detail)))


def _server_error(_, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(ApiError(500, f"internal error: {type(exc).__name__}", type_="server_error"))


def create_app(engine: Engine, settings: ServeSettings) -> FastAPI:
    scheduler = Scheduler(engine, max_batch=settings.max_batch, max_queue=settings.max_queue)
    metrics = Metrics(engine.pathways)
    svc = Service(engine, scheduler, settings, metrics)

    @asynccontextmanager
    async def lifespan(_app):
        scheduler.start()
        yield
        scheduler.stop(drain=True)  # uvicorn has already let in-flight requests finish

    app = FastAPI(title="Qwythos", lifespan=lifespan)
    app.state.service = svc
    app.add_exception_handler(ApiError, lambda _, e: error_response(e))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _server_error)
    app.add_middleware(Guard, settings=settings, metrics=metrics)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(
            metrics.render(scheduler.waiting, scheduler.running), media_type="text/plain; version=0.0.4"
        )

    @app.get("/v1/models")
    async def models():
        card = {
            "id": settings.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "qwythos",
            "max_model_len": svc.max_total,
            "pathways": engine.pathways,
            "default_mode": engine.default_mode,
        }
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions")
    async def v1_completions(req: P.CompletionRequest, http: Request):
        return await completions(svc, req, http)

    @app.post("/v1/chat/completions")
    async def v1_chat_completions(req: P.ChatCompletionRequest, http: Request):
        return await chat_completions(svc, req, http)

    @app.post("/tokenize")
    async def tokenize(req: P.TokenizeRequest):
        if req.model is not None:
            svc.check_model(req.model)
        if req.messages is not None:
            try:
                ids = engine.encode_chat([{"role": m.role, "content": m.text()} for m in req.messages])
            except ValueError as e:
                raise ApiError(400, str(e), param="messages") from None
        else:
            ids = engine.tokenizer.encode(req.prompt, add_special_tokens=req.add_special_tokens)
        return {"count": len(ids), "max_model_len": svc.max_total, "tokens": ids}

    @app.post("/detokenize")
    async def detokenize(req: P.DetokenizeRequest):
        if req.model is not None:
            svc.check_model(req.model)
        if req.tokens and (min(req.tokens) < 0 or max(req.tokens) >= engine.vocab_size):
            raise ApiError(400, f"token ids must be in [0, {engine.vocab_size})", param="tokens")
        return {"prompt": engine.tokenizer.decode(req.tokens)}

    if settings.db is not None:
        from ..dialogue.memory import recall_embedder
        from ..dialogue.store import Store
        from ..dialogue.turn import Dialogue
        from .dialogue import add_routes

        store = Store(settings.db)
        app.state.dialogue = Dialogue(engine, store, recall_embedder(settings.recall))
        add_routes(app, app.state.dialogue, settings.model_name)
        add_page(app)
    return app
