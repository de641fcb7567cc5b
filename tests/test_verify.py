"""Forward-confirmed reverse DNS with the machine's real resolver (127.0.0.1 is localhost)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from proxy.signals.verify import PENDING, UNVERIFIED, VERIFIED, CrawlerVerifier

from .conftest import RULES_DIR, proxy_settings, shipped_rules

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


async def settle(verifier: CrawlerVerifier, ip: str, agent: str) -> str:
    deadline = time.monotonic() + 10
    while (status := verifier.status(ip, agent, time.monotonic())) == PENDING:
        assert time.monotonic() < deadline, "verification did not finish"
        await asyncio.sleep(0.02)
    return status


async def test_a_name_in_the_operators_domain_that_resolves_back_is_verified():
    verifier = CrawlerVerifier(domains={"testbot": ("localhost",), "googlebot": ("google.com",)})
    assert await settle(verifier, "127.0.0.1", "TestBot") == VERIFIED
    # the same address claiming Googlebot: its name is not Google's
    assert await settle(verifier, "127.0.0.1", "Googlebot") == UNVERIFIED
    # an agent with no published domains has nothing to verify
    assert verifier.status("127.0.0.1", "GPTBot", time.monotonic()) == ""
    await verifier.close()


async def test_checks_are_bounded():
    verifier = CrawlerVerifier(domains={"testbot": ("localhost",)}, max_pending=2)
    for i in range(50):
        verifier.status(f"127.0.1.{i}", "TestBot", time.monotonic())
    assert len(verifier._pending) == 2
    await verifier.close()


async def test_a_fake_googlebot_loses_the_audio_once_disproved(aiohttp_server, run_proxy):
    async def audio(_: web.Request) -> web.Response:
        return web.Response(body=b"ID3 real audio")

    store = web.Application()
    store.router.add_get("/{tail:.*}", audio)
    upstream = await aiohttp_server(store)
    base = await run_proxy(proxy_settings(f"http://127.0.0.1:{upstream.port}",
                                          rules_dir=RULES_DIR, verdict_header=True),
                           shipped_rules())
    statuses = []
    async with aiohttp.ClientSession(headers={"User-Agent": GOOGLEBOT}) as s:
        deadline = time.monotonic() + 10
        while not statuses or statuses[-1] == 200:
            assert time.monotonic() < deadline, statuses
            async with s.get(base + "/stream/a.mp3") as r:
                await r.read()
                statuses.append(r.status)
                verdict = r.headers["X-SonicShield-Verdict"]
            await asyncio.sleep(0.02)
    # served while the check ran (a real Googlebot's first request is not refused), then not
    assert statuses[-1] == 403
    assert verdict.endswith("false-search-engine-audio")
