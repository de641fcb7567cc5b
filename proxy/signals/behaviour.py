"""Behaviour: how a client has been acting, as a score 0..1 and named flags.

Three keys per request: the client (its address and its program, Client.key); the address's
/24 (IPv4) or /64 (IPv6) network; and a fingerprint of the User-Agent and the headers a client
stack chooses (Accept, Accept-Language, Accept-Encoding, sec-ch-ua), which ties a crawler
rotating its source address together.

Volume flags (fast, many-tracks, faster-than-playback, parallel-audio) are judged on the
client key alone: a network or a fingerprint is shared by many real listeners (one office
NAT, one popular browser version), and their sum is not a crawler. The network and fingerprint
keys carry only the flags no listener produces: audio without the page that embeds it, whole
files without a Range from outside the store's own pages, HEAD sweeps, 404 runs, and, for the
fingerprint, one stack seen from many addresses doing those things. They judge only a
request that itself lacks context: an audio request from a client that loaded the page it
names as Referer is judged on its own key, so a listener is never flagged for what a crawler
on its network (or with its browser's headers) did.

An address that fetched a sitemap or feed (proxy/signals/listings.py) and then requests the
URLs it lists in document order is walking the listing: no reader browses that way for long.

The counters live in proxy/state.py's capped store (decayed, one row per key).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import zlib
from collections.abc import Mapping
from typing import NamedTuple

from ..exchange import Client
from ..state import (
    ADDRESSES,
    AUDIO,
    AUDIO_BYTES,
    FIELDS,
    HEADS,
    LAST,
    NO_CONTEXT,
    NOT_FOUND,
    PAGES,
    REQ,
    TRACKS,
    WALK_DOC,
    WALK_POS,
    WALK_STEPS,
    WHOLE,
    ClientStore,
)
from .listings import Listings

# Thresholds on decayed counts. A steady rate r per second settles at r * half_life / ln 2
# (86.6 r for 60 s, 866 r for 600 s). "n events" thresholds sit at n - 0.5, because n events
# a few seconds apart have already decayed below n.
FAST_REQUESTS = 150.0  # ~1.7 requests/s sustained, or a burst of 150
MANY_TRACKS = 12  # distinct tracks in the recent window (linear-counting estimate)
FASTER_THAN_PLAYBACK_BYTES = 100e6  # ~115 KB/s sustained: 3x real time at 320 kbps
NO_CONTEXT_AUDIO = 1.5
WHOLE_FILE_AUDIO = 1.5
HEAD_SWEEP = 4.5
NOT_FOUND_RUN = 9.5
PARALLEL_AUDIO = 4.0
ROTATING_ADDRESSES = 4
WALK_STEPS_MIN = 8  # requests, each further down a sitemap or feed than any before


WEIGHTS = {
    "no-context": 0.45,
    "whole-file": 0.25,
    "fast": 0.3,
    "many-tracks": 0.3,
    "faster-than-playback": 0.35,
    "head-sweep": 0.4,
    "not-found": 0.3,
    "parallel-audio": 0.3,
    "rotating": 0.5,
    "walking-listing": 0.35,
}
BEHAVIOUR_FLAGS = tuple(WEIGHTS)


class Behaviour(NamedTuple):
    score: float
    flags: tuple[str, ...]


NONE = Behaviour(0.0, ())


def _linear_count(mask: int) -> int:
    """Distinct items from a 64-bit linear counter (Whang et al.): -m ln(V), V = empty share."""
    empty = 64 - mask.bit_count()
    return 200 if empty == 0 else round(-64 * math.log(empty / 64))


# the fewest bits set in a track mask that count as MANY_TRACKS
_MANY_TRACKS_BITS = next(b for b in range(65) if _linear_count((1 << b) - 1) >= MANY_TRACKS)


class RequestFacts(NamedTuple):
    """What the behaviour signal needs to know about one request."""

    ip: str
    fingerprint: str
    method: str
    path: str
    is_audio: bool
    is_page: bool
    has_range: bool
    same_site_referer: bool
    open_streams: int  # responses this address has open right now (the stream limiter's count)


def network_key(ip: str) -> str:
    if ":" not in ip:
        return "n:" + ip.rsplit(".", 1)[0]
    try:
        return "n:" + str(ipaddress.IPv6Network(f"{ip}/64", strict=False).network_address)
    except ValueError:
        return "n:" + ip


def fingerprint(ua: str, accept: str, language: str, encoding: str, hints: str) -> str:
    digest = hashlib.blake2b(
        "\x00".join((ua, accept, language, encoding, hints)).encode(), digest_size=8
    )
    return "f:" + digest.hexdigest()


def header_fingerprint(ua: str, headers: Mapping[str, str]) -> str:
    """fingerprint() of a request's own headers."""
    return fingerprint(ua, headers.get("Accept", ""), headers.get("Accept-Language", ""),
                       headers.get("Accept-Encoding", ""), headers.get("Sec-CH-UA", ""))


def request_keys(client: Client, audio_or_head: bool, headers: Mapping[str, str]
                 ) -> tuple[str, ...]:
    """The keys a request counts on: its client (address and program, Client.key); for
    audio and HEAD requests also its network and header fingerprint
    (BehaviourTracker.observe)."""
    if not audio_or_head:
        return (client.key,)
    return (client.key, network_key(client.ip),
            header_fingerprint(headers.get("User-Agent", ""), headers))


class BehaviourTracker:
    """Updates the three keys of a request and judges them. One per worker (app[TRACKER]).

    Counts are added with the store's event weights (proxy/state.py), so the thresholds below
    are compared against `threshold * weight`: a decayed count, without decaying anything."""

    def __init__(self, store: ClientStore, listings: Listings | None = None) -> None:
        self.store = store
        self.listings = listings if listings is not None else Listings()

    def observe(self, facts: RequestFacts, ip_row: int, judge: bool = True) -> Behaviour:
        """Count this request on its keys and, when `judge`, judge them. ip_row: the
        address's row, just seen (store.row). Pages and other plain requests touch only that
        row: the network and fingerprint keys carry only what audio and HEAD requests do."""
        if not facts.is_audio and facts.method != "HEAD":
            return self.observe_plain(ip_row, facts.path, facts.is_page, judge)
        s = self.store
        v = s.values
        ws, wl = s.w_short, s.w_long
        b = ip_row * FIELDS
        if v[b + WALK_DOC]:
            self._walk(b, facts.path)
        now = v[b + LAST]
        rows = (ip_row, s.row(network_key(facts.ip), now), s.row(facts.fingerprint, now))
        # context is the requesting address's own: a page or feed it loaded itself (another
        # address with the same fingerprint loading one proves nothing)
        had_page = v[b + PAGES] >= 0.5 * wl
        address_bit = 1 << (zlib.crc32(facts.ip.encode()) & 63)
        track_bit = 1 << (zlib.crc32(facts.path.encode()) & 63) if facts.is_audio else 0
        head = facts.method == "HEAD"
        audio_get = facts.is_audio and facts.method == "GET"
        for r in rows:
            b = r * FIELDS
            v[b + REQ] += ws
            s.masks[2 * r + ADDRESSES] |= address_bit
            if head:
                v[b + HEADS] += wl
            if audio_get:
                v[b + AUDIO] += wl
                s.masks[2 * r + TRACKS] |= track_bit
                if not facts.same_site_referer:
                    # a download button on the store's own page is a whole-file GET too
                    if not facts.has_range:
                        v[b + WHOLE] += wl
                    if not had_page:
                        v[b + NO_CONTEXT] += wl
        if not judge:
            return NONE
        if audio_get and facts.same_site_referer and had_page:
            # in context, as a listener's player asks: judged on this client's own doings;
            # what others on its network or with its browser's headers did is theirs
            return self.judge((ip_row, ip_row, ip_row), facts.open_streams)
        return self.judge(rows, facts.open_streams)

    def observe_plain(self, ip_row: int, path: str, is_page: bool, judge: bool) -> Behaviour:
        """observe() for a request that is neither audio nor HEAD: it counts on the address
        alone, so none of the other facts are needed."""
        s = self.store
        v = s.values
        b = ip_row * FIELDS
        if v[b + WALK_DOC]:
            self._walk(b, path)
        v[b + REQ] += s.w_short
        if is_page:
            v[b + PAGES] += s.w_long
        return self.judge_address(ip_row) if judge else NONE

    def _walk(self, b: int, path: str) -> None:
        """A client that fetched a sitemap or feed: is it taking the listed URLs in order?
        Counts the requests that reach further down the list than any before (a reader
        browsing at random sets a new furthest point about ln(n) times in n requests)."""
        v = self.store.values
        index = self.listings.index(int(v[b + WALK_DOC]), path)
        if index is not None and index > v[b + WALK_POS]:
            v[b + WALK_POS] = index
            v[b + WALK_STEPS] += 1.0

    def fetched_listing(self, key: str, doc: int | None, now: float) -> None:
        """The client (Client.key) fetched listing `doc` (a new walk starts; None: not a
        listing)."""
        if doc is None:
            return
        b = self.store.row(key, now) * FIELDS
        v = self.store.values
        v[b + WALK_DOC], v[b + WALK_POS], v[b + WALK_STEPS] = doc, -1.0, 0.0

    def finish(self, key: str, status: int, audio_bytes: int, now: float) -> None:
        """After the response: 404s and audio bytes, counted on the client's key."""
        s = self.store
        r = s.row(key, now)
        if status == 404:
            s.add(r, NOT_FOUND)
        if audio_bytes:
            s.add(r, AUDIO_BYTES, audio_bytes)

    def judge_address(self, ip_row: int) -> Behaviour:
        """For a plain request: what the address alone shows (its own earlier audio counts)."""
        v = self.store.values
        wl = self.store.w_long
        b = ip_row * FIELDS
        if (v[b + REQ] < FAST_REQUESTS * self.store.w_short
                and v[b + NO_CONTEXT] < NO_CONTEXT_AUDIO * wl
                and v[b + WHOLE] < WHOLE_FILE_AUDIO * wl and v[b + HEADS] < HEAD_SWEEP * wl
                and v[b + NOT_FOUND] < NOT_FOUND_RUN * wl
                and v[b + AUDIO_BYTES] < FASTER_THAN_PLAYBACK_BYTES * wl
                and v[b + WALK_STEPS] < WALK_STEPS_MIN):
            return NONE
        return self.judge((ip_row, ip_row, ip_row), 0)

    def judge(self, rows: tuple[int, int, int], open_streams: int) -> Behaviour:
        s = self.store
        v, masks, wl = s.values, s.masks, s.w_long
        ip_row, _, fp_row = rows
        ib, nb, fb = ip_row * FIELDS, rows[1] * FIELDS, fp_row * FIELDS
        if (open_streams < PARALLEL_AUDIO and v[ib + REQ] < FAST_REQUESTS * s.w_short
                and masks[2 * ip_row + TRACKS].bit_count() < _MANY_TRACKS_BITS
                and v[ib + AUDIO_BYTES] < FASTER_THAN_PLAYBACK_BYTES * wl
                and v[ib + WALK_STEPS] < WALK_STEPS_MIN
                and v[ib + NO_CONTEXT] + v[nb + NO_CONTEXT] + v[fb + NO_CONTEXT] < wl
                and v[ib + WHOLE] + v[nb + WHOLE] + v[fb + WHOLE] < wl
                and max(v[ib + HEADS], v[nb + HEADS], v[fb + HEADS]) < HEAD_SWEEP * wl
                and max(v[ib + NOT_FOUND], v[nb + NOT_FOUND], v[fb + NOT_FOUND])
                < NOT_FOUND_RUN * wl):
            return NONE  # the common case, a listener: no flag can be raised
        flags: list[str] = []
        if v[ib + REQ] >= FAST_REQUESTS * s.w_short:
            flags.append("fast")
        if _linear_count(masks[2 * ip_row + TRACKS]) >= MANY_TRACKS:
            flags.append("many-tracks")
        if v[ib + AUDIO_BYTES] >= FASTER_THAN_PLAYBACK_BYTES * wl:
            flags.append("faster-than-playback")
        if open_streams >= PARALLEL_AUDIO:
            flags.append("parallel-audio")
        if v[ib + WALK_STEPS] >= WALK_STEPS_MIN:
            flags.append("walking-listing")
        # flags no listener produces, on every key
        if max(v[ib + NO_CONTEXT], v[nb + NO_CONTEXT], v[fb + NO_CONTEXT]) >= NO_CONTEXT_AUDIO * wl:
            flags.append("no-context")
        if max(v[ib + WHOLE], v[nb + WHOLE], v[fb + WHOLE]) >= WHOLE_FILE_AUDIO * wl:
            flags.append("whole-file")
        if max(v[ib + HEADS], v[nb + HEADS], v[fb + HEADS]) >= HEAD_SWEEP * wl:
            flags.append("head-sweep")
        if max(v[ib + NOT_FOUND], v[nb + NOT_FOUND], v[fb + NOT_FOUND]) >= NOT_FOUND_RUN * wl:
            flags.append("not-found")
        if ((v[fb + NO_CONTEXT] >= wl or v[fb + WHOLE] >= wl)
                and _linear_count(masks[2 * fp_row + ADDRESSES]) >= ROTATING_ADDRESSES):
            flags.append("rotating")
        if not flags:
            return NONE
        keep = 1.0
        for name in flags:
            keep *= 1.0 - WEIGHTS[name]
        return Behaviour(round(1.0 - keep, 3), tuple(flags))
