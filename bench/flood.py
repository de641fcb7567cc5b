"""A crawler flood over 200 distinct tracks with a cold variant cache, against listeners.

`python -m bench.flood` starts a store (aiohttp, in a subprocess) serving 200 distinct MP3s
(one synthesised 60 s track with a different ID3 title each, so each has its own content and
ETag) and a page, and SonicShield in front of it (`sonicshield run`, shipped rules, its own
process) with a cold cache. Then:

1. idle: listeners (Chrome's headers, 8 at a time) fetch the page, 2,000 times: p50/p99;
2. flood: the same listeners while a declared AI crawler (GPTBot: the shipped rules give it
   decoys) asks for all 200 tracks, 32 at a time, twice over.

It reports the listeners' page latency in both phases, what the crawler got (decoys, 403s),
and checks that no crawler response was the real file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
CHROME = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
                        "Gecko) Chrome/131.0.0.0 Safari/537.36",
          "Accept-Language": "en-GB,en;q=0.9", "Accept-Encoding": "gzip, deflate, br",
          "Sec-Fetch-Mode": "navigate"}
GPTBOT = {"User-Agent": "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)"}
TRACKS = 200
STORE = '''
import sys
from pathlib import Path
from aiohttp import web
folder = Path(sys.argv[1])
async def track(request):
    return web.FileResponse(folder / f"t{int(request.match_info['n'])}.mp3")
async def page(request):
    return web.Response(text="<html><body>" + "a record " * 100 + "</body></html>",
                        content_type="text/html")
app = web.Application()
app.router.add_get("/stream/t{n}.mp3", track)
app.router.add_get("/album/a", page)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("a process exited during start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")


def make_tracks(folder: Path) -> set[str]:
    import soundfile

    from proxy.audio.synth import render

    soundfile.write(folder / "m.wav", render(5, 60.0, 196.0, 100.0, 44100), 44100, "PCM_16")
    digests = set()
    for n in range(TRACKS):
        path = folder / f"t{n}.mp3"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(folder / "m.wav"),
                        "-metadata", f"title=Track {n}", "-c:a", "libmp3lame", "-b:a", "128k",
                        str(path)], check=True)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return digests


async def listeners(base: str, n: int) -> list[float]:
    times: list[float] = []
    todo = iter(range(n))

    async def one() -> None:
        async with aiohttp.ClientSession(headers=CHROME) as s:
            for _ in todo:
                started = time.perf_counter()
                async with s.get(base + "/album/a") as r:
                    await r.read()
                    assert r.status == 200
                times.append(time.perf_counter() - started)

    await asyncio.gather(*(one() for _ in range(8)))
    return times


async def crawler(base: str, originals: set[str]) -> dict[str, int]:
    got: dict[str, int] = {}
    todo = iter([n for _ in range(2) for n in range(TRACKS)])

    async def one() -> None:
        async with aiohttp.ClientSession(headers=GPTBOT) as s:
            for n in todo:
                async with s.get(base + f"/stream/t{n}.mp3") as r:
                    body = await r.read()
                if hashlib.sha256(body).hexdigest() in originals:
                    got["REAL FILE"] = got.get("REAL FILE", 0) + 1
                kind = f"{r.status} {r.headers.get('X-SonicShield-Verdict', '').split(';')[0]}"
                got[kind] = got.get(kind, 0) + 1

    await asyncio.gather(*(one() for _ in range(32)))
    return got


def summary(label: str, times: list[float]) -> str:
    q = statistics.quantiles(times, n=100)
    return f"{label:6} {len(times)} pages: p50 {q[49] * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms"


async def measure(base: str, originals: set[str]) -> None:
    print(summary("idle", await listeners(base, 2000)))
    flood = asyncio.create_task(crawler(base, originals))
    during: list[float] = []
    while not flood.done():
        during += await listeners(base, 200)
    print(summary("flood", during))
    print("crawler got:", dict(sorted((await flood).items())))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        print(f"making {TRACKS} distinct tracks...", flush=True)
        originals = make_tracks(d)
        store_port, proxy_port = free_port(), free_port()
        (d / "store.py").write_text(STORE)
        (d / "sonicshield.yaml").write_text(
            f"listen: 127.0.0.1:{proxy_port}\nupstream: {{url: 'http://127.0.0.1:{store_port}'}}"
            f"\nrules_dir: {ROOT / 'rules'}\nadmin: {{listen: null}}\nverdict_header: true\n"
            f"log: {{access_log: false}}\nlimits: {{streams_per_client: 0}}\n"
            f"audio: {{cache_dir: {d / 'variants'}}}\n")
        store = subprocess.Popen([sys.executable, str(d / "store.py"), str(d), str(store_port)])
        proxy = subprocess.Popen([sys.executable, "-m", "proxy", "run", "--config",
                                  str(d / "sonicshield.yaml")], cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            wait_port(store_port, store)
            wait_port(proxy_port, proxy)
            asyncio.run(measure(f"http://127.0.0.1:{proxy_port}", originals))
        finally:
            for p in (proxy, store):
                p.terminate()
                p.wait(30)


if __name__ == "__main__":
    main()
