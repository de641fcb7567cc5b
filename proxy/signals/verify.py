"""Verified crawlers: forward-confirmed reverse DNS, as the search engines themselves document.

A request whose UA claims a crawler with published DNS domains (Googlebot: googlebot.com,
google.com; bingbot: search.msn.com; ...) is checked in the background: the address's PTR name
must end in one of the operator's domains, and that name must resolve back to the address.
Classification never waits for DNS: until the check is done the client is `pending` (not
disproven: a real search engine's first request is served as such); then `verified` or
`unverified`, cached for `ttl` seconds. At most `max_pending` checks run at once and the cache
holds at most `cache_size` addresses, so a flood of claimed Googlebots costs bounded work.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Mapping

log = logging.getLogger("sonicshield.verify")

VERIFIED, UNVERIFIED, PENDING = "verified", "unverified", "pending"

# Operators' documented crawler domains, by agent token (lower-case).
CRAWLER_DOMAINS: Mapping[str, tuple[str, ...]] = {
    "googlebot": ("googlebot.com", "google.com", "googleusercontent.com"),
    "google-inspectiontool": ("googlebot.com", "google.com"),
    "googleother": ("googlebot.com", "google.com", "googleusercontent.com"),
    "bingbot": ("search.msn.com",),
    "msnbot": ("search.msn.com",),
    "applebot": ("applebot.apple.com",),
    "yandexbot": ("yandex.ru", "yandex.net", "yandex.com"),
    "baiduspider": ("baidu.com", "baidu.jp"),
    "duckduckbot": ("duckduckgo.com",),
    "petalbot": ("petalsearch.com",),
    "seznambot": ("seznam.cz",),
    "archive.org_bot": ("archive.org",),
    "ia_archiver": ("archive.org", "alexa.com"),
    "qwantbot": ("qwant.com",),
    "mojeekbot": ("mojeek.com",),
}


class CrawlerVerifier:
    def __init__(
        self,
        domains: Mapping[str, tuple[str, ...]] = CRAWLER_DOMAINS,
        ttl: float = 3600.0,
        cache_size: int = 10_000,
        max_pending: int = 32,
        timeout: float = 5.0,
    ) -> None:
        self.domains = {k.lower(): v for k, v in domains.items()}
        self.ttl = ttl
        self.cache_size = cache_size
        self.max_pending = max_pending
        self.timeout = timeout
        self._results: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._pending: dict[str, asyncio.Task[None]] = {}

    def status(self, ip: str, agent: str, now: float) -> str:
        """verified, unverified or pending for a client claiming `agent`; "" when the agent has
        no published domains (nothing to verify)."""
        domains = self.domains.get(agent.lower())
        if domains is None:
            return ""
        key = f"{agent.lower()} {ip}"
        cached = self._results.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        if key not in self._pending and len(self._pending) < self.max_pending:
            task = asyncio.get_running_loop().create_task(self._check(key, ip, domains))
            self._pending[key] = task
        return PENDING

    async def _check(self, key: str, ip: str, domains: tuple[str, ...]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                result = await self._forward_confirmed(ip, domains)
        except (TimeoutError, OSError, UnicodeError):
            result = UNVERIFIED
        finally:
            self._pending.pop(key, None)
        self._results[key] = (result, time.monotonic() + self.ttl)
        self._results.move_to_end(key)
        while len(self._results) > self.cache_size:
            self._results.popitem(last=False)

    async def _forward_confirmed(self, ip: str, domains: tuple[str, ...]) -> str:
        loop = asyncio.get_running_loop()
        try:
            host, _ = await loop.getnameinfo((ip, 0), socket.NI_NAMEREQD)
        except (OSError, socket.gaierror):
            return UNVERIFIED
        name = host.rstrip(".").lower()
        if not any(name == d or name.endswith("." + d) for d in domains):
            return UNVERIFIED
        try:
            infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, socket.gaierror):
            return UNVERIFIED
        return VERIFIED if any(info[4][0] == ip for info in infos) else UNVERIFIED

    async def close(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)
