"""Sitemaps and feeds the store served, as the ordered lists of paths they name.

A crawler given a sitemap or a feed takes what it lists, top to bottom; a reader browses. To
tell them apart the behaviour signal needs the listing's order, which only the body says, so
the proxy keeps a copy of a sitemap or feed body as it streams through (at most 4 MiB, identity
or gzip; anything else passes through unread), and extracts the URLs in document order:
`<loc>` (sitemaps), `<enclosure url=...>`, `<link>` and `<link href=...>` (RSS, Atom).

A bounded number of listings is kept, the oldest dropped first; the same listing fetched again
keeps its id, with its entries replaced.
"""

from __future__ import annotations

import html
import re
import zlib
from collections.abc import Mapping
from urllib.parse import urlsplit

MAX_BODY = 4 << 20
MAX_LISTINGS = 32
_LISTING_TYPES = ("application/xml", "text/xml", "application/rss+xml", "application/atom+xml")
_URL = re.compile(
    rb"<loc>\s*([^<\s]+)\s*</loc>"
    rb"|<enclosure\b[^>]*?\burl=[\"']([^\"']+)"
    rb"|<link>\s*([^<\s]+)\s*</link>"
    rb"|<link\b[^>]*?\bhref=[\"']([^\"']+)"
)


def listed_urls(body: bytes) -> list[str]:
    """The URLs a sitemap or feed lists, in document order."""
    return [html.unescape(next(g for g in m.groups() if g is not None).decode("utf-8", "replace"))
            for m in _URL.finditer(body)]


class Tap:
    """Collects a body as it streams, up to MAX_BODY (beyond that it gives up)."""

    def __init__(self, path: str, encoding: str) -> None:
        self.path = path
        self.encoding = encoding
        self.body: bytearray | None = bytearray()

    def __call__(self, chunk: bytes) -> None:
        if self.body is not None:
            self.body += chunk
            if len(self.body) > MAX_BODY:
                self.body = None


class Listings:
    def __init__(self, capacity: int = MAX_LISTINGS) -> None:
        self.capacity = capacity
        self._ids: dict[str, int] = {}  # listing path -> id (oldest first)
        self._entries: dict[int, dict[str, int]] = {}  # id -> {path: position}
        self._next = 1

    def __len__(self) -> int:
        return len(self._entries)

    def tap(self, path: str, status: int, method: str, headers: Mapping[str, str]) -> Tap | None:
        """A Tap for this response when it is a sitemap or feed the proxy can read."""
        if status != 200 or method != "GET":
            return None
        kind = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if kind not in _LISTING_TYPES and not path.endswith((".xml", ".rss", ".atom")):
            return None
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            return None
        length = headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            return None
        return Tap(path, encoding)

    def learn(self, tap: Tap) -> int | None:
        """Read a tapped body; its listing's id, or None when it lists fewer than two URLs."""
        if tap.body is None:
            return None
        body = bytes(tap.body)
        if tap.encoding == "gzip":
            inflate = zlib.decompressobj(wbits=31)
            try:
                body = inflate.decompress(body, MAX_BODY)
            except zlib.error:
                return None
        entries: dict[str, int] = {}
        for url in listed_urls(body):
            path = urlsplit(url).path
            if path and path != tap.path and path not in entries:
                entries[path] = len(entries)
        if len(entries) < 2:
            return None
        doc = self._ids.pop(tap.path, None)
        if doc is None:
            doc = self._next
            self._next += 1
            if len(self._ids) >= self.capacity:
                oldest = next(iter(self._ids))
                del self._entries[self._ids.pop(oldest)]
        self._ids[tap.path] = doc
        self._entries[doc] = entries
        return doc

    def index(self, doc: int, path: str) -> int | None:
        """The position of `path` in listing `doc` (None if not listed, or the listing is
        gone)."""
        entries = self._entries.get(doc)
        return entries.get(path) if entries is not None else None
