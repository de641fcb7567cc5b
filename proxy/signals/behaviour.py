"""Behaviour: how a client has been acting, as a score 0..1 and named flags.

Two keys per audio or HEAD request: the client (its address and its program, Client.key) and
the address's /24 (IPv4) or /64 (IPv6) network, the weaker aggregate that ties a crawler
rotating its source address together. A fingerprint of the headers is no key of its own: the
same browser version and headers are shared by millions of people, and never tie two
addresses together.

Volume flags (fast, many-tracks, track-run, faster-than-playback, parallel-audio) are judged
on the client key alone: a network is shared by many real listeners (one office NAT, one
carrier's CGNAT), and their sum is not a crawler. The network key carries only the flags no
listener produces: audio without the page that embeds it, whole files without a Range from
outside the store's own pages, HEAD sweeps, 404 runs, and many addresses of it doing those
things (rotating). It judges only a request that itself lacks context: an audio request from
a client that loaded the page it names as Referer is judged on its own key, so a listener is
never flagged for what a crawler on its network did.

The score grows with independent evidence: the flags fall into families (FAMILIES: what
context the audio came with, how much of it, probing, address rotation, walking a listing),
a family counts once (its strongest flag), and no family alone reaches 0.5. So one kind of
oddity never reaches the shipped rules' decoy threshold (docs/listeners.md, the ladder).

track-run is a player's lane check: a media player or podcast app starts one track, plays it,
then the next; one that starts track after track within a minute, none of them listed in a
feed or page it read, is taking a catalogue, not playing it.

An address that fetched a sitemap or feed (proxy/signals/listings.py) and then requests the
URLs it lists in document order is walking the listing: no reader browses that way for long.

The counters live in proxy/state.py's capped store (decayed, one row per key).
"""

from __future__ import annotations

import ipaddress
import math
import zlib
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
    STARTS,
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
ROTATING_ADDRESSES = 3  # addresses of one /24 or /64 taking audio out of context
TRACK_RUN = 1.5  # a second new track within about a minute of the first, outside any context
WALK_STEPS_MIN = 8  # requests, each further down a sitemap or feed than any before


WEIGHTS = {
    "no-context": 0.45,
    "whole-file": 0.25,
    "fast": 0.3,
    "many-tracks": 0.3,
    "track-run": 0.3,
    "faster-than-playback": 0.35,
    "head-sweep": 0.4,
    "not-found": 0.3,
    "parallel-audio": 0.3,
    "rotating": 0.45,
    "walking-listing": 0.35,
}
BEHAVIOUR_FLAGS = tuple(WEIGHTS)
# Flags that measure one thing count once: a direct download is both "no-context" and
# "whole-file", and two names for one fact are not two pieces of evidence.
FAMILIES = {
    "no-context": "context", "whole-file": "context",
    "fast": "volume", "many-tracks": "volume", "track-run": "volume",
    "faster-than-playback": "volume", "parallel-audio": "volume",
    "head-sweep": "probing", "not-found": "probing",
    "rotating": "rotation",
    "walking-listing": "listing",
}


def score(flags: tuple[str, ...]) -> float:
    """1 - the product over families of (1 - the family's strongest weight)."""
    strongest: dict[str, float] = {}
    for name in flags:
        family = FAMILIES[name]
        strongest[family] = max(strongest.get(family, 0.0), WEIGHTS[name])
    keep = 1.0
    for weight in strongest.values():
        keep *= 1.0 - weight
    return round(1.0 - keep, 3)


def families(flags: tuple[str, ...]) -> tuple[str, ...]:
    """The independent families the flags come from, in FAMILIES order."""
    seen = {FAMILIES[f] for f in flags}
    return tuple(dict.fromkeys(f for f in FAMILIES.values() if f in seen))


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


def request_keys(client: Client, audio_or_head: bool) -> tuple[str, ...]:
    """The keys a request counts on: its client (address and program, Client.key); for
    audio and HEAD requests also its network (BehaviourTracker.observe)."""
    if not audio_or_head:
        return (client.key,)
    return (client.key, network_key(client.ip))


class BehaviourTracker:
    """Updates the keys of a request and judges them. One per worker (app[TRACKER]).

    Counts are added with the store's event weights (proxy/state.py), so the thresholds below
    are compared against `threshold * weight`: a decayed count, without decaying anything."""

    def __init__(self, store: ClientStore, listings: Listings | None = None) -> None:
        self.store = store
        self.listings = listings if listings is not None else Listings()

    def observe(self, facts: RequestFacts, ip_row: int, judge: bool = True) -> Behaviour:
        """Count this request on its keys and, when `judge`, judge them. ip_row: the
        address's row, just seen (store.row). Pages and other plain requests touch only that
        row: the network key carries only what audio and HEAD requests do."""
        if not facts.is_audio and facts.method != "HEAD":
            return self.observe_plain(ip_row, facts.path, facts.is_page, judge)
        s = self.store
        v = s.values
        ws, wl = s.w_short, s.w_long
        b = ip_row * FIELDS
        listed = bool(v[b + WALK_DOC]) and self._walk(b, facts.path)
        now = v[b + LAST]
        net_row = s.row(network_key(facts.ip), now)
        # context is the requesting address's own: a page or feed it loaded itself
        had_page = v[b + PAGES] >= 0.5 * wl
        head = facts.method == "HEAD"
        audio_get = facts.is_audio and facts.method == "GET"
        in_page = facts.same_site_referer and had_page
        if audio_get:
            track_bit = 1 << (zlib.crc32(facts.path.encode()) & 63)
            if not (in_page or listed or s.masks[2 * ip_row + TRACKS] & track_bit):
                v[b + STARTS] += ws  # a new track, outside any page or listing it read
        else:
            track_bit = 0
        # the addresses of the network that took audio out of context (rotating)
        if not (in_page or listed):
            s.masks[2 * net_row + ADDRESSES] |= 1 << (zlib.crc32(facts.ip.encode()) & 63)
        for r in (ip_row, net_row):
            b = r * FIELDS
            v[b + REQ] += ws
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
        if audio_get and in_page:
            # in context, as a listener's player asks: judged on this client's own doings;
            # what others on its network did is theirs
            return self.judge(ip_row, ip_row, facts.open_streams)
        return self.judge(ip_row, net_row, facts.open_streams)

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

    def _walk(self, b: int, path: str) -> bool:
        """A client that fetched a sitemap or feed: is it taking the listed URLs in order?
        Counts the requests that reach further down the list than any before (a reader
        browsing at random sets a new furthest point about ln(n) times in n requests).
        True when the listing holds `path`."""
        v = self.store.values
        index = self.listings.index(int(v[b + WALK_DOC]), path)
        if index is None:
            return False
        if index > v[b + WALK_POS]:
            v[b + WALK_POS] = index
            v[b + WALK_STEPS] += 1.0
        return True

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
                and v[b + STARTS] < TRACK_RUN * self.store.w_short
                and v[b + WALK_STEPS] < WALK_STEPS_MIN):
            return NONE
        return self.judge(ip_row, ip_row, 0)

    def judge(self, ip_row: int, net_row: int, open_streams: int) -> Behaviour:
        s = self.store
        v, masks, wl, ws = s.values, s.masks, s.w_long, s.w_short
        ib, nb = ip_row * FIELDS, net_row * FIELDS
        if (open_streams < PARALLEL_AUDIO and v[ib + REQ] < FAST_REQUESTS * ws
                and masks[2 * ip_row + TRACKS].bit_count() < _MANY_TRACKS_BITS
                and v[ib + STARTS] < TRACK_RUN * ws
                and v[ib + AUDIO_BYTES] < FASTER_THAN_PLAYBACK_BYTES * wl
                and v[ib + WALK_STEPS] < WALK_STEPS_MIN
                and v[ib + NO_CONTEXT] + v[nb + NO_CONTEXT] < wl
                and v[ib + WHOLE] + v[nb + WHOLE] < wl
                and max(v[ib + HEADS], v[nb + HEADS]) < HEAD_SWEEP * wl
                and max(v[ib + NOT_FOUND], v[nb + NOT_FOUND]) < NOT_FOUND_RUN * wl):
            return NONE  # the common case, a listener: no flag can be raised
        flags: list[str] = []
        if v[ib + REQ] >= FAST_REQUESTS * ws:
            flags.append("fast")
        if _linear_count(masks[2 * ip_row + TRACKS]) >= MANY_TRACKS:
            flags.append("many-tracks")
        if v[ib + STARTS] >= TRACK_RUN * ws:
            flags.append("track-run")
        if v[ib + AUDIO_BYTES] >= FASTER_THAN_PLAYBACK_BYTES * wl:
            flags.append("faster-than-playback")
        if open_streams >= PARALLEL_AUDIO:
            flags.append("parallel-audio")
        if v[ib + WALK_STEPS] >= WALK_STEPS_MIN:
            flags.append("walking-listing")
        # flags no listener produces, on either key
        if max(v[ib + NO_CONTEXT], v[nb + NO_CONTEXT]) >= NO_CONTEXT_AUDIO * wl:
            flags.append("no-context")
        if max(v[ib + WHOLE], v[nb + WHOLE]) >= WHOLE_FILE_AUDIO * wl:
            flags.append("whole-file")
        if max(v[ib + HEADS], v[nb + HEADS]) >= HEAD_SWEEP * wl:
            flags.append("head-sweep")
        if max(v[ib + NOT_FOUND], v[nb + NOT_FOUND]) >= NOT_FOUND_RUN * wl:
            flags.append("not-found")
        if ((v[nb + NO_CONTEXT] >= wl or v[nb + WHOLE] >= wl)
                and _linear_count(masks[2 * net_row + ADDRESSES]) >= ROTATING_ADDRESSES):
            flags.append("rotating")
        if not flags:
            return NONE
        named = tuple(flags)
        return Behaviour(score(named), named)
