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


@dataclass
class Metrics:
    registry: CollectorRegistry = REGISTRY
    requests: Counter = field(init=False)
    response_bytes: Counter = field(init=False)
    upstream_latency: Histogram = field(init=False)
    upstream_errors: Counter = field(init=False)
    in_flight: Gauge = field(init=False)
    rule_reloads: Counter = field(init=False)
    classification: Histogram = field(init=False)
    # one child per content kind, bound once (labels() costs about 1 us a call)
    classification_by: dict[ContentKind, Histogram] = field(default_factory=dict, init=False)
    evidence_records: Counter = field(init=False)
    evidence_dropped: Counter = field(init=False)
    _requests_by: dict[tuple[str, str], Counter] = field(default_factory=dict, init=False)
    _bytes_by: dict[str, Counter] = field(default_factory=dict, init=False)
    _errors_by: dict[str, Counter] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "sonicshield_requests", "Requests answered, by status class and verdict action",
            ["status_class", "action"], registry=r,
        )
        self.response_bytes = Counter(
            "sonicshield_response_bytes", "Response body bytes sent to clients, by verdict action",
            ["action"], registry=r,
        )
        self.upstream_latency = Histogram(
            "sonicshield_upstream_latency_seconds", "Time from sending a request upstream to its "
            "response headers", buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.upstream_errors = Counter(
            "sonicshield_upstream_errors", "Upstream failures by reason", ["reason"], registry=r,
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
        self.rule_reloads = Counter(
            "sonicshield_rule_reloads", "Rule reloads by result (ok, failed)", ["result"],
            registry=r,
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

    def record(self, ex: Exchange) -> None:
        action = ex.verdict.action.value
        key = (status_class(ex.status), action)
        counter = self._requests_by.get(key)
        if counter is None:
            counter = self._requests_by[key] = self.requests.labels(*key)
        counter.inc()
        if ex.bytes_out:
            by = self._bytes_by.get(action)
            if by is None:
                by = self._bytes_by[action] = self.response_bytes.labels(action)
            by.inc(ex.bytes_out)
        if ex.upstream_ms is not None:
            self.upstream_latency.observe(ex.upstream_ms / 1000.0)

    def upstream_error(self, reason: str) -> None:
        err = self._errors_by.get(reason)
        if err is None:
            err = self._errors_by[reason] = self.upstream_errors.labels(reason)
        err.inc()
