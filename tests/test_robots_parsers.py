"""One robots.txt that every parser reads the same way (proxy/robots.py).

The canonical file served in front of the demo store, read by protego, Python's
urllib.robotparser and Scrapy's default robots parser for every path of the store and for the
trap, as a browser-like agent, a search engine and an AI crawler; then the real programs,
wget --mirror and HTTrack with robots.txt obeyed, crawl the store through the proxy and never
ask for the trap. Before, the trap sat in a second `User-agent: *` group that urllib's parser
and wget never read, and wget followed the trap link although it obeys robots.txt.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import urllib.robotparser
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from protego import Protego
from scrapy.robotstxt import ProtegoRobotParser, PythonRobotParser

from proxy.demo.catalogue import CATALOGUE
from proxy.demo.store import build_store_app
from proxy.rules import LiveRules, load_rules

from .conftest import RULES_DIR, proxy_settings

TRAP = "/archive-complete/all-tracks"
AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) Firefox/153.0", "Googlebot", "GPTBot", "CCBot",
          "Wget/1.21.3", "HTTrack")


def store_paths() -> list[str]:
    paths = ["/", "/feed.xml", "/sitemap.xml", "/cart", "/static/style.css", TRAP]
    paths += [f"/album/{a.slug}" for a in CATALOGUE.albums]
    paths += [f"/cover/{a.slug}.png" for a in CATALOGUE.albums]
    for _, t in CATALOGUE.tracks():
        paths += [f"/track/{t.slug}", f"/stream/{t.slug}.mp3", f"/download/{t.slug}.flac"]
    return paths


@pytest.fixture
async def shield(aiohttp_server, run_proxy, media_dir):
    """The shipped rules in front of the demo store; (proxy URL, requests the store saw)."""
    seen: list[str] = []
    app = build_store_app(media_dir)

    @web.middleware
    async def remember(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if "X-Request-Id" in request.headers:  # a client's request, not the proxy's own
            seen.append(request.path)
        return await handler(request)

    app.middlewares.append(remember)
    store = await aiohttp_server(app)
    proxy = await run_proxy(proxy_settings(f"http://127.0.0.1:{store.port}",
                                           rules_dir=RULES_DIR), LiveRules(load_rules(RULES_DIR)))
    return proxy, seen, store.port


async def test_every_parser_reads_the_served_file_alike(shield):
    proxy, _, store_port = shield
    async with aiohttp.ClientSession() as s, s.get(proxy + "/robots.txt") as r:
        text = await r.text()
    assert text.count("User-agent: *") == 1
    # the Sitemap points where the client reached the site, never at the store's own port
    assert f"Sitemap: {proxy}/sitemap.xml" in text
    assert f":{store_port}/" not in text
    urllib_parser = urllib.robotparser.RobotFileParser()
    urllib_parser.parse(text.splitlines())
    readers = {
        "protego": Protego.parse(text).can_fetch,
        "urllib.robotparser": lambda url, agent: urllib_parser.can_fetch(agent, url),
        "scrapy (protego)": _scrapy(ProtegoRobotParser, text),
        "scrapy (python)": _scrapy(PythonRobotParser, text),
    }
    for agent in AGENTS:
        for path in store_paths():
            url = proxy + path
            answers = {name: bool(read(url, agent)) for name, read in readers.items()}
            assert len(set(answers.values())) == 1, (agent, path, answers)
            if path == TRAP or agent in ("GPTBot", "CCBot"):
                assert not answers["protego"], (agent, path)
            elif path != "/cart":
                assert answers["protego"], (agent, path)


def _scrapy(parser_class: type, text: str):  # type: ignore[no-untyped-def]
    parser = parser_class.from_crawler(None, text.encode())
    return lambda url, agent: parser.allowed(url, agent)


async def _crawl(args: list[str], cwd: Path) -> None:
    proc = await asyncio.create_subprocess_exec(*args, cwd=cwd, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        await asyncio.wait_for(proc.wait(), 300)
    except TimeoutError:
        proc.kill()
        raise


@pytest.mark.parametrize("crawler", ["wget", "httrack"])
async def test_a_crawler_that_obeys_robots_txt_never_requests_the_trap(crawler, shield,
                                                                       tmp_path, caplog):
    caplog.set_level(logging.INFO)
    if shutil.which(crawler) is None:
        pytest.fail(f"{crawler} is required (apt-get install {crawler}); make test installs it")
    proxy, seen, _ = shield
    if crawler == "wget":
        # --mirror with robots.txt obeyed (its default); pages only, a bounded depth
        args = ["wget", "--mirror", "--level=2", "--no-verbose", "--reject=mp3,flac,png",
                "--tries=1", "--timeout=10", proxy + "/"]
    else:
        args = ["httrack", proxy + "/", "-O", str(tmp_path / "mirror"), "-r3", "-s2",
                "-%v0", "-q", "-*.mp3", "-*.flac", "-*.png", "-T10", "-R1"]
    await _crawl(args, tmp_path)
    assert any(p.startswith("/album/") for p in seen), f"{crawler} crawled nothing: {seen}"
    # the trap is the proxy's own page: its access log, not the store, would show a visit
    asked = [r.fields["path"] for r in caplog.records if r.msg == "access"]
    assert "/robots.txt" in asked
    assert not any(p.startswith("/archive-complete/") for p in asked), asked
