"""Prometheus metrics. Labels are bounded sets only: never an address, a raw UA or an ASN.

Children are bound once per label combination and cached, so the hot path pays a dict lookup
and an increment, not a `labels()` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from .exchange import ContentKind, Exchange

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CLASSIFY_BUCKETS = tuple(us / 1e6 for us in (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100, 250, 1000))


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "none"


def rule_label(origin: str) -> str:
    """A verdict's rule name ("rules/20-ai.yaml:14 ai-audio" -> "ai-audio"): bounded by the
    rule files, stable across edits that move a rule."""
    return origin.rsplit(" ", 1)[-1]


def served_label(variant: str) -> str:
    """What kind of body a client got: the store's own (real), a substituted audio variant,
    or a page the proxy made itself (local: blocks, errors, robots.txt, tarpits)."""
    if variant == "upstream":
        return "real"
    if variant in ("local", "robots.txt", "declaration", "tarpit"):
        return "local"
    return "variant"


@dataclass
class Metrics:
    """Every metric of the proxy (the catalogue is in the README). Labels come from bounded
    sets only: status class, action, rule name, UA class, the operator of a known agent
    (from the vendored list), content kind, what was served."""

    registry: CollectorRegistry = REGISTRY
    requests: Counter = field(init=False)
    response_bytes: Counter = field(init=False)
    upstream_latency: Histogram = field(init=False)
    upstream_errors: Counter = field(init=False)
    upstream_up: Gauge = field(init=False)
    in_flight: Gauge = field(init=False)
    rule_reloads: Counter = field(init=False)
    classification: Histogram = field(init=False)
    # one child per content kind, bound once (labels() costs about 1 us a call)
    classification_by: dict[ContentKind, Histogram] = field(default_factory=dict, init=False)
    audio_seconds: Counter = field(init=False)
    robots_states: Counter = field(init=False)
    trap_hits: Counter = field(init=False)
    shadowed: Counter = field(init=False)
    tracked_clients: Gauge = field(init=False)
    verdict_cache: Counter = field(init=False)
    shared_state_up: Gauge = field(init=False)
    shared_state_errors: Counter = field(init=False)
    variants: Counter = field(init=False)
    variant_jobs: Gauge = field(init=False)
    evidence_records: Counter = field(init=False)
    evidence_dropped: Counter = field(init=False)
    evidence_queue: Gauge = field(init=False)
    _requests_by: dict[tuple[str, ...], tuple[Counter, Counter]] = field(
        default_factory=dict, init=False)
    _errors_by: dict[str, Counter] = field(default_factory=dict, init=False)
    _robots_by: dict[tuple[str, str], Counter] = field(default_factory=dict, init=False)
    _seconds_by: dict[tuple[str, str], Counter] = field(default_factory=dict, init=False)
    _up: float = field(default=-1.0, init=False)

    def __post_init__(self) -> None:
        r = self.registry
        labels = ["status_class", "action", "rule", "ua_class", "operator", "content"]
        self.requests = Counter(
            "sonicshield_requests", "Requests answered, by status class, verdict action, the "
            "rule that decided, the client's UA class and agent operator, and content kind",
            labels, registry=r,
        )
        self.response_bytes = Counter(
            "sonicshield_response_bytes", "Response body bytes sent, by the same labels and "
            "what was served: real (the store's own), variant (substituted audio), local",
            [*labels, "served"], registry=r,
        )
        self.upstream_latency = Histogram(
            "sonicshield_upstream_latency_seconds", "Time from sending a request upstream to its "
            "response headers", buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.upstream_errors = Counter(
            "sonicshield_upstream_errors", "Upstream failures by reason", ["reason"], registry=r,
        )
        self.upstream_up = Gauge(
            "sonicshield_upstream_up", "1 when the store answered the last health probe "
            "(upstream.health_path, every upstream.health_interval seconds), 0 when it did not",
            registry=r,
            multiprocess_mode="min",
        )
        self.in_flight = Gauge(
            "sonicshield_in_flight_streams", "Responses being streamed right now",
            registry=r, multiprocess_mode="livesum",
        )
        self.classification = Histogram(
            "sonicshield_classification_seconds", "Time to classify a request and decide its "
            "verdict, by content kind", ["content"], buckets=_CLASSIFY_BUCKETS, registry=r,
        )
        self.classification_by = {k: self.classification.labels(k.value) for k in ContentKind}
        self.verdict_cache = Counter(
            "sonicshield_verdict_cache_lookups", "Requests whose verdict was looked up in the "
            "per-client verdict cache, by result: hit (reused) or miss (classified)",
            ["result"], registry=r,
        )
        self.rule_reloads = Counter(
            "sonicshield_rule_reloads", "Rule reloads by result (ok, failed)", ["result"],
            registry=r,
        )
        self.audio_seconds = Counter(
            "sonicshield_audio_seconds", "Seconds of audio sent (body bytes times the track's "
            "seconds per byte), by what was served (real, variant) and the client's UA class",
            ["served", "ua_class"], registry=r,
        )
        self.robots_states = Counter(
            "sonicshield_robots_state", "Requests by the client's robots.txt state when a rule "
            "asked for it: unseen, compliant, violated-after-reading, violated-without-reading",
            ["state", "ua_class"], registry=r,
        )
        self.trap_hits = Counter(
            "sonicshield_trap_hits", "Requests for the hidden trap links", ["ua_class"],
            registry=r,
        )
        self.shadowed = Counter(
            "sonicshield_shadow_verdicts", "What rules in shadow mode would have done (the rules "
            "after them decided what was served), by action and rule", ["action", "rule"],
            registry=r,
        )
        self.tracked_clients = Gauge(
            "sonicshield_tracked_clients", "Client keys remembered (addresses, networks, "
            "fingerprints), at most limits.tracked_clients", registry=r,
            multiprocess_mode="livesum",
        )
        self.shared_state_up = Gauge(
            "sonicshield_shared_state_up", "1 while the Redis shared client state answers, 0 "
            "while this instance classifies with its own state alone (set only with "
            "shared_state.redis_url)", registry=r, multiprocess_mode="min",
        )
        self.shared_state_errors = Counter(
            "sonicshield_shared_state_errors", "Redis calls for the shared client state that "
            "failed or timed out", registry=r,
        )
        self.variants = Counter(
            "sonicshield_variants", "Audio variant lookups: hit (cached), miss (made now), "
            "fallback (could not be made in time: the cheaper 403)", ["action", "result"],
            registry=r,
        )
        self.variant_jobs = Gauge(
            "sonicshield_variant_jobs", "Audio fetches and codec jobs under way (at most "
            "audio.max_jobs)", registry=r, multiprocess_mode="livesum",
        )
        self.evidence_records = Counter(
            "sonicshield_evidence_records", "Evidence records written, by kind", ["kind"],
            registry=r,
        )
        self.evidence_dropped = Counter(
            "sonicshield_evidence_dropped", "Evidence records lost, by reason (queue-full: "
            "the writer fell behind; write-failed: disk full or the log unwritable)",
            ["reason"], registry=r,
        )
        self.evidence_queue = Gauge(
            "sonicshield_evidence_queue", "Evidence records waiting for the writer",
            registry=r, multiprocess_mode="livesum",
        )

        # Series that alerts and panels take increase() of exist from the start at 0: a
        # counter that first appears at 1 shows no increase in Prometheus.
        for result in ("ok", "failed"):
            self.rule_reloads.labels(result)
        for reason in ("queue-full", "write-failed"):
            self.evidence_dropped.labels(reason)
        for reason in ("upstream-unreachable", "upstream-timeout", "upstream-error"):
            self.upstream_errors.labels(reason)
        for action in ("truncate", "decoy", "poison", "watermark"):
            for result in ("hit", "miss", "fallback"):
                self.variants.labels(action, result)

    def record(self, ex: Exchange) -> None:
        s = ex.signals
        if s is None:
            key: tuple[str, ...] = (status_class(ex.status), ex.verdict.action.value,
                                    ex.verdict.origin, "", "", "", ex.variant)
        else:
            key = (status_class(ex.status), ex.verdict.action.value, ex.verdict.origin,
                   s.ua_class, s.operator, s.content.value, ex.variant)
        children = self._requests_by.get(key)
        if children is None:
            labels = (*key[:2], rule_label(key[2]), key[3] or "none", key[4] or "none",
                      key[5] or "none")
            children = self._requests_by[key] = (
                self.requests.labels(*labels),
                self.response_bytes.labels(*labels, served_label(ex.variant)))
        children[0].inc()
        if ex.verdict.shadowed is not None:
            self.shadowed.labels(ex.verdict.shadowed.action.value,
                                 rule_label(ex.verdict.shadowed.origin)).inc()
        if ex.bytes_out:
            children[1].inc(ex.bytes_out)
        if ex.upstream_ms is not None:
            self.upstream_latency.observe(ex.upstream_ms / 1000.0)
        if ex.audio_rate and ex.bytes_out:
            key2 = (served_label(ex.variant), s.ua_class if s is not None else "none")
            seconds = self._seconds_by.get(key2)
            if seconds is None:
                seconds = self._seconds_by[key2] = self.audio_seconds.labels(*key2)
            seconds.inc(ex.bytes_out * ex.audio_rate)
        if s is not None and s.robots:
            robots = self._robots_by.get((s.robots, s.ua_class))
            if robots is None:
                robots = self._robots_by[s.robots, s.ua_class] = self.robots_states.labels(
                    s.robots, s.ua_class)
            robots.inc()

    def set_upstream(self, up: bool) -> None:
        value = 1.0 if up else 0.0
        if value != self._up:
            self._up = value
            self.upstream_up.set(value)

    def upstream_error(self, reason: str) -> None:
        err = self._errors_by.get(reason)
        if err is None:
            err = self._errors_by[reason] = self.upstream_errors.labels(reason)
        err.inc()
