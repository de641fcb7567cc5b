"""Serving a variant file with the HTTP semantics of a real one.

A substituted body is its own representation: its own strong ETag (never the original's), its
own Content-Length and Content-Range, no Last-Modified, `Cache-Control: private, no-transform`
(no cache may hand it to someone else, no middlebox may recompress it). Range (one range; a
multi-range request gets the whole file, as RFC 9110 14.2 allows), If-Range (a stale or
date-valued validator gets the whole file), If-None-Match (304), HEAD and 416 behave as for
any file. The body goes out with sendfile where the loop has it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from ..exchange import Exchange

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CHUNK = 1 << 18


def byte_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """(first, last) of a single byte range; None to serve the whole file (absent, malformed or
    several ranges); False when unsatisfiable."""
    m = _RANGE.fullmatch(header.strip())
    if m is None:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n and size else False
    start = int(first)
    if start >= size:
        return False
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if end >= start else None


def _etag_listed(header: str, etag: str) -> bool:
    return any(t.strip() in ("*", etag, "W/" + etag) for t in header.split(","))


Piece = tuple[Path, int, int]  # bytes [start, end) of a file


async def send_variant(
    request: web.Request, ex: Exchange, pieces: list[Piece], etag: str, content_type: str,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    """Send the concatenation of `pieces` (one whole file, or a watermark splice)."""
    size = sum(end - start for _, start, end in pieces)
    base = {"ETag": etag, "Cache-Control": "private, no-transform", "Accept-Ranges": "bytes",
            **headers}
    inm = request.headers.get("If-None-Match")
    if inm is not None and _etag_listed(inm, etag):
        ex.status = 304
        return web.Response(status=304, headers=base)
    span: tuple[int, int] | bool | None = None
    if "Range" in request.headers and request.method in ("GET", "HEAD"):
        if_range = request.headers.get("If-Range")
        if if_range is None or if_range.strip() == etag:
            span = byte_range(request.headers["Range"], size)
    if span is False:
        ex.status = 416
        return web.Response(status=416, headers={**base, "Content-Range": f"bytes */{size}"})
    resp = web.StreamResponse(status=206 if span else 200, headers=base)
    resp.content_type = content_type.split(";")[0]
    if ";" in content_type:
        resp.headers["Content-Type"] = content_type
    first, last = span if isinstance(span, tuple) else (0, size - 1)
    if span:
        resp.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    count = last - first + 1 if size else 0
    resp.content_length = count
    ex.status = resp.status
    try:
        await resp.prepare(request)
        if request.method != "HEAD" and count:
            position = 0  # where the current piece starts in the whole body
            for path, start, end in pieces:
                lo, hi = max(first, position), min(last + 1, position + end - start)
                if lo < hi:
                    with path.open("rb") as f:
                        await _sendfile(request, resp, f, start + lo - position, hi - lo)
                    ex.bytes_out += hi - lo
                position += end - start
        await resp.write_eof()
    except ConnectionError:  # the client went away (while the variant was made, or sent)
        ex.error = "client-abort"
    return resp


async def _sendfile(
    request: web.Request, resp: web.StreamResponse, f: IO[Any], offset: int, count: int
) -> None:
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("Connection lost")
    loop = asyncio.get_running_loop()
    try:
        await loop.sendfile(transport, f, offset, count)
        return
    except NotImplementedError:
        pass
    f.seek(offset)
    while count > 0:
        chunk = await loop.run_in_executor(None, f.read, min(_CHUNK, count))
        if not chunk:
            raise ConnectionResetError("variant file shorter than its size")
        await resp.write(chunk)
        count -= len(chunk)
