"""Classification time inside the running proxy, with the shipped rules, under mixed traffic.

`python -m bench.classification [--visits N] [--concurrency C]` starts `sonicshield demo` (the
demo store behind SonicShield, shipped rules) and sends N client visits, C at a time, each from
its own source address (127.0.x.y): half are listeners (Chrome's headers; the artist and album
pages with the subresources a browser fetches for them, then two plays, each one
`Range: bytes=0-` request with a Referer, as an <audio> element makes), a quarter self-declared
AI crawlers (robots.txt, a page, a track), a quarter fake browsers (a track, no context). Then
it reads the proxy's own histogram `sonicshield_classification_seconds` (classify + decide per
request, by content kind) from /metrics and reports the median and p99 of all requests and of
each kind, interpolated within buckets as Prometheus's histogram_quantile does, and how many
verdicts came from the per-client verdict cache.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
LISTENER = {"User-Agent": CHROME, "Accept-Language": "en-GB,en;q=0.9",
            "Accept-Encoding": "gzip, deflate, br", "Sec-Fetch-Mode": "navigate"}
GPTBOT = {"User-Agent": "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)"}
FAKE = {"User-Agent": CHROME, "Accept": "*/*"}
# a listener's page views, with the subresources a browser fetches for them (the demo store's
# pages link one stylesheet and the covers; a browser also asks for /favicon.ico)
LISTENER_VISIT = ("/", "/static/style.css", "/cover/first-light.png", "/cover/night-orchard.png",
                  "/favicon.ico", "/album/first-light")
TRACKS = ("harbour-at-dawn", "salt-and-cedar", "low-tide-lanterns", "moth-waltz", "glasshouse",
          "orchard-lights-out")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1)
        prev_le, prev_count = le, count
    return prev_le


async def traffic(base: str, n: int, concurrency: int) -> None:
    """n client visits, `concurrency` at a time, so the proxy is busy (a proxy idling between
    requests runs its code with cold CPU caches, several times slower)."""
    visits = iter(range(n))

    async def client() -> None:
        for i in visits:
            await visit(base, i)

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def visit(base: str, i: int) -> None:
    """One client's visit, from its own source address."""
    source = f"127.0.{1 + i // 250 % 200}.{2 + i % 248}"
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as s:
        track = TRACKS[i % len(TRACKS)]
        kind = i % 8
        if kind < 4:  # a listener: what Chromium fetches for the pages, then two plays
            for path in LISTENER_VISIT:
                async with s.get(base + path, headers=LISTENER) as r:
                    await r.read()
            for t in (TRACKS[i % 3], TRACKS[3 + i % 3]):
                # an <audio> element asks once, "bytes=0-", and streams what it needs
                async with s.get(base + f"/stream/{t}.mp3", headers={
                        **LISTENER, "Range": "bytes=0-", "Sec-Fetch-Mode": "no-cors",
                        "Referer": base + "/album/first-light"}) as r:
                    await r.content.read(65536)
            return
        ranged = {"Range": "bytes=0-1023"}
        if kind < 6:  # a declared AI crawler
            for path in ("/robots.txt", "/track/" + track, f"/stream/{track}.mp3"):
                # its pages are tarpitted: the verdict is made, no need to wait it out
                with contextlib.suppress(TimeoutError):
                    async with s.get(base + path, headers={**GPTBOT, **ranged},
                                     timeout=aiohttp.ClientTimeout(total=0.2)) as r:
                        await r.read()
            return
        # a fake browser / rotating crawler
        async with s.get(base + f"/stream/{track}.mp3", headers={**FAKE, **ranged}) as r:
            await r.read()


async def run(base: str, admin: str, n: int, concurrency: int) -> str:
    await traffic(base, n, concurrency)
    # the verdict cache's counts reach the metrics every 2 s (proxy/app.py): poll for them
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(admin + "/metrics") as r:
                text = await r.text()
            judged = sum(float(c) for c in re.findall(
                r'sonicshield_classification_seconds_count\{[^}]*\} (\S+)', text))
            looked_up = sum(float(c) for c in re.findall(
                r'sonicshield_verdict_cache_lookups_total\{[^}]*\} (\S+)', text))
            if looked_up >= judged or time.monotonic() > deadline:
                return text
            await asyncio.sleep(0.5)


def report(metrics: str) -> None:
    by_kind: dict[str, dict[float, float]] = {}
    for kind, le, count in re.findall(
            r'sonicshield_classification_seconds_bucket\{content="([^"]+)",le="([^"]+)"\} (\S+)',
            metrics):
        by_kind.setdefault(kind, {})[float("inf") if le == "+Inf" else float(le)] = float(count)
    total: dict[float, float] = {}
    for buckets in by_kind.values():
        for le, count in buckets.items():
            total[le] = total.get(le, 0.0) + count
    hits = re.search(r'sonicshield_verdict_cache_lookups_total\{result="hit"\} (\S+)', metrics)
    misses = re.search(r'sonicshield_verdict_cache_lookups_total\{result="miss"\} (\S+)',
                       metrics)
    if hits and misses:
        h, m = float(hits[1]), float(misses[1])
        print(f"verdict cache: {h:.0f} hits, {m:.0f} misses ({h / max(h + m, 1):.0%} reused)")
    print(f"{'requests':12} {'count':>7} {'median us':>10} {'p99 us':>8}")
    for name, buckets in [("all", total), *sorted(by_kind.items())]:
        series = sorted(buckets.items())
        if series[-1][1]:
            print(f"{name:12} {series[-1][1]:7.0f} {quantile(0.5, series) * 1e6:10.1f} "
                  f"{quantile(0.99, series) * 1e6:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    ports = [free_port() for _ in range(3)]
    demo = subprocess.Popen(
        [sys.executable, "-m", "proxy", "demo", "--port", str(ports[0]), "--store-port",
         str(ports[1]), "--admin-port", str(ports[2])],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", ports[0]), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or demo.poll() is not None:
                    raise SystemExit("the demo did not start") from None
                time.sleep(0.1)
        metrics = asyncio.run(run(f"http://127.0.0.1:{ports[0]}",
                                  f"http://127.0.0.1:{ports[2]}", args.visits, args.concurrency))
    finally:
        demo.terminate()
        demo.wait(30)
    report(metrics)


if __name__ == "__main__":
    main()
