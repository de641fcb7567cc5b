"""The crawlers of the acceptance matrix, each as one bounded run against a base URL.

Used by tests/test_crawlers.py (which asserts that none takes a real track) and by
`python -m tests.crawlers.table` (which prints what each got, for docs/listeners.md). A run
writes what the crawler saved under `out` and returns the audio bodies it received; every
run is bounded in requests and in time (tarpits hold crawlers: that is their point).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from proxy.demo.catalogue import CATALOGUE

CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
# what a tool copies of a Chrome navigation (not the client hints, not
# Upgrade-Insecure-Requests: every real Chromium navigation carries both)
CHROME_HEADERS = {
    "User-Agent": CHROME, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
    "Accept-Language": "en-GB,en;q=0.9", "Accept-Encoding": "gzip, deflate, br",
    "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "none",
}
GPTBOT = "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)"
SPIDER = Path(__file__).resolve().parent / "store_spider.py"
# user agents of a download tool taking the lossless catalogue (catalogue())
CLAIMS = {
    "vlc": "VLC/3.0.18 LibVLC/3.0.18",
    "ffmpeg": "Lavf/60.16.100",
    "podcast-app": "gPodder/3.11.1 (+http://gpodder.org/) Linux",
    "unknown-tool": "CatalogueFetcher/1.0",
}


class MissingProgram(RuntimeError):
    pass


def program(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingProgram(f"{name} is required (apt-get install {package}); make test "
                             "installs it")
    return path


async def bounded(*argv: str, limit: float) -> None:
    """Run a crawler for at most `limit` seconds."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        await asyncio.wait_for(proc.wait(), timeout=limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def saved_audio(out: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".mp3", ".flac", ".ogg", ".m4a")]


async def wget(base: str, out: Path, *options: str) -> list[bytes]:
    # once it follows the trap link its pages trickle; 20 s of crawling is plenty to judge
    await bounded(program("wget", "wget"), "-q", "-r", "-l", "4", "-np", "-t", "1", "-P",
                  str(out), *options, base + "/", limit=20)
    return saved_audio(out)


async def httrack(base: str, out: Path) -> list[bytes]:
    # HTTrack's defaults: it reads robots.txt and keeps to it; -q asks nothing
    await bounded(program("httrack", "httrack"), base + "/", "-O", str(out), "-q", "-r5",
                  "-c4", "-T5", "-R1", limit=30)
    return saved_audio(out)


async def scrapy(base: str, out: Path, *settings: str) -> list[bytes]:
    # it starts from the home page and, as a crawler that knows URLs from an earlier crawl or a
    # sitemap would, from a track's stream; a tarpitted page costs it 3 s, the crawl 20 s at most
    start = f"{base}/,{base}/stream/{CATALOGUE.tracks()[0][1].slug}.mp3"
    await bounded(sys.executable, "-m", "scrapy", "runspider", str(SPIDER), "-a",
                  f"start={start}", "-a", f"out={out}", "-s", "LOG_LEVEL=ERROR", "-s",
                  "HTTPERROR_ALLOW_ALL=True", "-s", "TELNETCONSOLE_ENABLED=False", "-s",
                  "DOWNLOAD_TIMEOUT=3", "-s", "CLOSESPIDER_TIMEOUT=20", *settings, limit=60)
    return saved_audio(out)


async def yt_dlp(base: str, out: Path) -> list[bytes]:
    """yt-dlp's generic extractor on three track pages: it finds the <audio> source and
    downloads it with its own spoofed Chrome user agent."""
    pages = [f"{base}/track/{t.slug}" for _, t in CATALOGUE.tracks()[:3]]
    await bounded(program("yt-dlp", "yt-dlp"), "--no-cache-dir", "--no-progress", "-q",
                  "--socket-timeout", "5", "-o", str(out / "%(id)s.%(ext)s"), *pages,
                  limit=60)
    return saved_audio(out)


async def rotating(base: str, out: Path) -> list[bytes]:
    """Chrome's UA and copied navigation headers, the feed for the track list, a new source
    address for every download (127.0.0.2-30), each track twice: no Referer, no Range."""
    async with aiohttp.ClientSession(headers=CHROME_HEADERS) as s, s.get(
        base + "/feed.xml"
    ) as r:
        urls = [e.get("url") or "" for e in ET.fromstring(await r.text()).iter("enclosure")]
    bodies = []
    for i, url in enumerate(urls * 2):
        path = re.sub(r"^https?://[^/]+", "", url)
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.0.{2 + i % 29}", 0))
        async with aiohttp.ClientSession(connector=connector, headers=CHROME_HEADERS) as s, \
                s.get(base + path) as r:
            bodies.append(await r.read())
    return bodies


async def catalogue(base: str, out: Path, ua: str) -> list[bytes]:
    """curl, as a person would run it, taking every lossless file of the store back to back
    under the user agent `ua`."""
    curl = program("curl", "curl")
    bodies = []
    for _, track in CATALOGUE.tracks():
        proc = await asyncio.create_subprocess_exec(
            curl, "-s", "-A", ua, f"{base}/download/{track.slug}.flac",
            stdout=asyncio.subprocess.PIPE)
        body, _ = await asyncio.wait_for(proc.communicate(), 60)
        bodies.append(body)
    return bodies


CHROMIUM_HEADLESS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--mute-audio",
]
# what headless() runs in the page: play the track's <audio> until a second has played
_PLAY = """async () => {
    const a = document.querySelector('audio');
    if (!a) return 0;
    await a.play();
    const until = Date.now() + 10000;
    while (a.currentTime < 1 && Date.now() < until)
        await new Promise(r => setTimeout(r, 50));
    return a.currentTime >= 1 ? 1 : 0;
}"""


def headless_crawl(base: str) -> tuple[list[bytes], int, int]:
    """A crawler built on a headless browser, as scraping services run them: Playwright
    driving Debian's Chromium headless walks the artist page, every album and track page,
    plays each track in its page and takes each FLAC through the browser's request API.
    Returns (the audio bodies it received, tracks played, FLACs fetched)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import Response, sync_playwright

    chromium = program("chromium", "chromium")
    bodies: list[bytes] = []

    def on_response(response: Response) -> None:
        if response.url.endswith((".mp3", ".flac")):
            # Chromium keeps no body for some media responses
            with contextlib.suppress(PlaywrightError):
                bodies.append(response.body())

    played = flacs = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_HEADLESS)
        page = browser.new_context().new_page()
        page.on("response", on_response)
        page.goto(base + "/", timeout=30_000)
        albums = page.eval_on_selector_all("a[href^='/album/']", "as => as.map(a => a.href)")
        tracks: list[str] = []
        for album in dict.fromkeys(albums):
            page.goto(album, timeout=30_000)
            tracks += page.eval_on_selector_all("a[href^='/track/']",
                                                "as => as.map(a => a.href)")
        for track in dict.fromkeys(tracks):
            page.goto(track, timeout=30_000)
            played += int(page.evaluate(_PLAY))
            for href in page.eval_on_selector_all("a[href$='.flac']",
                                                  "as => as.map(a => a.href)"):
                bodies.append(page.request.get(href, timeout=30_000).body())
                flacs += 1
        browser.close()
    return bodies, played, flacs


async def headless(base: str, out: Path) -> list[bytes]:
    bodies, _, _ = await asyncio.to_thread(headless_crawl, base)
    return bodies


def _claiming(ua: str, base: str, out: Path) -> Awaitable[list[bytes]]:
    return catalogue(base, out, ua)


Crawl = Callable[[str, Path], Awaitable[list[bytes]]]
# name -> (the run, what it is, as the table of docs/listeners.md says it)
CRAWLERS: dict[str, tuple[Crawl, str]] = {
    "wget-defaults": (wget, "wget -r -l 4 (reads robots.txt)"),
    "wget-chrome-robots-off": (
        lambda b, o: wget(b, o, "-e", "robots=off", "-U", CHROME),
        "wget -r -e robots=off -U Chrome"),
    "httrack": (httrack, "HTTrack 3.49 defaults"),
    "scrapy-defaults": (scrapy, "Scrapy defaults (obeys robots.txt)"),
    "scrapy-gptbot-robots-off": (
        lambda b, o: scrapy(b, o, "-s", "ROBOTSTXT_OBEY=False", "-s", f"USER_AGENT={GPTBOT}"),
        "Scrapy, GPTBot user agent, robots off"),
    "scrapy-chrome-robots-off": (
        lambda b, o: scrapy(b, o, "-s", "ROBOTSTXT_OBEY=False", "-s", f"USER_AGENT={CHROME}"),
        "Scrapy, Chrome user agent, robots off"),
    "yt-dlp": (yt_dlp, "yt-dlp 2023.03.04, generic extractor"),
    "rotating-aiohttp": (rotating, "aiohttp, Chrome headers, 127.0.0.2-30"),
    "playwright-headless": (headless, "Playwright, headless Chromium, plays and fetches"),
    **{f"curl-claiming-{name}": (functools.partial(_claiming, ua),
                                 f"curl -A '{ua}', every FLAC back to back")
       for name, ua in CLAIMS.items()},
}
