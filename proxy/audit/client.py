"""The audit's HTTP side: a polite client (bounded requests, a fixed pace, its own User-Agent)
and discovery of a site's audio through its pages, sitemap and feed."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import aiohttp

from .. import __version__

AUDIT_UA = (f"SonicShield-Audit/{__version__} (a sovereignty audit: checks how this site's "
            "recordings are shielded from AI scraping)")
CHROME_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/131.0.0.0 Safari/537.36")
GPTBOT_UA = ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
             "+https://openai.com/gptbot)")
AUDIO_SUFFIXES = (".mp3", ".flac", ".wav", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif",
                  ".aiff")
LOSSLESS_SUFFIXES = (".flac", ".wav", ".aif", ".aiff")
PAGE_LIMIT = 2 << 20  # bytes read of a page, a sitemap or a feed
AUDIO_LIMIT = 32 << 20  # bytes read of an audio file


class OutOfRequests(Exception):
    """The audit's request budget is spent."""


@dataclass
class Fetched:
    url: str
    status: int  # 0: no answer (refused connection, timeout: a tarpit looks like this)
    headers: dict[str, str]
    body: bytes
    seconds: float
    error: str = ""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


class PoliteClient:
    """At most `max_requests` requests, at least 1/`rate` seconds apart, each bounded by
    `timeout` seconds. Every request is counted, whatever its answer."""

    def __init__(self, max_requests: int, rate: float, timeout: float) -> None:
        self.max_requests = max_requests
        self.interval = 1.0 / rate
        self.timeout = timeout
        self.sent = 0
        self._last = 0.0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PoliteClient:
        self._session = aiohttp.ClientSession(
            auto_decompress=True, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, url: str, headers: dict[str, str], limit: int = PAGE_LIMIT) -> Fetched:
        if self.sent >= self.max_requests:
            raise OutOfRequests
        wait = self._last + self.interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.sent += 1
        self._last = time.monotonic()
        assert self._session is not None
        started = time.monotonic()
        status, found, body = 0, {}, b""
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session.get(url, headers=headers, allow_redirects=True,
                                             max_redirects=3) as r:
                    status, found = r.status, {k.lower(): v for k, v in r.headers.items()}
                    async for piece in r.content.iter_any():
                        body += piece
                        if len(body) >= limit:
                            return Fetched(url, status, found, body[:limit],
                                           time.monotonic() - started)
        except TimeoutError:
            error = "timed out mid-body" if status else f"no answer within {self.timeout:g} s"
            return Fetched(url, status, found, body, time.monotonic() - started, error)
        except (aiohttp.ClientError, OSError) as exc:
            return Fetched(url, status, found, body, time.monotonic() - started,
                           str(exc) or type(exc).__name__)
        return Fetched(url, status, found, body, time.monotonic() - started)


def audit_headers() -> dict[str, str]:
    return {"User-Agent": AUDIT_UA, "Accept": "*/*"}


def browser_headers(kind: str, referer: str = "") -> dict[str, str]:
    """What Chrome sends for a page (`document`) or an <audio> element's request (`audio`)."""
    h = {"User-Agent": CHROME_UA, "Accept-Language": "en-GB,en;q=0.9",
         "Accept-Encoding": "gzip, deflate, br",
         "Sec-CH-UA": '"Chromium";v="131", "Not_A Brand";v="24"', "Sec-CH-UA-Mobile": "?0",
         "Sec-CH-UA-Platform": '"Linux"', "Sec-Fetch-Site": "same-origin" if referer else "none"}
    if kind == "document":
        h.update({"Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
                  "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"})
    else:
        h.update({"Accept": "*/*", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": kind,
                  "Range": "bytes=0-"})
    if referer:
        h["Referer"] = referer
    return h


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []  # a[href]
        self.media: list[str] = []  # audio[src], source[src]
        self.feeds: list[str] = []  # link rel=alternate type=rss/atom

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag in ("audio", "source") and a.get("src"):
            self.media.append(a["src"])
        elif tag == "link" and "alternate" in a.get("rel", "") and (
                "rss" in a.get("type", "") or "atom" in a.get("type", "")):
            self.feeds.append(a.get("href", ""))


@dataclass
class Site:
    """What discovery found: audio URLs with the page that links each, pages, feeds."""

    base: str
    audio: dict[str, str] = field(default_factory=dict)  # audio URL -> the page it was on
    pages: list[str] = field(default_factory=list)
    feeds: list[str] = field(default_factory=list)
    home: Fetched | None = None

    def same_site(self, url: str) -> bool:
        return urlsplit(url).netloc == urlsplit(self.base).netloc


def is_audio_url(url: str) -> bool:
    return urlsplit(url).path.lower().endswith(AUDIO_SUFFIXES)


async def discover(client: PoliteClient, site: Site, sitemap_urls: list[str],
                   max_pages: int = 4) -> None:
    """Find audio through the home page, up to `max_pages` more pages, the sitemap(s) and the
    feeds, within the client's budget (OutOfRequests ends discovery, not the audit)."""
    try:
        site.home = await client.get(site.base + "/", audit_headers())
        queue = _read_page(site, site.base + "/", site.home)
        for url in sitemap_urls or [site.base + "/sitemap.xml"]:
            fetched = await client.get(url, audit_headers())
            if fetched.status == 200:
                queue += [u for u in _xml_locations(fetched.body, site, url) if u not in queue]
        for feed in list(site.feeds):
            fetched = await client.get(feed, audit_headers())
            if fetched.status == 200:
                _xml_locations(fetched.body, site, feed)
        for page in queue[:max_pages]:
            if site.audio and len(site.pages) >= 2:
                break
            fetched = await client.get(page, audit_headers())
            _read_page(site, page, fetched)
    except OutOfRequests:
        return


def _read_page(site: Site, url: str, fetched: Fetched) -> list[str]:
    """Audio, feeds and further same-site pages linked from a page."""
    if fetched.status != 200 or "html" not in fetched.header("content-type"):
        return []
    site.pages.append(url)
    parser = _Links()
    parser.feed(fetched.body.decode("utf-8", "replace"))
    more = []
    for href in parser.media + parser.links:
        target = urljoin(url, href).split("#", 1)[0]
        if not site.same_site(target):
            continue
        if is_audio_url(target):
            site.audio.setdefault(target, url)
        elif target not in site.pages and target not in more:
            more.append(target)
    for href in parser.feeds:
        target = urljoin(url, href)
        if site.same_site(target) and target not in site.feeds:
            site.feeds.append(target)
    return more


def _xml_locations(body: bytes, site: Site, where: str) -> list[str]:
    """Page URLs of a sitemap (<loc>), audio of a feed (<enclosure url>); audio found either
    way is recorded against `where`."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return []
    pages = []
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        url = (el.text or "").strip() if tag == "loc" else el.get("url", "") if (
            tag == "enclosure") else ""
        if not url or not site.same_site(url):
            continue
        if is_audio_url(url) or el.get("type", "").startswith("audio/"):
            site.audio.setdefault(url, where)
        elif tag == "loc":
            pages.append(url)
    return pages
