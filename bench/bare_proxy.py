"""The reference point: a bare aiohttp reverse proxy in about 30 lines, no classification, no
logging, no metrics. `python -m bench.bare_proxy UPSTREAM_URL PORT`. SonicShield's own overhead
is the distance between this and SonicShield in the same run."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection",
       "trailer", "content-length"}
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def session_ctx(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = aiohttp.ClientSession(auto_decompress=False,
                                         timeout=aiohttp.ClientTimeout(total=None))
    yield
    await app[SESSION].close()


def build(upstream: str) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with request.app[SESSION].request(
            request.method, upstream + request.raw_path, headers=headers,
            data=request.content if request.body_exists else None, allow_redirects=False,
        ) as up:
            resp = web.StreamResponse(status=up.status)
            resp.headers.extend((k, v) for k, v in up.headers.items() if k.lower() not in HOP)
            if up.content_length is not None:
                resp.content_length = up.content_length
            try:
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            except ConnectionError:
                pass
            return resp

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


if __name__ == "__main__":
    import uvloop

    web.run_app(build(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), access_log=None,
                print=None, loop=uvloop.new_event_loop())
