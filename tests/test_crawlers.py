"""Real crawlers against the demo store behind SonicShield with the shipped rules.

Each crawler (tests/crawlers/runs.py) runs alone against a fresh proxy (fresh client state,
its own address) and must take no real audio: no body it received or saved may equal one of
the store's files. Listeners' apps must get every byte (the real programs, browsers and
players, are tests/test_real_clients.py; the headless-browser crawler is
tests/test_browser.py). docs/listeners.md has the table these tests back, made by
`python -m tests.crawlers.table`.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import pytest

from proxy.demo.catalogue import CATALOGUE
from proxy.demo.store import build_store_app

from .conftest import RULES_DIR, proxy_settings, shipped_rules
from .crawlers import runs


@pytest.fixture
async def shielded(aiohttp_server, run_proxy, media_dir):
    store = await aiohttp_server(build_store_app(media_dir))
    settings = proxy_settings(f"http://127.0.0.1:{store.port}", rules_dir=RULES_DIR,
                              verdict_header=True)
    return await run_proxy(settings, shipped_rules())


def track_hashes(media_dir: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest()
            for p in media_dir.iterdir() if p.suffix in (".mp3", ".flac")}


def real_tracks(bodies: list[bytes], media_dir: Path) -> int:
    originals = track_hashes(media_dir)
    return sum(hashlib.sha256(b).hexdigest() in originals for b in bodies)


async def crawl(name: str, base: str, out: Path) -> list[bytes]:
    run, _ = runs.CRAWLERS[name]
    try:
        return await run(base, out)
    except runs.MissingProgram as exc:
        pytest.fail(str(exc))


@pytest.mark.parametrize("name", ["wget-defaults", "wget-chrome-robots-off", "httrack",
                                  "scrapy-defaults", "scrapy-gptbot-robots-off",
                                  "scrapy-chrome-robots-off", "yt-dlp", "rotating-aiohttp"])
async def test_a_crawler_takes_no_real_track(shielded, media_dir, tmp_path, name):
    out = tmp_path / "out"
    bodies = await crawl(name, shielded, out)
    if name.startswith(("wget", "httrack")):
        # a mirror that takes the trap gets its pages slowly and may reach no audio at all
        assert list(out.rglob("album/*")), f"{name} mirrored no page: it proves nothing"
    else:
        assert bodies, f"{name} received no audio: the test would prove nothing"
    assert real_tracks(bodies, media_dir) == 0


@pytest.mark.parametrize("claim", ["vlc", "ffmpeg", "podcast-app"])
async def test_a_tool_claiming_a_player_takes_no_more_than_an_unknown_tool(
        aiohttp_server, run_proxy, media_dir, tmp_path, claim):
    """A lane is a claim checked by behaviour: a player starts a track and plays it, a
    podcast app takes the episodes of the feed it read. Claiming one while taking the whole
    lossless catalogue in seconds gets what an unknown tool gets (each on a fresh proxy)."""
    counts = {}
    for name in (claim, "unknown-tool"):
        store = await aiohttp_server(build_store_app(media_dir))
        base = await run_proxy(proxy_settings(f"http://127.0.0.1:{store.port}",
                                              rules_dir=RULES_DIR), shipped_rules())
        bodies = await crawl(f"curl-claiming-{name}", base, tmp_path / name)
        assert len(bodies) == 6
        counts[name] = real_tracks(bodies, media_dir)
    assert counts[claim] <= counts["unknown-tool"] <= 1, counts


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
