"""Per-client cap on concurrent responses, and the in-flight gauge.

One dict entry per client that has a response open right now; entries go when their count
drops to zero, so the table is bounded by the number of open connections, not by history.
"""

from __future__ import annotations

from prometheus_client import Gauge


class StreamLimiter:
    def __init__(self, per_client: int, gauge: Gauge) -> None:
        self.per_client = per_client  # 0 = unlimited
        self.gauge = gauge
        self.open: dict[str, int] = {}

    def acquire(self, client: str) -> bool:
        count = self.open.get(client, 0)
        if self.per_client and count >= self.per_client:
            return False
        self.open[client] = count + 1
        self.gauge.inc()
        return True

    def release(self, client: str) -> None:
        count = self.open.get(client, 0) - 1
        if count > 0:
            self.open[client] = count
        else:
            self.open.pop(client, None)
        self.gauge.dec()
