"""An open-loop listener: `python -m bench.listener URL RATE SECONDS` sends RATE GET requests a
second for SECONDS, each at its scheduled time whatever the others are doing (so a slow
answer does not hold back the next request), and prints every request as a JSON list of
[sent, seconds]: when it was sent (time.monotonic(), the same clock in every process of the
machine, so a bench can tell which phase of its own a request fell in) and its latency. Any
non-200 answer is an error (exit 1)."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp


async def latencies(url: str, rate: float, seconds: float) -> list[tuple[float, float]]:
    times: list[tuple[float, float]] = []
    failed: list[int] = []
    headers = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Firefox/133.0",
               "Accept-Language": "en"}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as s:
        start = time.monotonic() + 0.2

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            t = time.monotonic()
            async with s.get(url) as r:
                await r.read()
                if r.status != 200:
                    failed.append(r.status)
            times.append((t, time.monotonic() - t))

        await asyncio.gather(*(one(i) for i in range(int(rate * seconds))))
    if failed:
        raise SystemExit(f"{url}: {len(failed)} answers were not 200 (first: {failed[0]})")
    return times


if __name__ == "__main__":
    print(json.dumps(asyncio.run(latencies(sys.argv[1], float(sys.argv[2]),
                                           float(sys.argv[3])))))
