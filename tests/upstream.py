"""A scriptable upstream for forwarding tests: echo, slow, hung, stalled, cookies, WebSocket.

Every loop here is bounded in count and time. Runnable on its own for subprocess tests:
`python -m tests.upstream PORT`.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import sys

from aiohttp import web

EVENTS = web.AppKey("events", dict)
CHUNK = bytes(range(256)) * 256  # 64 KiB of a known pattern


def pattern(n: int) -> bytes:
    """The first n bytes /bytes/{n} sends."""
    return (CHUNK * (n // len(CHUNK) + 1))[:n]


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
    )


async def upload(request: web.Request) -> web.Response:
    """Consume a body of any size in chunks; report its length and hash."""
    digest, total = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        total += len(chunk)
    return web.json_response({"body_len": total, "body_sha256": digest.hexdigest()})


async def hop_headers(_: web.Request) -> web.Response:
    resp = web.Response(text="ok")
    resp.headers.add("Set-Cookie", "a=1; Path=/")
    resp.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
    resp.headers["Connection"] = "X-Upstream-Private"
    resp.headers["X-Upstream-Private"] = "secret"
    resp.headers["Keep-Alive"] = "timeout=5"
    resp.headers["X-Kept"] = "yes"
    return resp


async def stream_bytes(request: web.Request) -> web.StreamResponse:
    """n bytes in 64 KiB chunks, with Content-Length; notes whether the client went away."""
    n = int(request.match_info["n"])
    events = request.app[EVENTS]
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = n
    await resp.prepare(request)
    sent = 0
    try:
        while sent < n:
            piece = CHUNK[: min(len(CHUNK), n - sent)]
            await resp.write(piece)
            sent += len(piece)
    except ConnectionError:  # the connection to us was closed under a write
        events["client_gone"].set()
        return resp
    except asyncio.CancelledError:  # ... or aiohttp cancelled the handler when it closed
        events["client_gone"].set()
        raise
    await resp.write_eof()
    return resp


async def slow(request: web.Request) -> web.StreamResponse:
    """`count` chunks, one every `interval` seconds (chunked)."""
    count = min(int(request.query.get("count", "10")), 200)
    interval = min(float(request.query.get("interval", "0.1")), 2.0)
    resp = web.StreamResponse()
    await resp.prepare(request)
    for i in range(count):
        await resp.write(f"chunk {i}\n".encode())
        await asyncio.sleep(interval)
    await resp.write_eof()
    return resp


async def hang(request: web.Request) -> web.Response:
    """Never answers within any test's deadline (bounded at 30 s)."""
    await asyncio.sleep(min(float(request.query.get("seconds", "30")), 30.0))
    return web.Response(text="late")


async def stall(request: web.Request) -> web.StreamResponse:
    """Headers and a first chunk, then silence (bounded at 30 s)."""
    resp = web.StreamResponse()
    resp.content_length = 1000
    await resp.prepare(request)
    await resp.write(b"x" * 100)
    await asyncio.sleep(30)
    return resp


async def reset(request: web.Request) -> web.StreamResponse:
    """Headers promising 1 MiB and 64 KiB of it, then a TCP reset."""
    resp = web.StreamResponse()
    resp.content_length = 1 << 20
    await resp.prepare(request)
    await resp.write(CHUNK)
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    transport.abort()
    return resp


async def redirect(_: web.Request) -> web.Response:
    raise web.HTTPFound("/echo?from=redirect")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("echo.v1",))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == web.WSMsgType.TEXT:
            await ws.send_str("echo:" + msg.data)
        elif msg.type == web.WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    return ws


def build_upstream() -> web.Application:
    app = web.Application(client_max_size=1 << 34)
    app[EVENTS] = {"client_gone": asyncio.Event()}
    r = app.router
    r.add_route("*", "/echo{tail:.*}", echo)
    r.add_post("/upload", upload)
    r.add_get("/hop", hop_headers)
    r.add_get("/bytes/{n:\\d+}", stream_bytes)
    r.add_get("/slow", slow)
    r.add_get("/hang", hang)
    r.add_get("/stall", stall)
    r.add_get("/reset", reset)
    r.add_get("/ws", websocket)
    r.add_get("/redirect", redirect)
    return app


if __name__ == "__main__":
    web.run_app(build_upstream(), host="127.0.0.1", port=int(sys.argv[1]), print=None,
                access_log=None)
