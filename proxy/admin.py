"""The admin listener: /metrics, /healthz, /readyz. Bound to 127.0.0.1 by default."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .settings import Settings

ReadinessCheck = Callable[[], Awaitable[tuple[bool, str]]]
MetricsSource = Callable[[], bytes]
# Reload the rules; returns (ok, details) where details is JSON-serialisable.
RulesReload = Callable[[], Awaitable[tuple[bool, dict[str, object]]]]


def upstream_readiness(settings: Settings, session: aiohttp.ClientSession) -> ReadinessCheck:
    """Ready when the upstream answers HTTP at all (any status below 500) within 3 seconds."""
    url = settings.upstream.url + settings.upstream.health_path

    async def check() -> tuple[bool, str]:
        try:
            async with asyncio.timeout(3.0), session.head(url, allow_redirects=False) as resp:
                if resp.status >= 500:
                    return False, f"upstream answered {resp.status}"
                return True, f"upstream answered {resp.status}"
        except TimeoutError:
            return False, "upstream did not answer within 3s"
        except aiohttp.ClientError as exc:
            return False, f"upstream unreachable: {exc}"

    return check


def authorised(request: web.Request, token: str | None) -> bool:
    """Trust boundary: state-changing admin calls need `Authorization: Bearer <token>`.

    With no token configured every such call is refused: an admin port reachable by mistake
    must not become a way to change the proxy.
    """
    if token is None:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def build_admin_app(
    metrics: MetricsSource, readiness: ReadinessCheck, reload: RulesReload, token: str | None
) -> web.Application:
    async def metrics_view(_: web.Request) -> web.Response:
        resp = web.Response(body=metrics())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok, detail = await readiness()
        return web.json_response(
            {"status": "ready" if ok else "not ready", "detail": detail}, status=200 if ok else 503
        )

    async def reload_view(request: web.Request) -> web.Response:
        if not authorised(request, token):
            detail = "set admin.token to enable" if token is None else "missing or wrong token"
            return web.json_response({"error": f"unauthorised: {detail}"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        ok, details = await reload()
        return web.json_response(details, status=200 if ok else 422)

    app = web.Application()
    app.router.add_post("/rules/reload", reload_view)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
