"""What the proxy knows about a client is one picture, however many workers (and, with Redis,
instances) its requests land on."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .conftest import ProxyProcess, free_port, metric_sum, wait_for_port

MANY_TRACKS_RULES = Path(__file__).parent / "fixtures" / "rules-many-tracks"


async def requests_until_refused(url: str, limit: int = 60) -> int:
    """A crawler taking distinct tracks one after another, each on a new connection (so the
    kernel spreads them over the workers), as a player would ask (Range, a Referer on the
    store): only the number of distinct tracks gives it away. Returns the request number
    (1-based) of the first refusal."""
    async with aiohttp.ClientSession() as s:
        for i in range(1, limit + 1):
            async with s.get(f"{url}/echo/track-{i}.mp3", headers={
                    "Range": "bytes=0-", "Referer": f"{url}/album", "Connection": "close",
                    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"}) as r:
                await r.read()
                if r.status == 403:
                    return i
    raise AssertionError(f"never refused in {limit} requests")


def workers_that_served(proxy: ProxyProcess) -> set[int]:
    lines = (json.loads(line) for line in proxy.log.splitlines() if line.startswith("{"))
    return {line["worker"] for line in lines if line.get("event") == "access"}


def test_a_crawler_is_caught_as_fast_with_two_workers_as_with_one(spawn_proxy, upstream_process):
    extra = "log: {format: json, access_log: true}\n"
    one = spawn_proxy(upstream_process, extra=extra, rules_dir=MANY_TRACKS_RULES)
    alone = asyncio.run(requests_until_refused(one.url))
    assert one.stop() == 0
    two = spawn_proxy(upstream_process, extra=extra + "workers: 2\n", rules_dir=MANY_TRACKS_RULES)
    two.wait_for_log('"event":"listening"', count=2)  # both workers
    shared = asyncio.run(requests_until_refused(two.url))
    served = workers_that_served(two)
    assert two.stop() == 0
    assert served == {0, 1}  # the requests did land on both workers
    assert 12 <= alone <= 24  # MANY_TRACKS distinct tracks, as the 64-bit linear counter sees them
    assert shared == alone


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path, free_port())
    yield server
    server.stop()


class RedisServer:
    """A real redis-server on loopback, without persistence, that a test can stop and start."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.tmp, self.port = tmp, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


async def alternating_until_refused(urls: list[str], limit: int = 60) -> int:
    """requests_until_refused, each request to the next instance in turn."""
    async with aiohttp.ClientSession() as s:
        for i in range(1, limit + 1):
            url = urls[i % len(urls)]
            async with s.get(f"{url}/echo/track-{i}.mp3", headers={
                    "Range": "bytes=0-", "Referer": f"{url}/album",
                    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"}) as r:
                await r.read()
                if r.status == 403:
                    return i
    raise AssertionError(f"never refused in {limit} requests")


def shared_config(redis: RedisServer, prefix: str) -> str:
    return (f"shared_state: {{redis_url: '{redis.url}', key_prefix: '{prefix}', "
            "timeout: 0.5, retry: 0.2}\nlog: {format: json, access_log: false}\n")


def test_two_instances_sharing_redis_classify_an_alternating_crawler_as_one(
        spawn_proxy, upstream_process, redis_server):
    alone = spawn_proxy(upstream_process, rules_dir=MANY_TRACKS_RULES)
    expected = asyncio.run(alternating_until_refused([alone.url]))
    a = spawn_proxy(upstream_process, extra=shared_config(redis_server, "t1:"),
                    rules_dir=MANY_TRACKS_RULES)
    b = spawn_proxy(upstream_process, extra=shared_config(redis_server, "t1:"),
                    rules_dir=MANY_TRACKS_RULES)
    assert asyncio.run(alternating_until_refused([a.url, b.url])) == expected
    # without the shared state each instance sees every other track: it takes twice as many
    c = spawn_proxy(upstream_process, rules_dir=MANY_TRACKS_RULES)
    d = spawn_proxy(upstream_process, rules_dir=MANY_TRACKS_RULES)
    assert asyncio.run(alternating_until_refused([c.url, d.url])) > expected + 4
    for p in (alone, a, b, c, d):
        assert p.stop() == 0
    assert "shared-state-down" not in a.log + b.log


def test_redis_going_away_fails_no_request_and_is_rejoined(
        spawn_proxy, upstream_process, redis_server):
    proxy = spawn_proxy(upstream_process, extra=shared_config(redis_server, "t2:"),
                        rules_dir=MANY_TRACKS_RULES, admin=True)
    metrics_url = f"http://127.0.0.1:{proxy.admin_port}/metrics"

    async def tracks(n: int, start: int) -> list[int]:
        async with aiohttp.ClientSession() as s:
            statuses = []
            for i in range(start, start + n):
                async with s.get(f"{proxy.url}/echo/track-{i}.mp3",
                                 headers={"Range": "bytes=0-"}) as r:
                    await r.read()
                    statuses.append(r.status)
            return statuses

    async def up() -> float:
        async with aiohttp.ClientSession() as s, s.get(metrics_url) as r:
            return metric_sum(await r.text(), "sonicshield_shared_state_up")

    assert asyncio.run(tracks(3, 1)) == [200, 200, 200]
    assert asyncio.run(up()) == 1.0
    redis_server.stop()
    assert asyncio.run(tracks(3, 4)) == [200, 200, 200]  # no request fails for it
    assert asyncio.run(up()) == 0.0
    proxy.wait_for_log('"event":"shared-state-down"')
    redis_server.start()
    proxy.wait_for_log('"event":"shared-state-up"')
    assert asyncio.run(up()) == 1.0
    assert asyncio.run(tracks(2, 7)) == [200, 200]
    assert proxy.log.count('"event":"shared-state-down"') == 1  # once, not once per request
    assert "Traceback" not in proxy.log
    assert proxy.stop() == 0
