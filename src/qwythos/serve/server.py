"""`qwythos serve`: load a model folder and run the app under uvicorn until SIGINT/SIGTERM.

On shutdown uvicorn stops accepting connections and waits (up to ``graceful_timeout`` seconds) for
in-flight requests, which the scheduler keeps decoding; then the scheduler drains and stops.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .handlers import ServeSettings

log = logging.getLogger(__name__)
API_KEY_ENV = "QWYTHOS_API_KEY"


def build_app(
    model_dir: str | Path, settings: ServeSettings | None = None, dtype: str = "float32", **overrides
):
    from ..inference.api import load_engine
    from .app import create_app

    engine = load_engine(model_dir, dtype)
    settings = settings or ServeSettings(model_name=Path(model_dir).resolve().name, **overrides)
    return create_app(engine, settings)


def serve(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    model_name: str | None = None,
    max_batch: int = 8,
    max_queue: int = 64,
    max_prompt_tokens: int | None = None,
    max_total_tokens: int | None = None,
    max_body_bytes: int = 4 * 1024 * 1024,
    graceful_timeout: float = 120.0,
    dtype: str = "float32",
) -> None:
    import uvicorn

    checks = (("--max-batch", max_batch), ("--max-queue", max_queue), ("--port", port))
    for name, value in (*checks, ("--max-body-bytes", max_body_bytes)):
        if value < 0 or (name != "--port" and value == 0):
            raise ValueError(f"{name} ({value}) must be > 0")
    settings = ServeSettings(
        model_name=model_name or Path(model_dir).resolve().name,
        api_key=api_key or os.environ.get(API_KEY_ENV) or None,
        max_batch=max_batch,
        max_queue=max_queue,
        max_prompt_tokens=max_prompt_tokens,
        max_total_tokens=max_total_tokens,
        max_body_bytes=max_body_bytes,
    )
    app = build_app(model_dir, settings, dtype)
    if settings.api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key: pass --api-key or set %s", host, API_KEY_ENV)
    log.info("serving %s as %r on http://%s:%d/v1", model_dir, settings.model_name, host, port)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=graceful_timeout)
