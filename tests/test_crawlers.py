"""Real clients against the demo store behind SonicShield with the shipped rules.

Crawlers must not take two full tracks; listeners' apps must get every byte. "Full track" is
judged by content: a body equal to the store's own file.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import pytest

from proxy.demo.catalogue import CATALOGUE
from proxy.demo.store import build_store_app

from .conftest import RULES_DIR, proxy_settings, shipped_rules

CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
# everything a real Chrome sends for a navigation to a secure origin (loopback counts)
CHROME_HEADERS = {
    "User-Agent": CHROME, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
    "Accept-Language": "en-GB,en;q=0.9", "Accept-Encoding": "gzip, deflate, br",
    "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "none",
}


@pytest.fixture
async def shielded(aiohttp_server, run_proxy, media_dir):
    store = await aiohttp_server(build_store_app(media_dir))
    settings = proxy_settings(f"http://127.0.0.1:{store.port}", rules_dir=RULES_DIR,
                              verdict_header=True)
    return await run_proxy(settings, shipped_rules())


def track_hashes(media_dir: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest()
            for p in media_dir.iterdir() if p.suffix in (".mp3", ".flac")}


def full_tracks(directory: Path, originals: set[str]) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file()
               and hashlib.sha256(p.read_bytes()).hexdigest() in originals)


async def run(*argv: str, limit: float = 60.0) -> None:
    """Run a crawler for at most `limit` seconds (tarpits hold it; that is their point)."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        await asyncio.wait_for(proc.wait(), timeout=limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@pytest.fixture
def wget() -> str:
    path = shutil.which("wget")
    if path is None:
        pytest.fail("wget is required (apt-get install wget); .ci/run installs it")
    return path


@pytest.mark.parametrize(
    "options",
    [
        pytest.param([], id="defaults"),
        pytest.param(["-e", "robots=off", "-U", CHROME], id="chrome-ua-robots-off"),
    ],
)
async def test_wget_mirror_takes_no_full_track(shielded, media_dir, tmp_path, wget, options):
    mirror = tmp_path / "mirror"
    # once it follows the trap link its pages trickle; 20 s of crawling is plenty to judge
    await run(wget, "-q", "-r", "-l", "4", "-np", "-t", "1", "-P", str(mirror), *options,
              shielded + "/", limit=20)
    pages = list(mirror.rglob("album/*"))
    assert pages, "wget mirrored nothing at all: the test would prove nothing"
    assert full_tracks(mirror, track_hashes(media_dir)) == 0


SCRAPY_SPIDER = Path(__file__).resolve().parent / "crawlers" / "store_spider.py"


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param([], id="defaults"),
        pytest.param(["-s", "ROBOTSTXT_OBEY=False", "-s",
                      "USER_AGENT=Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)",
                      ],
                     id="ai-crawler-ignoring-robots"),
    ],
)
async def test_scrapy_takes_no_full_track(shielded, media_dir, tmp_path, settings):
    out = tmp_path / "scraped"
    # it starts from the home page and, as a crawler that knows URLs from an earlier crawl or a
    # sitemap would, from a track's stream; a tarpitted page costs it 3 s, the crawl 20 s at most
    start = f"{shielded}/,{shielded}/stream/{CATALOGUE.tracks()[0][1].slug}.mp3"
    await run(sys.executable, "-m", "scrapy", "runspider", str(SCRAPY_SPIDER),
              "-a", f"start={start}", "-a", f"out={out}", "-s", "LOG_LEVEL=ERROR",
              "-s", "HTTPERROR_ALLOW_ALL=True", "-s", "TELNETCONSOLE_ENABLED=False",
              "-s", "DOWNLOAD_TIMEOUT=3", "-s", "CLOSESPIDER_TIMEOUT=20", *settings)
    received = list(out.iterdir())
    assert received, "the spider received no audio response: the test would prove nothing"
    assert full_tracks(out, track_hashes(media_dir)) == 0


async def test_rotating_crawler_takes_less_than_two_tracks(shielded, media_dir):
    """Chrome's UA and headers, the feed for the track list, a new source address for every
    download (127.0.0.2-30): no Referer, no Range."""
    originals = track_hashes(media_dir)
    async with aiohttp.ClientSession(headers=CHROME_HEADERS) as s, s.get(
        shielded + "/feed.xml"
    ) as r:
        urls = [e.get("url") for e in ET.fromstring(await r.text()).iter("enclosure")]
    assert len(urls) == 6
    taken = 0
    for i, url in enumerate(urls * 2):
        path = re.sub(r"^https?://[^/]+", "", url)
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.0.{2 + i % 29}", 0))
        async with aiohttp.ClientSession(connector=connector, headers=CHROME_HEADERS) as s, \
                s.get(shielded + path) as r:
            body = await r.read()
        taken += hashlib.sha256(body).hexdigest() in originals
    assert taken < 2


async def test_podcast_app_gets_the_feed_and_every_episode(shielded, media_dir):
    ua = {"User-Agent": "AntennaPod/3.4.0"}
    async with aiohttp.ClientSession(headers=ua) as s:
        async with s.get(shielded + "/feed.xml") as r:
            urls = [e.get("url") for e in ET.fromstring(await r.text()).iter("enclosure")]
        for url in urls:
            async with s.get(shielded + re.sub(r"^https?://[^/]+", "", url)) as r:
                slug = url.rsplit("/", 1)[1]
                assert await r.read() == (media_dir / slug).read_bytes()


async def test_link_preview_gets_the_page_and_its_image(shielded, media_dir):
    ua = {"User-Agent": "http.rb/5.1.1 (Mastodon/4.2.0; +https://mastodon.social/)"}
    album, track = CATALOGUE.tracks()[0]
    async with aiohttp.ClientSession(headers=ua) as s:
        async with s.get(shielded + f"/track/{track.slug}") as r:
            html = await r.text()
        image = re.search(r'property="og:image" content="https?://[^/]+([^"]+)"', html)
        assert image is not None
        async with s.get(shielded + image.group(1)) as r:
            assert await r.read() == (media_dir / f"{album.slug}.png").read_bytes()
        # and the audio a rich preview embeds
        async with s.get(shielded + f"/stream/{track.slug}.mp3") as r:
            assert await r.read() == (media_dir / f"{track.slug}.mp3").read_bytes()
