"""Audio countermeasures in the proxy: from a verdict to a variant file on the wire.

For a request the rules answer with an audio action:

1. Ask the store for the track's validators (HEAD). A strong ETag, or Last-Modified with a
   length, names this version of the track; the variant's cache key is a hash of it, the path
   and the action. Without validators the key comes from the content itself (step 3).
2. A cached variant is served at once (proxy/audio/serve.py).
3. Otherwise the original is fetched whole into the cache's tmp folder (bounded size), sniffed
   (proxy/audio/formats.py) and handed to the process pool, which writes the variant
   (proxy/audio/codec.py). Codec work never runs on the event loop.

Bounds: at most `max_jobs` fetches and codec jobs at once in this worker; concurrent requests
for the same variant wait for one job. Past the bound, or when the store's file is not audio
SonicShield can read, the request gets the cheaper countermeasure (a 403), never the real file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
from aiohttp import web
from yarl import URL

from ..exchange import Action, Exchange, Served
from ..forward import Upstream, upstream_request_headers
from ..keys import load_or_create_key
from ..logs import log_event
from ..settings import AudioSettings
from .cache import VariantCache
from .formats import SNIFF_BYTES, AudioFormat, seconds_per_byte, sniff
from .rates import HEAD
from .serve import send_variant
from .watermark import SEGMENTS, Layout, bits_of, marked_format, payload

log = logging.getLogger("sonicshield.audio")
RECIPE = "2"  # bump when a variant's recipe changes: old cache entries are then never hit
_NOT_FORWARDED = ("Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match",
                  "If-Unmodified-Since", "Accept-Encoding")


class Fallback(Exception):
    """No variant for this request: answer with the cheaper countermeasure. `reason` is logged
    and becomes the exchange's error."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Source(NamedTuple):
    """Where the original of a track is: the store's URL and the headers to ask with."""

    session: aiohttp.ClientSession
    url: URL
    headers: Any
    path: str


@dataclass(frozen=True, slots=True)
class Variant:
    key: str
    path: Path
    format: AudioFormat
    size: int
    # a watermark pair: B beside A (`path`), and where their segments lie
    b_path: Path | None = None
    layout: Layout | None = None


def recipe(action: Action, params: tuple[tuple[str, object], ...],
           tags: dict[str, str]) -> str:
    """The canonical text of what a variant is: 'truncate seconds=30 {tags...}'."""
    return " ".join([action.value, *(f"{k}={v}" for k, v in params),
                     json.dumps(tags, sort_keys=True)])


def marked(action: Action, params: tuple[tuple[str, object], ...]) -> bool:
    """Is this variant served as per-client marked copies (an A/B pair)?"""
    return action is Action.WATERMARK or ("watermark", True) in params


def make_variant(action: str, params: dict[str, Any], src: str, dst: str, fmt: str,
                 seed: int, tags: dict[str, str], secret: bytes, track: str) -> str:
    """The pool's entry point (module level, so it pickles): the variant, then its rights
    tags. A marked variant (watermark, or truncate/poison with watermark: true) is an A/B
    pair, A at `dst` and B at `dst` + '.b'; its layout is returned."""
    from . import codec, watermark

    audio = AudioFormat(fmt)
    if action != Action.WATERMARK and params.get("watermark"):
        # the variant first, then the pair made from it (marks seeded by the original's hash,
        # so `trace --original` with the store's file reads them)
        plain = dst + ".plain"
        try:
            make_variant(action, {k: v for k, v in params.items() if k != "watermark"}, src,
                         plain, fmt, seed, {}, secret, track)
            return make_variant(Action.WATERMARK, {}, plain, dst, fmt, seed, tags, secret,
                                track)
        finally:
            Path(plain).unlink(missing_ok=True)
    if action == Action.WATERMARK:
        bit_rate = codec.probe(Path(src), audio).bit_rate
        a, b = Path(dst), Path(dst + ".b")
        target = watermark.marked_format(audio)
        watermark.encode_pair(Path(src), target, a, b, secret, track, bit_rate)
        for path in (a, b):
            codec.write_tags(path, target, tags)
        return watermark.layout_of(a, b, target, track).to_json()
    if action == Action.TRUNCATE:
        codec.truncate(Path(src), Path(dst), audio, float(params.get("seconds", 30)))
    elif action == Action.DECOY:
        codec.decoy(Path(src), Path(dst), audio, seed)
    elif action == Action.POISON:
        codec.poison(Path(src), Path(dst), audio, float(params.get("strength", 0.5)), seed)
    else:
        raise ValueError(f"not an audio action: {action}")
    codec.write_tags(Path(dst), audio, tags)
    return ""


class Countermeasures:
    @classmethod
    def from_settings(cls, a: AudioSettings, max_jobs: int | None = None) -> Countermeasures:
        return cls(a.cache_dir, a.cache_max_bytes, a.workers,
                   a.max_jobs if max_jobs is None else max_jobs, a.max_source_bytes, a.key_file)

    def __init__(self, cache_dir: Path, cache_max_bytes: int, workers: int, max_jobs: int,
                 max_source_bytes: int, key_file: Path) -> None:
        self.key_file = key_file
        self._secret: bytes | None = None
        self.cache_dir = cache_dir
        self.cache_max_bytes = cache_max_bytes
        self._cache: VariantCache | None = None
        self.workers = workers
        self.max_jobs = max_jobs
        self.max_source_bytes = max_source_bytes
        self.jobs = 0
        self._flights: dict[str, asyncio.Task[Variant]] = {}
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._rates: dict[str, float] = {}  # variant key -> seconds per byte
        # told of every lookup: (action, "hit" | "miss" | "fallback"); the proxy counts them
        self.on_lookup: Callable[[str, str], None] = lambda action, result: None

    @property
    def cache(self) -> VariantCache:
        if self._cache is None:  # the folder is made when the first variant is asked for
            self._cache = VariantCache(self.cache_dir, self.cache_max_bytes)
        return self._cache

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = load_or_create_key(self.key_file, "watermark key")
        return self._secret

    @property
    def pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:  # workers start on first use; forkserver: no copy of the loop
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("forkserver"),
                initializer=_background, initargs=(os.getpid(),))
        return self._pool

    async def aclose(self) -> None:
        """Cancel the jobs in flight and stop the pool."""
        jobs = list(self._flights.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    async def respond(
        self, request: web.Request, ex: Exchange, upstream: Upstream, headers: Mapping[str, str],
        tags: dict[str, str],
    ) -> web.StreamResponse:
        """Serve this exchange's audio variant, carrying `tags` (rights metadata); Fallback
        when there is none to serve."""
        source = Source(upstream.session, upstream.url(ex.target),
                        _fetch_headers(request, ex, upstream), ex.path)
        variant = await self.variant(source, ex.verdict.action, ex.verdict.params, tags)
        ex.variant = ex.verdict.action.value
        ex.audio_rate = self._rate(variant)
        if variant.layout is None or variant.b_path is None:
            etag = f'"ss-{variant.key[:32]}"'
            pieces = [(variant.path, 0, variant.size)]
            ex.served = Served(variant.key, None, ((str(variant.path), 0, variant.size),))
        else:  # this client's copy: A or B segment by segment, by its payload's bits
            mark = payload(self.secret, variant.layout.track, ex.client.ip,
                           int(time.time() // WATERMARK_BUCKET))
            etag = f'"ss-{variant.key[:16]}-{mark:016x}"'
            files = (variant.path, variant.b_path)
            pieces = [(files[v], start, end) for v, start, end in variant.layout.parts(
                bits_of(mark))]
            ex.served = Served(variant.key, mark, tuple((str(p), s, e) for p, s, e in pieces))
        return await send_variant(request, ex, pieces, etag, variant.format.content_type,
                                  headers)

    def _rate(self, variant: Variant) -> float:
        """Seconds per byte of a variant (read from its head once; 0.0 when unknown)."""
        rate = self._rates.get(variant.key)
        if rate is None:
            try:
                with variant.path.open("rb") as f:
                    head = f.read(HEAD)
            except OSError:
                return 0.0
            if len(self._rates) >= 4096:
                self._rates.clear()
            rate = self._rates[variant.key] = seconds_per_byte(head, variant.size) or 0.0
        return rate

    async def variant(self, source: Source, action: Action,
                      params: tuple[tuple[str, object], ...], tags: dict[str, str]) -> Variant:
        """The variant of `source` for `action`: from the cache, or made (Fallback when it
        cannot be)."""
        what = recipe(action, params, tags)
        validator = await self._validator(source)
        key = _key(what, source.path, validator) if validator else None
        if key is not None:
            hit = self._cached(key, action, params)
            if hit is not None:
                self.on_lookup(action.value, "hit")
                return hit
        flight = key or f"{source.path}\x00{what}"
        job = self._flights.get(flight)
        if job is None:
            if self.jobs >= self.max_jobs:
                self.on_lookup(action.value, "fallback")
                raise Fallback("variant-jobs-busy")
            self.on_lookup(action.value, "miss")
            # a task of its own: a client that goes away does not cancel the job the others
            # wait for (and the next request finds the variant made)
            job = asyncio.create_task(self._make(source, action, params, what, key, tags))
            self._flights[flight] = job
            self.jobs += 1
            job.add_done_callback(lambda done: self._landed(flight, done))
        return await asyncio.shield(job)

    def _landed(self, flight: str, job: asyncio.Task[Variant]) -> None:
        self.jobs -= 1
        del self._flights[flight]
        if not job.cancelled():
            job.exception()  # retrieved: a failure every waiter already saw is not "unhandled"

    async def _validator(self, source: Source) -> str:
        """What names this version of the track at the store ('' when it says nothing)."""
        try:
            async with source.session.head(source.url, headers=source.headers,
                                           allow_redirects=False) as r:
                if r.status >= 400:
                    raise Fallback(f"upstream-status-{r.status}", 404 if r.status == 404 else 502)
                etag = r.headers.get("ETag", "")
                if etag and not etag.startswith("W/"):
                    return "etag " + etag
                modified, length = r.headers.get("Last-Modified"), r.headers.get("Content-Length")
                return f"modified {modified} {length}" if modified and length else ""
        except aiohttp.ClientError as exc:
            raise Fallback(f"upstream-error: {type(exc).__name__}", 502) from None

    async def _make(self, source: Source, action: Action, params: tuple[tuple[str, object], ...],
                    what: str, key: str | None, tags: dict[str, str]) -> Variant:
        original = self.cache.new_tmp()
        try:
            digest, fmt = await self._fetch(source, original)
            key = key or _key(what, "", "sha256 " + digest)
            hit = self._cached(key, action, params)
            if hit is not None:
                return hit
            made_in = fmt  # the variant's format: a marked Vorbis original's pair is Opus
            if marked(action, params):
                made_in = marked_format(fmt)
                if made_in not in SEGMENTS:
                    raise Fallback("watermark-format-unsupported")
            out = self.cache.new_tmp("." + made_in.value)
            seed = variant_seed(digest)
            loop = asyncio.get_running_loop()
            try:
                layout = await loop.run_in_executor(
                    self.pool, make_variant, action.value, dict(params),
                    str(original), str(out), fmt.value, seed, tags, self.secret, digest)
            except Exception as exc:
                _discard(out, out.with_name(out.name + ".b"))
                log_event(log, logging.WARNING, "variant-failed", path=source.path,
                          action=action.value, error=f"{type(exc).__name__}: {exc}")
                raise Fallback("variant-failed") from None
            if layout:  # a watermark pair: B and the layout first, A last (A means "ready")
                self.cache.put(_b_key(key), made_in, out.with_name(out.name + ".b"))
                self.cache.put_layout(key, layout)
            self.cache.put(key, made_in, out)
            made = self._cached(key, action, params)
            if made is None:  # evicted at once: the cache is smaller than one variant
                raise Fallback("variant-cache-too-small")
            return made
        finally:
            original.unlink(missing_ok=True)

    async def _fetch(self, source: Source, dst: Path) -> tuple[str, AudioFormat]:
        """The original, whole, into `dst`: its SHA-256 and format."""
        digest = hashlib.sha256()
        head = b""
        size = 0
        try:
            async with source.session.get(source.url, headers=source.headers,
                                          allow_redirects=False) as r:
                if r.status != 200:
                    raise Fallback(f"upstream-status-{r.status}", 404 if r.status == 404 else 502)
                with dst.open("wb") as f:
                    async for chunk in r.content.iter_any():
                        size += len(chunk)
                        if size > self.max_source_bytes:
                            raise Fallback("source-too-large")
                        if len(head) < SNIFF_BYTES:
                            head += chunk[:SNIFF_BYTES - len(head)]
                        digest.update(chunk)
                        f.write(chunk)
        except aiohttp.ClientError as exc:
            raise Fallback(f"upstream-error: {type(exc).__name__}", 502) from None
        fmt = sniff(head)
        if fmt is None:
            raise Fallback("not-audio-sonicshield-reads")
        return digest.hexdigest(), fmt


    def _cached(self, key: str, action: Action,
                params: tuple[tuple[str, object], ...]) -> Variant | None:
        hit = self.cache.get(key)
        if hit is None:
            return None
        if not marked(action, params):
            return Variant(key, *hit)
        b, text = self.cache.get(_b_key(key)), self.cache.get_layout(key)
        if b is None or text is None:
            return None
        try:
            layout = Layout.from_json(text)
        except (ValueError, KeyError, TypeError):  # unreadable: made again, never served
            return None
        return Variant(key, *hit, b_path=b[0], layout=layout)


def variant_seed(digest: str) -> int:
    """A decoy's seed, from its original's SHA-256 (so `trace` can make the same decoy)."""
    return int(digest[:15], 16)


def _background(proxy: int) -> None:
    """Codec workers yield the CPU to the proxy: a listener's request never waits behind a
    crawler's decoy. They also end with the proxy: a pool worker blocks on its queue, which a
    killed proxy never closes (the worker's own copy of the queue holds the pipe open)."""
    os.nice(10)
    threading.Thread(target=_end_with, args=(proxy,), daemon=True, name="end-with").start()


def _end_with(pid: int) -> None:
    while True:
        time.sleep(2.0)
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):  # gone (or its number reused by another
            os._exit(0)                                 # user's process)


def _discard(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


WATERMARK_BUCKET = 86400  # seconds: a client's payload changes once a day


def _b_key(key: str) -> str:
    return hashlib.sha256(f"{key}\x00B".encode()).hexdigest()


def _key(what: str, path: str, validator: str) -> str:
    return hashlib.sha256(f"{RECIPE}\x00{what}\x00{path}\x00{validator}".encode()).hexdigest()


def _fetch_headers(request: web.Request, ex: Exchange, upstream: Upstream) -> Any:
    headers = upstream_request_headers(request, ex, upstream)
    for name in _NOT_FORWARDED:
        headers.popall(name, None)
    headers["Accept-Encoding"] = "identity"
    return headers
