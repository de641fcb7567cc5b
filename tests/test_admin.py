"""The admin listener: metrics after real traffic, liveness, readiness against the upstream."""

from __future__ import annotations

import asyncio

import aiohttp

from .conftest import free_port, metric_sum


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, (await r.read()).decode("utf-8", "replace")


def test_metrics_health_and_readiness(spawn_proxy, upstream_process):
    proxy = spawn_proxy(upstream_process, admin=True)
    admin = f"http://127.0.0.1:{proxy.admin_port}"

    async def scenario() -> None:
        for path in ("/echo", "/echo", "/bytes/1000", "/missing"):
            await _get(proxy.url + path)
        status, text = await _get(admin + "/metrics")
        assert status == 200
        requests = "sonicshield_requests_total"
        assert metric_sum(text, requests, action="allow", status_class="2xx") == 3
        assert metric_sum(text, requests, action="allow", status_class="4xx") == 1
        assert metric_sum(text, requests, rule="allow-everything") == 4
        assert metric_sum(text, "sonicshield_response_bytes_total", action="allow",
                          served="real") >= 1000
        assert metric_sum(text, "sonicshield_upstream_latency_seconds_count") == 4
        assert metric_sum(text, "sonicshield_upstream_up") == 1
        assert metric_sum(text, "sonicshield_in_flight_streams") == 0
        assert await _get(admin + "/healthz") == (200, '{"status": "ok"}')
        status, text = await _get(admin + "/readyz")
        assert (status, '"ready"' in text) == (200, True)
        # the admin paths on the proxy port are the store's, not the admin's
        status, _ = await _get(proxy.url + "/metrics")
        assert status == 404

    asyncio.run(scenario())


def test_readiness_fails_when_the_upstream_is_down(spawn_proxy):
    proxy = spawn_proxy(f"http://127.0.0.1:{free_port()}", admin=True)
    status, text = asyncio.run(_get(f"http://127.0.0.1:{proxy.admin_port}/readyz"))
    assert status == 503
    assert "upstream unreachable" in text
