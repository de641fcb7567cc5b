"""build_app(settings): the proxy application with its long-lived resources."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry
from yarl import URL

from .admin import ReadinessCheck, upstream_readiness
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
from .audio.rates import AudioRates
from .audio.service import Countermeasures
from .classify import VerdictCache
from .deadlines import DeadlineWatch
from .evidence.writer import EvidenceLog
from .forward import Upstream, make_session
from .handler import declare, handle
from .inbound import bound_heads, site_authorities
from .metrics import Metrics
from .robots import RobotsSource
from .rules import LiveRules
from .settings import Settings
from .shared import SharedState
from .signals.behaviour import BehaviourTracker
from .signals.network import AsnDatabase
from .signals.verify import CrawlerVerifier
from .state import ClientStore
from .streams import StreamLimiter
from .tarpit import Tarpits
from .trap import TrapLinks


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    session = make_session(settings)
    deadlines = DeadlineWatch()
    watchdog = asyncio.create_task(deadlines.run(), name="deadline-watch")
    robots = app[ROBOTS]
    await robots.fetch(session)  # the store's robots.txt before the first request
    robots_refresh = asyncio.create_task(robots.run(session), name="robots-refresh")
    app[UPSTREAM] = Upstream(
        session=session,
        base=URL(settings.upstream.url),
        host_header=settings.upstream.host_header,
        settings=settings,
        deadlines=deadlines,
        traps=TrapLinks(settings.traps.path) if settings.traps.enabled else None,
        authorities=site_authorities(settings.upstream.url, settings.upstream.public_url),
    )
    stop_probing = asyncio.Event()
    health = asyncio.create_task(
        _probe_health(app, upstream_readiness(settings, session), stop_probing),
        name="health-probe")
    yield
    watchdog.cancel()
    robots_refresh.cancel()
    stop_probing.set()  # a probe under way finishes (3 s at most): no request cut off mid-way
    await health
    await session.close()
    await app[VERIFIER].close()
    app[ASN].close()
    await app[AUDIO].aclose()


async def _probe_health(app: web.Application, probe: ReadinessCheck,
                        stop: asyncio.Event) -> None:
    """sonicshield_upstream_up from the store's health probe, on a timer: true when no
    request passes, and never set by one request's luck."""
    metrics, interval = app[METRICS], app[SETTINGS].upstream.health_interval
    while not stop.is_set():
        ok, _ = await probe()
        metrics.set_upstream(ok)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


GAUGE_REFRESH = 2.0  # seconds


async def _gauges_ctx(app: web.Application) -> AsyncIterator[None]:
    """Gauges of state the hot path does not touch, refreshed every few seconds (and the
    verdict cache's counts: the hot path keeps them as plain integers)."""
    metrics = app[METRICS]
    verdicts = app[VERDICTS]
    counted = {"hit": 0, "miss": 0}  # what the counters already hold

    async def refresh() -> None:
        while True:
            metrics.tracked_clients.set(len(app[TRACKER].store))
            for result, n in (("hit", verdicts.hits), ("miss", verdicts.misses)):
                metrics.verdict_cache.labels(result).inc(n - counted[result])
                counted[result] = n
            metrics.variant_jobs.set(app[AUDIO].jobs)
            evidence = app.get(EVIDENCE)
            if evidence is not None:
                metrics.evidence_queue.set(evidence.queued)
            await asyncio.sleep(GAUGE_REFRESH)

    task = asyncio.create_task(refresh(), name="gauges")
    yield
    task.cancel()


async def _evidence_ctx(app: web.Application) -> AsyncIterator[None]:
    evidence = app[EVIDENCE]
    await evidence.start()
    yield
    await evidence.aclose()


async def _shared_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[SHARED].aclose()


def build_app(
    settings: Settings, rules: LiveRules, metrics: Metrics | None = None, chain: str = "main",
    clients: ClientStore | None = None,
) -> web.Application:
    """chain: this process's evidence chain ("main", or "w0".. for the workers); clients: the
    client store the workers share (default: one of this process's own)."""
    app = web.Application(client_max_size=0)
    app[SETTINGS] = settings
    app[RULES] = rules
    app[METRICS] = metrics or Metrics(CollectorRegistry())
    app[STREAMS] = StreamLimiter(settings.limits.streams_per_client, app[METRICS].in_flight)
    app[ROBOTS] = RobotsSource(settings.upstream.url + "/robots.txt",
                               settings.upstream.robots_refresh,
                               settings.traps.path if settings.traps.enabled else None,
                               settings.upstream.public_url)
    if clients is None:
        clients = ClientStore(settings.limits.tracked_clients)
    app[TRACKER] = BehaviourTracker(clients)
    app[TARPITS] = Tarpits(settings.limits.tarpits)
    app[ASN] = AsnDatabase(settings.network.asn_database)
    app[VERDICTS] = VerdictCache(clients, app[ASN], settings.limits.verdict_cache)
    app[VERIFIER] = CrawlerVerifier()
    app[AUDIO] = Countermeasures.from_settings(settings.audio)
    app[AUDIO_RATES] = AudioRates()
    variants = app[METRICS].variants
    app[AUDIO].on_lookup = lambda action, result: variants.labels(action, result).inc()
    if settings.shared_state.redis_url is not None:
        app[SHARED] = SharedState(settings.shared_state, clients, app[METRICS])
        app.cleanup_ctx.append(_shared_ctx)
    if settings.evidence.enabled:
        app[EVIDENCE] = EvidenceLog(settings.evidence, chain, app[METRICS],
                                    settings.network.asn_database, settings.log)
        app.cleanup_ctx.append(_evidence_ctx)
    app.cleanup_ctx.append(_upstream_ctx)
    app.cleanup_ctx.append(_gauges_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_response_prepare.append(declare)
    return app


async def start_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The proxy app's runner, set up with the server limits below and the cap on the whole
    request head (proxy/inbound.py); sites are added by the caller."""
    runner = web.AppRunner(app, handle_signals=False, **runner_kwargs(settings))  # type: ignore[arg-type]
    await runner.setup()
    assert runner.server is not None
    bound_heads(runner.server, settings.limits.max_request_head)
    return runner


def runner_kwargs(settings: Settings) -> dict[str, object]:
    """Server limits for AppRunner: header sizes, header deadline/keep-alive, drain time."""
    return {
        "access_log": None,
        "keepalive_timeout": settings.timeouts.client_header,
        "shutdown_timeout": settings.timeouts.shutdown_grace,
        "max_line_size": settings.limits.max_request_line,
        "max_field_size": settings.limits.max_header_field,
        "max_headers": settings.limits.max_headers,
    }
