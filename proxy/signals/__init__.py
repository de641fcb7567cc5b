"""Classification: request facts -> frozen Signals."""

from __future__ import annotations

from aiohttp import web

from ..exchange import Exchange, Signals
from .content import content_kind


def classify(request: web.Request, ex: Exchange) -> Signals:
    return Signals(content=content_kind(ex.path), ua=request.headers.get("User-Agent", ""))
