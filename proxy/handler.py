"""The request pipeline, top to bottom:

request -> Exchange -> classify (Signals) -> decide (Verdict) -> respond -> record
"""

from __future__ import annotations

import html
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from .app_keys import (
    ASN,
    AUDIO,
    AUDIO_RATES,
    EVIDENCE,
    METRICS,
    ROBOTS,
    RULES,
    SETTINGS,
    SHARED,
    STREAMS,
    TARPITS,
    TRACKER,
    UPSTREAM,
    VERDICTS,
    VERIFIER,
)
from .audio.service import Fallback
from .classify import STATEFUL, classify, record
from .clientip import resolve_client
from .exchange import Action, ContentKind, Exchange
from .forward import UpstreamError, open_upstream, proxy_websocket, stream_response
from .inbound import Refused, check_framing, parse_target, refusal
from .logs import log_access, log_event
from .rights import Rights
from .rules import AUDIO_ACTIONS, RuleSet
from .signals.behaviour import request_keys

log = logging.getLogger("sonicshield")


async def handle(request: web.Request) -> web.StreamResponse:
    try:
        ex = start_exchange(request)
    except Refused as refused:
        return refusal(request, refused)
    ruleset = request.app[RULES].current  # one rule set for the whole exchange, even mid-reload
    robots = request.app[ROBOTS].canonical(ruleset.robots_disallowed,
                                           ruleset.robots_declarations)
    settings = request.app[SETTINGS]
    tracker = request.app[TRACKER]
    shared = request.app.get(SHARED)
    pulled = None
    if shared is not None and not ruleset.needs.isdisjoint(STATEFUL):
        # several instances: what the others know of this client, before judging it
        audio_or_head = (ex.method == "HEAD"
                         or ruleset.content_kind(ex.path) is ContentKind.AUDIO)
        pulled = await shared.pull(request_keys(ex.client, audio_or_head),
                                   time.monotonic())
    trap_hit = settings.traps.enabled and ex.path.startswith(settings.traps.path)
    if trap_hit:  # remembered before classifying, so this very request is judged trapped
        clients = tracker.store
        clients.trap_hit(clients.row(ex.client.key, time.monotonic()), time.time())
    verdicts = request.app[VERDICTS]
    cached = None
    try:
        now = time.monotonic()
        started = time.perf_counter()
        ua = request.headers.get("User-Agent", "")
        cached = verdicts.lookup(ex, ua, ruleset, now)
        if cached is None:
            signals = ex.signals = classify(
                request.headers, ex, ruleset, robots, tracker,
                request.app[STREAMS].open.get(ex.client.ip, 0), now, request.app[ASN],
                request.app[VERIFIER])
            ex.verdict = ruleset.decide(ex)
            verdicts.remember(ex, ua, ruleset, now)
        else:
            signals, ex.verdict = cached
            ex.signals = signals
        elapsed = time.perf_counter() - started
        metrics = request.app[METRICS]
        metrics.classification_by[signals.content].observe(elapsed)
        if shared is not None and pulled is not None:
            shared.push(pulled)  # before the response: the next request may go elsewhere
        if trap_hit:
            metrics.trap_hits.labels(signals.ua_class).inc()
        if settings.shadow and ex.verdict.action is not Action.ALLOW:
            ex.verdict = replace(ex.verdict, shadow=True)
        if ex.method in ("GET", "HEAD"):
            if ex.path == "/robots.txt":  # as served at the origin this client used
                robots = request.app[ROBOTS].served_at(f"{ex.client.scheme}://{ex.client.host}")
                return serve_robots(request, ex, robots.text)
            if ruleset.rights is not None and ex.path in _DECLARATIONS:
                kind, text = _DECLARATIONS[ex.path](ruleset.rights)
                return serve_declaration(request, ex, kind, text)
        return await respond(request, ex, ruleset, trap_hit)
    finally:
        if cached is not None:  # what classify would have recorded, now the answer is out
            record(request.headers, ex, ruleset, robots, tracker,
                   request.app[STREAMS].open.get(ex.client.ip, 0), time.monotonic())
        if "behaviour" in ruleset.needs:
            audio = ex.signals is not None and ex.signals.content is ContentKind.AUDIO
            tracker.finish(
                ex.client.key, ex.status, ex.bytes_out if audio else 0, time.monotonic())
        if shared is not None and pulled is not None:
            # a robots.txt read, a 404, the audio bytes sent: what the response recorded
            shared.push(pulled)
        request.app[METRICS].record(ex)
        log_access(ex)
        evidence = request.app.get(EVIDENCE)
        if evidence is not None:
            evidence.submit(ex, robots, ruleset.rights, trap_hit)


_EXCHANGE = web.RequestKey("exchange", Exchange)


def start_exchange(request: web.Request) -> Exchange:
    """The exchange of a request whose head passes the inbound checks (proxy/inbound.py);
    Refused when it does not."""
    settings = request.app[SETTINGS]
    check_framing(request, settings.limits.max_request_body)
    target = parse_target(request.raw_path, request.app[UPSTREAM].authorities)
    peer = request.remote or ""
    client = resolve_client(peer, request.headers, settings.trusted_proxies, request.scheme)
    ex = request[_EXCHANGE] = Exchange(
        id=secrets.token_hex(8),
        client=client,
        method=request.method,
        path=target.path,
        query=target.query,
        target=target.upstream,
    )
    return ex


def serve_robots(request: web.Request, ex: Exchange, text: str) -> web.Response:
    """robots.txt: the canonical file, 200, to every client whatever the verdict (a crawler
    that was never told cannot be said to have ignored the reservation)."""
    clients = request.app[TRACKER].store
    clients.robots_read(clients.row(ex.client.key, time.monotonic()), time.time())
    body = text.encode()
    ex.status, ex.variant = 200, "robots.txt"
    ex.bytes_out = 0 if request.method == "HEAD" else len(body)
    resp = web.Response(body=body, content_type="text/plain", charset="utf-8")
    resp.headers["Cache-Control"] = "public, max-age=300"
    _verdict_header(request, ex, resp)
    return resp


_DECLARATIONS: dict[str, Callable[[Rights], tuple[str, str]]] = {
    "/.well-known/tdmrep.json": lambda r: ("application/json", r.tdmrep()),
    "/ai.txt": lambda r: ("text/plain", r.ai_txt()),
}


def serve_declaration(request: web.Request, ex: Exchange, kind: str,
                      text: str) -> web.Response:
    """tdmrep.json and ai.txt, made from rules/rights.yaml, to every client."""
    body = text.encode()
    ex.status, ex.variant = 200, "declaration"
    ex.bytes_out = 0 if request.method == "HEAD" else len(body)
    resp = web.Response(body=body, content_type=kind, charset="utf-8")
    resp.headers["Cache-Control"] = "public, max-age=300"
    _verdict_header(request, ex, resp)
    return resp


async def declare(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the rights declaration headers on every answer (the store's
    own values are kept where it sent them), and a Server header that names no versions
    where the store sent none (aiohttp has put its own there by now, naming Python's version
    and its own)."""
    headers = response.headers
    if headers.get("Server") == SERVER_SOFTWARE:
        headers["Server"] = "SonicShield"
    rights = request.app[RULES].current.rights
    ex = request.get(_EXCHANGE)
    if rights is not None and ex is not None:  # none for a refused head: no path to judge
        for name, value in rights.headers(ex.path):
            if name not in headers:
                headers[name] = value


def _verdict_headers(request: web.Request, ex: Exchange) -> dict[str, str]:
    if request.app[SETTINGS].verdict_header:
        return {"X-SonicShield-Verdict": ex.verdict.header_value}
    return {}


def _verdict_header(request: web.Request, ex: Exchange, resp: web.StreamResponse) -> None:
    resp.headers.update(_verdict_headers(request, ex))


async def respond(
    request: web.Request, ex: Exchange, ruleset: RuleSet, trap_hit: bool
) -> web.StreamResponse:
    app = request.app
    # Declarations (robots.txt, /.well-known/, ai.txt) are never blocked or tarpitted: they
    # are how the reservation is told.
    action = ex.verdict.action
    if ex.verdict.shadow or (ex.signals is not None
                             and ex.signals.content is ContentKind.DECLARATION):
        action = Action.ALLOW
    if action is Action.TARPIT:
        slow = await app[TARPITS].serve(request, ex, _verdict_headers(request, ex))
        if slow is not None:
            return slow
        action = Action.BLOCK  # every tarpit is busy: the cheaper answer
    if action in AUDIO_ACTIONS and ex.method in ("GET", "HEAD"):
        tags = ruleset.rights.tags(ex.path) if ruleset.rights is not None else {}
        return await _variant(request, ex, tags)
    if action is not Action.ALLOW:  # block, and an audio action asked to change anything else
        return local_response(request, ex, 403, "Forbidden", "This request was refused.")
    if trap_hit:  # the trap is the proxy's own page; the store never sees it
        return local_response(request, ex, 200, "Archive", "The archive is being prepared.")
    streams = app[STREAMS]
    if not streams.acquire(ex.client.ip):
        return local_response(request, ex, 429, "Too Many Requests",
                              "Too many parallel downloads.")
    try:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await proxy_websocket(request, ex, app[UPSTREAM])
        up = await open_upstream(request, ex, app[UPSTREAM])
        if ex.signals is not None and ex.signals.content is ContentKind.AUDIO:
            # seconds of real audio served: the rate learnt from a response from byte 0
            rates = app[AUDIO_RATES]
            head = rates.head(up.status, up.headers) if ex.method == "GET" else None
            resp = await stream_response(request, ex, up, app[UPSTREAM], head)
            ex.audio_rate = rates.rate(ex.path, head)
            return resp
        if "behaviour" not in ruleset.needs:
            return await stream_response(request, ex, up, app[UPSTREAM])
        # a sitemap or feed: its order, to see a client walk it (signals/listings.py)
        tracker = app[TRACKER]
        tap = tracker.listings.tap(ex.path, up.status, ex.method, up.headers)
        resp = await stream_response(request, ex, up, app[UPSTREAM], tap)
        if tap is not None and not ex.error:
            tracker.fetched_listing(ex.client.key, tracker.listings.learn(tap),
                                    time.monotonic())
        return resp
    except UpstreamError as exc:
        ex.error = exc.reason
        # the detail (the store's address, what failed) for the log, never for the visitor
        log_event(log, logging.WARNING, "upstream-failed", id=ex.id, reason=exc.reason,
                  detail=str(exc))
        app[METRICS].upstream_error(exc.reason)
        return local_response(request, ex, exc.status, *_UPSTREAM_PAGES[exc.status])
    finally:
        streams.release(ex.client.ip)


async def _variant(
    request: web.Request, ex: Exchange, tags: dict[str, str]
) -> web.StreamResponse:
    """An audio countermeasure (proxy/audio/): a variant carrying the rights `tags`, or the
    cheaper 403 when there is none to give, never the real file."""
    app = request.app
    streams = app[STREAMS]
    if not streams.acquire(ex.client.ip):
        return local_response(request, ex, 429, "Too Many Requests",
                              "Too many parallel downloads.")
    try:
        return await app[AUDIO].respond(request, ex, app[UPSTREAM], _verdict_headers(request, ex),
                                        tags)
    except Fallback as exc:
        ex.error = exc.reason
        title = {404: "Not Found", 502: "Bad Gateway"}.get(exc.status, "Forbidden")
        return local_response(request, ex, exc.status, title, "This request was refused."
                              if exc.status == 403 else "The file is not available.")
    finally:
        streams.release(ex.client.ip)


# What a visitor is told when the store fails: the status and what to do; the store's
# address and the failure's detail stay in the log.
_UPSTREAM_PAGES = {
    408: ("Request Timeout", "The request body stopped arriving."),
    413: ("Content Too Large", "The request body is too large."),
    502: ("Bad Gateway", "The site cannot be reached right now. Please try again shortly."),
    504: ("Gateway Timeout", "The site took too long to answer. Please try again shortly."),
}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{status} {title}</title></head>
<body><h1>{status} {title}</h1><p>{text}</p><p><small>Request {id}</small></p>
</body></html>
"""


def local_response(
    request: web.Request, ex: Exchange, status: int, title: str, text: str
) -> web.Response:
    """A small page the proxy answers itself (errors, blocks)."""
    body = _PAGE.format(status=status, title=title, text=html.escape(text), id=ex.id).encode()
    ex.status, ex.variant, ex.bytes_out = status, "local", len(body)
    resp = web.Response(status=status, body=body, content_type="text/html", charset="utf-8")
    resp.headers["Cache-Control"] = "no-store"
    if status == 429:
        resp.headers["Retry-After"] = "5"
    if status in (408, 413):  # the rest of the body is not coming, or not wanted
        resp.force_close()
    _verdict_header(request, ex, resp)
    return resp


