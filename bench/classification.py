"""Classification time inside the running proxy, with the shipped rules, under mixed traffic.

`python -m bench.classification [--requests N]` starts `sonicshield demo` (the demo store
behind SonicShield, shipped rules), sends listener sessions (Chrome's headers: a page, then
ranged audio reads with a Referer), self-declared AI crawlers, fake browsers and a crawler
rotating its address (127.0.0.2-250), then reads the proxy's own histogram
`sonicshield_classification_seconds` (classify + decide per request) from /metrics and reports
its median and p99, interpolated within buckets as Prometheus's histogram_quantile does.
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


async def traffic(base: str, n: int) -> int:
    sent = 0
    ranged = {"Range": "bytes=0-1023"}
    while sent < n:
        i = sent
        source = f"127.0.{1 + i // 250 % 200}.{2 + i % 248}"
        kind = i % 8
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with aiohttp.ClientSession(connector=connector) as s:
            track = TRACKS[i % len(TRACKS)]
            if kind < 4:  # a listener: page, then three ranged reads
                async with s.get(base + "/album/first-light", headers=LISTENER) as r:
                    await r.read()
                for t in TRACKS[:3]:
                    async with s.get(base + f"/stream/{t}.mp3", headers={
                        **LISTENER, **ranged, "Referer": base + "/album/first-light"}) as r:
                        await r.read()
                sent += 4
            elif kind < 6:  # a declared AI crawler
                for path in ("/robots.txt", "/track/" + track, f"/stream/{track}.mp3"):
                    # its pages are tarpitted: the verdict is made, no need to wait it out
                    with contextlib.suppress(TimeoutError):
                        async with s.get(base + path, headers={**GPTBOT, **ranged},
                                         timeout=aiohttp.ClientTimeout(total=0.2)) as r:
                            await r.read()
                    sent += 1
            else:  # a fake browser / rotating crawler
                async with s.get(base + f"/stream/{track}.mp3", headers={**FAKE, **ranged}) as r:
                    await r.read()
                sent += 1
    return sent


async def run(base: str, admin: str, n: int) -> str:
    await traffic(base, n)
    async with aiohttp.ClientSession() as s, s.get(admin + "/metrics") as r:
        return await r.text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
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
        text = asyncio.run(run(f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[2]}",
                               args.requests))
    finally:
        demo.terminate()
        demo.wait(30)
    buckets = [(float("inf") if le == "+Inf" else float(le), float(count)) for le, count in
               re.findall(r'sonicshield_classification_seconds_bucket\{le="([^"]+)"\} (\S+)', text)]
    print(f"requests classified: {buckets[-1][1]:.0f}")
    print(f"classify + decide, median: {quantile(0.5, buckets) * 1e6:.1f} us, "
          f"p99: {quantile(0.99, buckets) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
