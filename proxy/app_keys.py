"""Typed keys for the long-lived resources of the proxy application."""

from __future__ import annotations

from aiohttp import web

from .audio.rates import AudioRates
from .audio.service import Countermeasures
from .classify import VerdictCache
from .evidence.writer import EvidenceLog
from .forward import Upstream
from .metrics import Metrics
from .robots import RobotsSource
from .rules import LiveRules
from .settings import Settings
from .shared import SharedState
from .signals.behaviour import BehaviourTracker
from .signals.network import AsnDatabase
from .signals.verify import CrawlerVerifier
from .streams import StreamLimiter
from .tarpit import Tarpits

SETTINGS = web.AppKey("settings", Settings)
AUDIO = web.AppKey("audio", Countermeasures)
AUDIO_RATES = web.AppKey("audio_rates", AudioRates)
UPSTREAM = web.AppKey("upstream", Upstream)
METRICS = web.AppKey("metrics", Metrics)
RULES = web.AppKey("rules", LiveRules)
STREAMS = web.AppKey("streams", StreamLimiter)
ROBOTS = web.AppKey("robots", RobotsSource)
TRACKER = web.AppKey("tracker", BehaviourTracker)  # and its client store
VERDICTS = web.AppKey("verdicts", VerdictCache)  # the worker's per-client verdict cache
TARPITS = web.AppKey("tarpits", Tarpits)
ASN = web.AppKey("asn", AsnDatabase)
VERIFIER = web.AppKey("verifier", CrawlerVerifier)
EVIDENCE = web.AppKey("evidence", EvidenceLog)  # absent when evidence.enabled is false
SHARED = web.AppKey("shared", SharedState)  # present only with shared_state.redis_url
