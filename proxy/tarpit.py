"""Tarpit: answer slowly. A crawler's connection is held for `seconds`, receiving a harmless
page a few bytes at a time, which costs it a worker while costing the proxy one sleeping task.

Tarpits are bounded (`limits.tarpits` at once): beyond the bound a request gets the cheaper
answer, a plain 403, so a crawler swarm cannot turn the tarpit into the proxy's own exhaustion.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .exchange import Exchange

_FILLER = b"<!-- please wait -->\n"


def validate_params(params: dict[str, Any]) -> None:
    for key, value in params.items():
        limits = {"seconds": (1, 3600), "bytes_per_second": (1, 4096)}.get(key)
        if limits is None:
            raise ValueError(f"unknown param '{key}'; tarpit takes seconds, bytes_per_second")
        if isinstance(value, bool) or not isinstance(value, int) or not (
            limits[0] <= value <= limits[1]
        ):
            raise ValueError(f"'{key}' must be an integer from {limits[0]} to {limits[1]}")


class Tarpits:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    async def serve(
        self, request: web.Request, ex: Exchange, headers: Mapping[str, str]
    ) -> web.StreamResponse | None:
        """Trickle a page; None when the bound is reached (the caller answers more cheaply).
        headers: extra response headers (the verdict header, when enabled)."""
        if self.active >= self.limit:
            return None
        params = dict(ex.verdict.params)
        seconds = int(params.get("seconds", 60))  # type: ignore[call-overload]
        rate = int(params.get("bytes_per_second", 8))  # type: ignore[call-overload]
        self.active += 1
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", **headers})
        ex.status, ex.variant = 200, "tarpit"
        try:
            await resp.prepare(request)
            await resp.write(b"<!doctype html>\n<html><head><title>Loading</title></head><body>\n")
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            position = 0
            while loop.time() < end:
                piece = bytes(_FILLER[(position + i) % len(_FILLER)] for i in range(rate))
                position += rate
                await resp.write(piece)
                ex.bytes_out += len(piece)
                await asyncio.sleep(1.0)
            await resp.write(b"</body></html>\n")
            await resp.write_eof()
        except ConnectionError:
            ex.error = "client-abort"
        finally:
            self.active -= 1
        return resp
