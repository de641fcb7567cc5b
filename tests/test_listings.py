"""Sitemaps and feeds: their order is read as they stream through; walking them is named."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import aiohttp
from aiohttp import web

from proxy.rules import LiveRules, load_rules
from proxy.signals.behaviour import BehaviourTracker, RequestFacts
from proxy.signals.listings import MAX_BODY, Listings, Tap
from proxy.state import ClientStore

from .conftest import proxy_settings

WALK_RULES = Path(__file__).resolve().parent / "fixtures" / "walk-rules"
PAGES = [f"/album/record-{i:02}" for i in range(20)]
SITEMAP = ('<?xml version="1.0" encoding="UTF-8"?>\n'
           '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
           + "".join(f"  <url><loc>https://store.example{p}</loc></url>\n" for p in PAGES)
           + "</urlset>\n").encode()
FEED = ("<rss><channel><link>https://store.example/</link>"
        + "".join(f'<item><link>https://store.example/track/t{i}</link>'
                  f'<enclosure url="https://store.example/stream/t{i}.mp3?a=1&amp;b=2" '
                  f'type="audio/mpeg" length="1"/></item>' for i in range(3))
        + '<atom:link href="https://store.example/feed.xml" rel="self"/></channel></rss>').encode()


def tapped(path: str, body: bytes, encoding: str = "identity") -> Tap:
    tap = Tap(path, encoding)
    for i in range(0, len(body), 1000):  # as chunks arrive
        tap(body[i:i + 1000])
    return tap


def test_urls_are_read_in_document_order():
    listings = Listings()
    doc = listings.learn(tapped("/sitemap.xml", SITEMAP))
    assert doc is not None
    assert [listings.index(doc, p) for p in PAGES] == list(range(20))
    assert listings.index(doc, "/album/unlisted") is None
    feed = listings.learn(tapped("/feed.xml", gzip.compress(FEED), "gzip"))
    assert feed is not None
    assert feed != doc
    # channel link, then each item's link and enclosure; the feed's own URL is not an entry
    order = ["/", "/track/t0", "/stream/t0.mp3", "/track/t1", "/stream/t1.mp3"]
    assert [listings.index(feed, p) for p in order] == list(range(5))
    assert listings.index(feed, "/feed.xml") is None


def test_what_is_not_a_readable_listing_is_passed_over():
    listings = Listings(capacity=2)
    headers = {"Content-Type": "application/xml"}
    assert listings.tap("/sitemap.xml", 200, "GET", headers) is not None
    assert listings.tap("/sitemap.xml", 206, "GET", headers) is None
    assert listings.tap("/sitemap.xml", 200, "HEAD", headers) is None
    assert listings.tap("/sitemap.xml", 200, "GET", {**headers, "Content-Encoding": "br"}) is None
    assert listings.tap("/page", 200, "GET", {"Content-Type": "text/html"}) is None
    assert listings.tap("/big.xml", 200, "GET",
                        {**headers, "Content-Length": str(MAX_BODY + 1)}) is None
    oversized = Tap("/big.xml", "identity")
    oversized(b"<loc>/a</loc>" * (MAX_BODY // 13 + 1))
    assert oversized.body is None
    assert listings.learn(oversized) is None
    assert listings.learn(tapped("/bad.xml.gz", b"not gzip", "gzip")) is None
    assert listings.learn(tapped("/one.xml", b"<loc>/only</loc>")) is None
    # the oldest listing goes when the cap is reached; the same path keeps its id
    first = listings.learn(tapped("/a.xml", SITEMAP))
    assert listings.learn(tapped("/a.xml", SITEMAP)) == first
    listings.learn(tapped("/b.xml", SITEMAP))
    listings.learn(tapped("/c.xml", SITEMAP))
    assert len(listings) == 2
    assert first is not None
    assert listings.index(first, PAGES[0]) is None


def walk(paths: list[str]) -> tuple[str, ...]:
    tracker = BehaviourTracker(ClientStore(100))
    doc = tracker.listings.learn(tapped("/sitemap.xml", SITEMAP))
    tracker.fetched_listing("i:198.51.100.9", doc, 0.0)
    flags: tuple[str, ...] = ()
    for i, path in enumerate(paths):
        now = 1.0 + 5 * i
        facts = RequestFacts("198.51.100.9", "GET", path, False, True, False, True, 0)
        flags = tracker.observe(facts, tracker.store.row("i:198.51.100.9", now)).flags
    return flags


def test_taking_a_listing_in_order_is_named_and_browsing_is_not():
    assert "walking-listing" in walk(PAGES[:8])
    assert "walking-listing" not in walk(PAGES[:7])
    # a reader browsing the same twenty pages at random sets a new furthest entry a few
    # times, not eight (checked for many orders, not one lucky shuffle)
    rng = random.Random(7)
    walked = sum("walking-listing" in walk(rng.sample(PAGES, 12)) for _ in range(200))
    assert walked < 10, walked


async def test_the_proxy_reads_a_sitemap_as_it_passes(aiohttp_server, run_proxy):
    async def sitemap(request: web.Request) -> web.Response:
        body = gzip.compress(SITEMAP)
        return web.Response(body=body, content_type="application/xml",
                            headers={"Content-Encoding": "gzip"})

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>a record</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/sitemap.xml", sitemap)
    app.router.add_get("/{tail:.*}", page)
    upstream = await aiohttp_server(app)
    base = await run_proxy(proxy_settings(f"http://127.0.0.1:{upstream.port}",
                                          rules_dir=WALK_RULES, verdict_header=True),
                           LiveRules(load_rules(WALK_RULES)))
    statuses = []
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/sitemap.xml") as r:
            # the client gets the body untouched (the proxy only reads along)
            assert await r.read() == SITEMAP
        for path in PAGES[:9]:
            async with s.get(base + path) as r:
                statuses.append(r.status)
    assert statuses == [200] * 7 + [403] * 2
