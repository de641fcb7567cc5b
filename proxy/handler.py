"""The request pipeline, top to bottom:

request -> Exchange -> classify (Signals) -> decide (Verdict) -> respond -> record
"""

from __future__ import annotations

import secrets

from aiohttp import web

from .app_keys import METRICS, RULES, SETTINGS, STREAMS, UPSTREAM
from .clientip import resolve_client
from .exchange import Action, Exchange
from .forward import UpstreamError, open_upstream, proxy_websocket, stream_response
from .logs import log_access
from .signals import classify


async def handle(request: web.Request) -> web.StreamResponse:
    ex = start_exchange(request)
    ruleset = request.app[RULES].current  # one rule set for the whole exchange, even mid-reload
    try:
        ex.signals = classify(request, ex, ruleset.ua)
        ex.verdict = ruleset.decide(ex)
        return await respond(request, ex)
    finally:
        request.app[METRICS].record(ex)
        log_access(ex)


def start_exchange(request: web.Request) -> Exchange:
    settings = request.app[SETTINGS]
    peer = request.remote or ""
    client = resolve_client(peer, request.headers, settings.trusted_proxies, request.scheme)
    return Exchange(
        id=secrets.token_hex(8),
        client=client,
        method=request.method,
        path=request.path,
        query=request.query_string,
    )


async def respond(request: web.Request, ex: Exchange) -> web.StreamResponse:
    app = request.app
    if ex.verdict.action is Action.BLOCK and not ex.verdict.shadow:
        return local_response(ex, 403, "Forbidden", "This request was refused.")
    streams = app[STREAMS]
    if not streams.acquire(ex.client.ip):
        return local_response(ex, 429, "Too Many Requests", "Too many parallel downloads.")
    try:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await proxy_websocket(request, ex, app[UPSTREAM])
        up = await open_upstream(request, ex, app[UPSTREAM])
        return await stream_response(request, ex, up, app[UPSTREAM])
    except UpstreamError as exc:
        ex.error = exc.reason
        app[METRICS].upstream_error(exc.reason)
        return local_response(ex, exc.status, _TITLES[exc.status], str(exc))
    finally:
        streams.release(ex.client.ip)


_TITLES = {
    413: "Request Too Large",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{status} {title}</title></head>
<body><h1>{status} {title}</h1><p>{text}</p><p><small>SonicShield, request {id}</small></p>
</body></html>
"""


def local_response(ex: Exchange, status: int, title: str, text: str) -> web.Response:
    """A small page the proxy answers itself (errors, blocks)."""
    body = _PAGE.format(status=status, title=title, text=_escape(text), id=ex.id).encode()
    ex.status, ex.variant, ex.bytes_out = status, "local", len(body)
    resp = web.Response(status=status, body=body, content_type="text/html", charset="utf-8")
    resp.headers["Cache-Control"] = "no-store"
    if status == 429:
        resp.headers["Retry-After"] = "5"
    return resp


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
