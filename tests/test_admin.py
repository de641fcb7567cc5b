"""The admin listener: metrics after real traffic, liveness, readiness against the upstream."""

from __future__ import annotations

import asyncio

import aiohttp

from .conftest import free_port


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
        samples = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
                   for ln in text.splitlines() if ln and not ln.startswith("#")}
        assert samples['sonicshield_requests_total{action="allow",status_class="2xx"}'] == 3
        assert samples['sonicshield_requests_total{action="allow",status_class="4xx"}'] == 1
        assert samples['sonicshield_response_bytes_total{action="allow"}'] >= 1000
        assert samples["sonicshield_upstream_latency_seconds_count"] == 4
        assert samples["sonicshield_in_flight_streams"] == 0
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
