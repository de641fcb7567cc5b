"""Trap links: appended to HTML pages (plain and gzip), disallowed for everyone, remembered."""

from __future__ import annotations

import asyncio
import contextlib
import gzip

import aiohttp
from aiohttp import web

from proxy.trap import link_html

from .conftest import RULES_DIR, proxy_settings, shipped_rules

LINK = link_html("/archive-complete/")
CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")


async def fetch(url: str, headers: dict[str, str] | None = None):
    async with aiohttp.ClientSession(
        auto_decompress=False, skip_auto_headers=("Accept-Encoding",)
    ) as s, s.get(url, headers=headers or {}) as r:
        return r.status, r.headers, await r.read()


async def test_pages_get_the_hidden_link_plain_and_gzip(run_proxy, nginx, nginx_root):
    base = await run_proxy(proxy_settings(nginx.url))
    page = (nginx_root / "index.html").read_bytes()
    status, headers, body = await fetch(base + "/index.html")
    assert (status, body) == (200, page + LINK)
    # the store's length, grown by the link's: no chunked framing for a page of known size
    assert headers["Content-Length"] == str(len(page + LINK))
    assert "Transfer-Encoding" not in headers
    assert headers["ETag"].startswith('W/"')
    async with aiohttp.ClientSession(skip_auto_headers=("Accept-Encoding",)) as s, s.head(
            base + "/index.html") as r:
        assert r.headers["Content-Length"] == str(len(page + LINK))  # what GET would send
    # nginx compresses on the fly: a body of unknown length, chunked, the link its last chunk
    status, headers, body = await fetch(base + "/index.html", {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Transfer-Encoding"] == "chunked"
    assert gzip.decompress(body) == page + LINK  # a second gzip member
    # partial answers and other types are never touched
    _, _, body = await fetch(base + "/index.html", {"Range": "bytes=0-9"})
    assert body == page[:10]
    _, _, body = await fetch(base + "/notes.txt")
    assert body == (nginx_root / "notes.txt").read_bytes()


async def test_a_page_of_many_chunks_keeps_its_length(aiohttp_server, run_proxy):
    page = b"<!doctype html><p>" + b"liner notes " * 40_000  # about 480 KB: many reads

    async def liner_notes(_: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", liner_notes)
    upstream = await aiohttp_server(app)
    base = await run_proxy(proxy_settings(f"http://127.0.0.1:{upstream.port}"))
    status, headers, body = await fetch(base + "/")
    assert (status, body) == (200, page + LINK)
    assert headers["Content-Length"] == str(len(page + LINK))


async def test_other_encodings_are_left_alone(aiohttp_server, run_proxy):
    async def brotli_page(_: web.Request) -> web.Response:
        return web.Response(body=b"\x8b\x02\x80<html>", headers={
            "Content-Type": "text/html", "Content-Encoding": "br"})

    app = web.Application()
    app.router.add_get("/", brotli_page)
    upstream = await aiohttp_server(app)
    base = await run_proxy(proxy_settings(f"http://127.0.0.1:{upstream.port}"))
    _, _, body = await fetch(base + "/", {"Accept-Encoding": "br"})
    assert body == b"\x8b\x02\x80<html>"


async def test_a_trap_hit_is_answered_locally_and_remembered(aiohttp_server, run_proxy):
    seen = []

    async def store(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=b"real audio", content_type="audio/mpeg")

    app = web.Application()
    app.router.add_get("/{tail:.*}", store)
    upstream = await aiohttp_server(app)
    base = await run_proxy(proxy_settings(f"http://127.0.0.1:{upstream.port}",
                                          rules_dir=RULES_DIR, verdict_header=True),
                           shipped_rules())
    # a browser's media request, as Chromium sends it (tests/fixtures/clients/chromium.json)
    headers = {"User-Agent": CHROME, "Accept-Language": "en", "Accept-Encoding": "identity",
               "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "audio",
               "Sec-CH-UA": '"Chromium";v="131"', "Range": "bytes=0-", "Referer": base + "/"}
    status, _, body = await fetch(base + "/stream/a.mp3", headers)
    assert (status, body) == (200, b"real audio")
    # the shipped rules tarpit the trap page itself; the hit counts from the first byte
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(fetch(base + "/archive-complete/all-tracks", headers), 1.0)
    status, resp_headers, _ = await fetch(base + "/stream/a.mp3", headers)
    assert status == 403
    assert resp_headers["X-SonicShield-Verdict"].endswith("trapped-audio")
    assert "/archive-complete/all-tracks" not in seen  # the store never saw the trap
