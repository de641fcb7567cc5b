"""Forwarding to the upstream store: one pooled session, header hygiene, streaming copies.

Bodies are streamed both ways in the chunks the sockets deliver (`readany`), never buffered:
a 300 MB download or upload costs the proxy a few socket buffers of memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .clientip import FORWARDING_HEADERS, forwarding_headers
from .deadlines import DeadlineWatch
from .exchange import Exchange
from .settings import Settings
from .trap import TrapLinks, adjust_headers

log = logging.getLogger("sonicshield.forward")

# RFC 9110 7.6.1: connection-specific fields a proxy must not forward, plus the ones whose
# meaning is scoped to one hop (Proxy-Authenticate/-Authorization, 11.7).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# Never forwarded upstream: the proxy answers Expect itself, rewrites the forwarding headers,
# and lets aiohttp frame the body (Content-Length is re-sent when the client gave one).
_REQUEST_DROP = HOP_BY_HOP | {"expect", "host"} | {h.lower() for h in FORWARDING_HEADERS}
# aiohttp adds these to requests when they are missing; a proxy must send only what it got.
SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
NO_BODY_STATUSES = frozenset({204, 304})


class UpstreamError(Exception):
    """The upstream failed before a response could start; `status` is what the client gets."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason  # machine-readable, for the access log and metrics


class RequestBodyTooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Upstream:
    """The upstream store and how to talk to it."""

    session: aiohttp.ClientSession
    base: URL
    host_header: str
    settings: Settings
    deadlines: DeadlineWatch
    traps: TrapLinks | None = None  # hidden links appended to HTML pages
    # host[:port] values an absolute-form request target may name (proxy/inbound.py)
    authorities: frozenset[str] = frozenset()

    def url(self, target: str) -> URL:
        """The store's URL for a normalised request target: always the configured store,
        whatever the client's request line said."""
        return URL(f"{self.base.scheme}://{self.base.raw_authority}{target}", encoded=True)


def connection_named(headers: Mapping[str, str]) -> frozenset[str]:
    """Hop-by-hop names plus every field named in Connection (RFC 9110 7.6.1)."""
    named = headers.get("Connection")
    if not named:
        return HOP_BY_HOP
    return HOP_BY_HOP | {t.strip().lower() for t in named.split(",") if t.strip()}


def make_session(settings: Settings) -> aiohttp.ClientSession:
    """The one pooled client session of a worker.

    Overrides aiohttp's client defaults that a proxy must not keep: the 300 s total timeout
    (cuts long audio), auto-decompression (would alter bodies), the cookie jar (would carry one
    client's cookies into another client's requests) and proxy settings from the environment.
    """
    t = settings.timeouts
    connector = aiohttp.TCPConnector(limit=settings.upstream.pool_size, limit_per_host=0)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=t.upstream_connect),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        skip_auto_headers=SKIP_AUTO_HEADERS,
    )


def upstream_request_headers(
    request: web.Request, ex: Exchange, upstream: Upstream
) -> CIMultiDict[str]:
    drop = _REQUEST_DROP | connection_named(request.headers)
    out: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in request.headers.items() if k.lower() not in drop
    )
    out.update(forwarding_headers(ex.client, request.headers))
    if upstream.host_header == "preserve":
        host = request.headers.get("Host") or upstream.base.raw_authority
    elif upstream.host_header == "upstream":
        host = upstream.base.raw_authority
    else:
        host = upstream.host_header
    out["Host"] = host
    out["X-Request-Id"] = ex.id
    return out


def response_headers(upstream_headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Upstream response headers minus hop-by-hop and framing; repeats (Set-Cookie) kept."""
    drop = connection_named(upstream_headers) | {"content-length"}
    return CIMultiDict((k, v) for k, v in upstream_headers.items() if k.lower() not in drop)


class RequestBodyStalled(Exception):
    """The client stopped sending its request body for client_idle seconds."""


def _stalled(idle: float) -> UpstreamError:
    return UpstreamError(408, "client-timeout", f"the request body stalled for {idle:g}s")


async def _request_body(
    request: web.Request, ex: Exchange, upstream: Upstream
) -> AsyncIterator[bytes]:
    limit = upstream.settings.limits.max_request_body
    idle = upstream.settings.timeouts.client_idle
    try:
        async with upstream.deadlines.deadline() as deadline:
            while True:
                deadline.move(idle)
                chunk = await request.content.readany()
                if not chunk:
                    return
                ex.bytes_in += len(chunk)
                if limit and ex.bytes_in > limit:
                    raise RequestBodyTooLarge
                yield chunk
    except TimeoutError:  # the client's deadline, not the store's
        raise RequestBodyStalled from None


async def open_upstream(
    request: web.Request, ex: Exchange, upstream: Upstream
) -> aiohttp.ClientResponse:
    """Send the request upstream and wait for its response headers (bounded)."""
    s = upstream.settings
    body = None
    if request.body_exists:
        body = _request_body(request, ex, upstream)
    url = upstream.url(ex.target)
    started = asyncio.get_running_loop().time()
    try:
        async with upstream.deadlines.deadline() as deadline:
            deadline.move(s.timeouts.upstream_response)
            up = await upstream.session.request(
                request.method,
                url,
                headers=upstream_request_headers(request, ex, upstream),
                data=body,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
    except RequestBodyTooLarge:
        raise UpstreamError(413, "request-too-large", "request body over the limit") from None
    except RequestBodyStalled:
        raise _stalled(s.timeouts.client_idle) from None
    except TimeoutError:
        raise UpstreamError(
            504, "upstream-timeout", f"no response within {s.timeouts.upstream_response:g}s"
        ) from None
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamError(502, "upstream-unreachable", str(exc.os_error)) from None
    except aiohttp.ClientError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, RequestBodyTooLarge):
            raise UpstreamError(413, "request-too-large", "request body over the limit") from None
        if isinstance(cause, RequestBodyStalled):
            raise _stalled(s.timeouts.client_idle) from None
        raise UpstreamError(502, "upstream-error", f"{type(exc).__name__}: {exc}") from None
    ex.upstream_ms = (asyncio.get_running_loop().time() - started) * 1000.0
    return up


async def stream_response(
    request: web.Request, ex: Exchange, up: aiohttp.ClientResponse, upstream: Upstream,
    tap: Callable[[bytes], None] | None = None,
) -> web.StreamResponse:
    """Copy the upstream response to the client chunk by chunk, with idle deadlines each way.
    `tap`, when given, sees every body chunk as it passes."""
    settings = upstream.settings
    resp = web.StreamResponse(status=up.status, reason=up.reason)
    resp.headers.extend(response_headers(up.headers))
    if settings.verdict_header:
        resp.headers["X-SonicShield-Verdict"] = ex.verdict.header_value
    trap = upstream.traps.injection(up.status, request.method, up.headers) if (
        upstream.traps is not None) else None
    length = up.headers.get("Content-Length")
    left = int(length) if length is not None and length.isdigit() else None  # upstream bytes
    if trap is not None:
        adjust_headers(resp.headers)
    if left is not None:
        resp.content_length = left + (len(trap) if trap is not None else 0)
    ex.status = up.status
    has_body = request.method != "HEAD" and up.status not in NO_BODY_STATUSES

    t = settings.timeouts
    phase = "upstream"
    try:
        await resp.prepare(request)
        if has_body:
            async with upstream.deadlines.deadline() as deadline:
                while True:
                    phase = "upstream"
                    deadline.move(t.upstream_idle)
                    chunk = await up.content.readany()
                    if not chunk:
                        break
                    if tap is not None:
                        tap(chunk)
                    if trap is not None and left is not None:
                        left -= len(chunk)
                        if left <= 0:  # the body's last bytes: the link goes in the same write
                            chunk, trap = chunk + trap, None
                    phase = "client"
                    deadline.move(t.client_idle)
                    await resp.write(chunk)
                    ex.bytes_out += len(chunk)
            if trap is not None:
                await resp.write(trap)
                ex.bytes_out += len(trap)
        await resp.write_eof()
    except TimeoutError:
        ex.error = f"{phase}-idle-timeout"
        _abort(request)
    except ConnectionError:
        ex.error = "client-abort"
    except asyncio.CancelledError:
        # a server run with handler_cancellation cancels the handler when the client goes
        ex.error = "client-abort"
        raise
    except aiohttp.ClientPayloadError as exc:
        ex.error = f"upstream-body-error: {exc}"
        _abort(request)
    finally:
        # close, not release: a connection whose body was not read to the end cannot be reused
        if ex.error:
            up.close()
        else:
            up.release()
    return resp


def _abort(request: web.Request) -> None:
    """Cut the client connection so a truncated body is never taken for a complete one."""
    if request.transport is not None:
        request.transport.close()


async def proxy_websocket(
    request: web.Request, ex: Exchange, upstream: Upstream
) -> web.StreamResponse:
    """Relay a WebSocket both ways; subprotocol negotiated by the upstream."""
    headers = upstream_request_headers(request, ex, upstream)
    for name in ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions"):
        headers.popall(name, None)
    protocols = [
        p.strip()
        for p in headers.popall("Sec-WebSocket-Protocol", [""])[0].split(",")
        if p.strip()
    ]
    url = upstream.url(ex.target)
    try:
        async with asyncio.timeout(upstream.settings.timeouts.upstream_response):
            up_ws = await upstream.session.ws_connect(
                url, headers=headers, protocols=protocols, autoclose=False, autoping=False
            )
    except (TimeoutError, aiohttp.ClientError) as exc:
        detail = str(exc) or type(exc).__name__
        raise UpstreamError(502, "upstream-websocket-failed", detail) from None

    client_ws = web.WebSocketResponse(
        protocols=(up_ws.protocol,) if up_ws.protocol else (), autoclose=False, autoping=False
    )
    await client_ws.prepare(request)
    ex.status = 101

    async def relay(
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for msg in source:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
                ex.bytes_out += len(msg.data)
            elif msg.type == aiohttp.WSMsgType.PING:
                await sink.ping(msg.data)
            elif msg.type == aiohttp.WSMsgType.PONG:
                await sink.pong(msg.data)
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                reason = msg.extra.encode() if isinstance(msg.extra, str) else b""
                await sink.close(code=source.close_code or 1000, message=reason)
                return

    tasks = [
        asyncio.create_task(relay(client_ws, up_ws)),
        asyncio.create_task(relay(up_ws, client_ws)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await up_ws.close()
        await client_ws.close()
    return client_ws
