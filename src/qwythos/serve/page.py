"""The dialogue playground: a self-contained web page (``serve/playground/``: HTML, CSS, JS, no
library, nothing from a CDN) served at ``/`` by ``qwythos serve``, talking to the dialogue API of
``serve/dialogue.py``.

The page and its assets need no API key (the page asks for one and sends it with every API call); a strict
Content-Security-Policy keeps every request on the serving origin.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from starlette.responses import Response

from .handlers import ApiError

ASSETS = {"playground.js": "text/javascript", "playground.css": "text/css"}
PUBLIC = ("/", *(f"/playground/{name}" for name in ASSETS))  # the Guard lets these through without a key
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _asset(name: str, media_type: str) -> Response:
    body = files(__package__).joinpath("playground", name).read_bytes()
    headers = {
        "Content-Security-Policy": CSP,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    return Response(body, media_type=media_type, headers=headers)


def add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page():
        return _asset("index.html", "text/html; charset=utf-8")

    @app.get("/playground/{name}", include_in_schema=False)
    async def asset(name: str):
        if name not in ASSETS:
            raise ApiError(404, f"no playground asset {name!r}", code="not_found")
        return _asset(name, ASSETS[name] + "; charset=utf-8")
