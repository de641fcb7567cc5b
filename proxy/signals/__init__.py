"""Classification: request facts -> frozen Signals."""

from __future__ import annotations

from aiohttp import web

from ..exchange import Exchange, Signals
from .content import content_kind
from .useragent import UAClassifier


def classify(request: web.Request, ex: Exchange, ua: UAClassifier) -> Signals:
    ua_text = request.headers.get("User-Agent", "")
    info = ua.classify(ua_text)
    return Signals(
        content=content_kind(ex.path),
        ua=ua_text,
        ua_class=info.ua_class,
        agent=info.agent,
        operator=info.operator,
        purpose=info.purpose,
    )
