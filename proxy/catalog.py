"""`sonicshield catalog build`: make a store's audio variants before any crawler asks.

Finds the store's audio (a URL list, or the store's sitemap, feed and the pages they list,
bounded), works out which audio actions the rules can give each track (rules whose `path`
does not match the track are skipped), and has the proxy's own variant machinery
(proxy/audio/service.py: the same cache keys, the same pool) make them, `audio.workers` at a
time, with a progress line. The proxy then serves them from the cache on the first request.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .audio.service import Countermeasures, Fallback, Source
from .exchange import Action, Client, Exchange
from .forward import make_session
from .rules import AUDIO_ACTIONS, RuleSet
from .settings import Settings
from .signals.content import AUDIO_SUFFIXES
from .signals.listings import listed_urls

USER_AGENT = "SonicShield-catalog/1 (building the artist's own variant cache)"
_LINK = re.compile(rb"""(?:href|src)=["']([^"'#?]+\.(?:mp3|flac|ogg|oga|opus|wav|m4a|aac))""",
                   re.IGNORECASE)


def _same_site_paths(urls: Iterable[str], base: str) -> list[str]:
    host = urlsplit(base).netloc
    out = []
    for url in urls:
        parts = urlsplit(urljoin(base + "/", url))
        if parts.netloc in ("", host) and parts.path.startswith("/"):
            out.append(parts.path)
    return out


def _is_audio(path: str) -> bool:
    return path.rsplit(".", 1)[-1].lower() in AUDIO_SUFFIXES


async def discover(session: aiohttp.ClientSession, base: str, max_pages: int) -> list[str]:
    """Audio paths of a store: its sitemap and feed, and the pages they list (at most
    `max_pages` fetched)."""
    async def get(path: str) -> bytes:
        try:
            async with session.get(base + path, headers={"User-Agent": USER_AGENT}) as r:
                return await r.read() if r.status == 200 else b""
        except aiohttp.ClientError:
            return b""

    listed: list[str] = []
    for listing in ("/sitemap.xml", "/feed.xml", "/rss.xml", "/feed"):
        listed += _same_site_paths(listed_urls(await get(listing)), base)
    audio = [p for p in listed if _is_audio(p)]
    pages = [p for p in dict.fromkeys(listed) if not _is_audio(p)][:max_pages]
    for page in pages:
        audio += _same_site_paths((m.decode() for m in _LINK.findall(await get(page))), base)
    return list(dict.fromkeys(audio))


def actions_for(ruleset: RuleSet, path: str) -> list[tuple[Action, tuple[tuple[str, object], ...]]]:
    """The audio actions (with params) some rule could give a request for `path`."""
    ex = Exchange(id="catalog", client=Client("", "", False, "http", ""), method="GET",
                  path=path, query="")
    out = []
    for rule in ruleset.rules:
        if rule.verdict.action not in AUDIO_ACTIONS:
            continue
        if all(c.test(ex) for c in rule.conditions if c.key == "path"):
            out.append((rule.verdict.action, rule.verdict.params))
    return list(dict.fromkeys(out))


async def build(settings: Settings, ruleset: RuleSet, paths: list[str] | None,
                max_pages: int) -> tuple[int, int]:
    """Make every variant; returns (made or already cached, failed)."""
    a = settings.audio
    # no job bound here: the gate below keeps `audio.workers` jobs running at a time
    cm = Countermeasures.from_settings(a, max_jobs=1_000_000)
    base = settings.upstream.url.rstrip("/")
    session = make_session(settings)
    try:
        if paths is None:
            paths = await discover(session, base, max_pages)
        jobs = [(p, action, params) for p in paths for action, params in actions_for(ruleset, p)]
        print(f"{len(paths)} audio files, {len(jobs)} variants to make", file=sys.stderr)
        gate = asyncio.Semaphore(a.workers)
        done = failed = 0

        async def one(path: str, action: Action, params: tuple[tuple[str, object], ...]) -> None:
            nonlocal done, failed
            headers = CIMultiDict({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
            source = Source(session, URL(base + path), headers, path)
            tags = ruleset.rights.tags(path) if ruleset.rights is not None else {}
            async with gate:
                try:
                    await cm.variant(source, action, params, tags)
                    done += 1
                except Fallback as exc:
                    failed += 1
                    print(f"\nfailed: {path} {action.value}: {exc.reason}", file=sys.stderr)
            print(f"\r[{done + failed:>5}/{len(jobs)}] {action.value:9} {path[:60]:60}",
                  end="", file=sys.stderr, flush=True)

        await asyncio.gather(*(one(*job) for job in jobs))
        print(file=sys.stderr)
        return done, failed
    finally:
        await session.close()
        await cm.aclose()


def read_url_list(path: Path, base: str) -> list[str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return _same_site_paths((line for line in lines if line and not line.startswith("#")), base)
