"""The embedded demo store: a believable Bandcamp-like upstream with valid, decodable audio."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile

from proxy.demo.catalogue import CATALOGUE, synthesise
from proxy.demo.store import build_store_app


@pytest.fixture
async def store(aiohttp_client, media_dir):
    return await aiohttp_client(build_store_app(media_dir))


async def test_pages_have_players_opengraph_and_links(store):
    r = await store.get("/")
    html = await r.text()
    assert r.status == 200
    assert 'property="og:title"' in html
    assert html.count('<img src="/cover/') == 2
    r = await store.get("/album/first-light")
    html = await r.text()
    assert html.count("<audio controls") == 3
    assert 'href="/download/harbour-at-dawn.flac"' in html
    assert 'property="og:audio" content="http://' in html
    r = await store.get("/track/moth-waltz")
    assert "ISRC QZS6X2600001" in await r.text()
    assert (await store.get("/album/nope")).status == 404
    r = await store.get("/static/style.css")
    assert r.status == 200
    assert r.content_type == "text/css"


async def test_feed_and_sitemap_are_valid_and_complete(store, media_dir: Path):
    r = await store.get("/feed.xml")
    assert r.content_type == "application/rss+xml"
    channel = ET.fromstring(await r.text()).find("channel")
    enclosures = [item.find("enclosure") for item in channel.findall("item")]
    assert len(enclosures) == 6
    for enc in enclosures:
        slug = enc.get("url").rsplit("/", 1)[1]
        assert int(enc.get("length")) == (media_dir / slug).stat().st_size
    r = await store.get("/sitemap.xml")
    locs = [e.text for e in ET.fromstring(await r.text()).iter(
        "{http://www.sitemaps.org/schemas/sitemap/0.9}loc")]
    assert len(locs) == 1 + 2 + 6
    assert (await (await store.get("/robots.txt")).text()).startswith("User-agent: *\n")


async def test_stream_and_download_serve_ranges(store, media_dir: Path):
    data = (media_dir / "glasshouse.mp3").read_bytes()
    r = await store.get("/stream/glasshouse.mp3", headers={"Range": "bytes=100-199"})
    assert r.status == 206
    assert await r.read() == data[100:200]
    r = await store.get("/download/glasshouse.flac")
    assert r.headers["Content-Disposition"] == 'attachment; filename="glasshouse.flac"'
    assert await r.read() == (media_dir / "glasshouse.flac").read_bytes()


@pytest.mark.parametrize(("album", "track"), CATALOGUE.tracks()[:2])
def test_audio_decodes_cleanly_with_the_declared_duration(media_dir: Path, album, track):
    mp3 = media_dir / f"{track.slug}.mp3"
    flac = media_dir / f"{track.slug}.flac"
    decode = subprocess.run(["ffmpeg", "-v", "error", "-i", str(mp3), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=60)
    assert (decode.returncode, decode.stderr) == (0, "")
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                            "-of", "json", str(mp3)], capture_output=True, text=True, timeout=60)
    assert abs(float(json.loads(probe.stdout)["format"]["duration"]) - track.seconds) < 0.1
    assert subprocess.run(["flac", "-t", "-s", str(flac)], timeout=60).returncode == 0
    assert soundfile.info(str(flac)).frames == track.seconds * 44100


def test_synthesis_is_deterministic_and_matches_the_flac(media_dir: Path):
    album, track = CATALOGUE.tracks()[2]
    samples = synthesise(album, track)
    pcm, rate = soundfile.read(str(media_dir / f"{track.slug}.flac"), dtype="int16")
    expected = np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)
    assert rate == 44100
    assert np.array_equal(pcm, expected)
    assert float(np.max(np.abs(samples))) == pytest.approx(10 ** (-1 / 20))
