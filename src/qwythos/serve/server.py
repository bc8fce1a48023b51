"""`qwythos serve`: load a model folder and run the app under uvicorn until SIGINT/SIGTERM.

On shutdown uvicorn stops accepting connections and waits (up to ``graceful_timeout`` seconds) for
in-flight requests, which the scheduler keeps decoding; then the scheduler drains and stops.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from ..dialogue.store import default_db
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


def read_api_keys(path: str | Path) -> dict[str, str]:
    """--api-keys FILE: one key per line, ``OWNER KEY`` or a bare ``KEY`` (its owner: the key's hash);
    blank lines and # comments skipped. Each owner sees only its own characters and sessions."""
    keys: dict[str, str] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ValueError(f"--api-keys {path}: cannot read it ({e.strerror})") from None
    for n, line in enumerate(lines, 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) > 2:
            raise ValueError(f"--api-keys {path}:{n}: expected 'OWNER KEY' or 'KEY', got {len(parts)} words")
        owner, key = (
            parts if len(parts) == 2 else (hashlib.sha256(parts[0].encode()).hexdigest()[:12], parts[0])
        )
        if key in keys:
            raise ValueError(f"--api-keys {path}:{n}: this key is listed twice")
        keys[key] = owner
    if not keys:
        raise ValueError(f"--api-keys {path}: no keys in it; one per line, 'OWNER KEY' or 'KEY'")
    return keys


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
    db: str | Path | None = None,
    api_keys_file: str | Path | None = None,
    dialogue: bool = True,
    recall: str = "auto",
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
        api_keys=read_api_keys(api_keys_file) if api_keys_file else {},
        db=str(default_db(model_dir, db)) if dialogue else None,
        recall=recall,
    )
    app = build_app(model_dir, settings, dtype)
    if settings.db:
        log.info("dialogue engine: sessions in %s", settings.db)
    if not (settings.api_key or settings.api_keys) and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key: pass --api-key or set %s", host, API_KEY_ENV)
    log.info("serving %s as %r on http://%s:%d/v1", model_dir, settings.model_name, host, port)
    if settings.db:
        log.info("dialogue playground: open http://%s:%d/ in a browser", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=graceful_timeout)
