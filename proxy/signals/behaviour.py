"""Behaviour: how a client has been acting, as a score 0..1 and named flags.

Three keys per request: the source address; its /24 (IPv4) or /64 (IPv6) network; and a
fingerprint of the User-Agent and the headers a client stack chooses (Accept, Accept-Language,
Accept-Encoding, sec-ch-ua), which ties a crawler rotating its source address together.

Volume flags (fast, many-tracks, faster-than-playback, parallel-audio) are judged on the
address alone: a network or a fingerprint is shared by many real listeners (one office NAT,
one popular browser version), and their sum is not a crawler. The network and fingerprint
keys carry only the flags no listener produces: audio without the page that embeds it, whole
files without a Range from outside the store's own pages, HEAD sweeps, 404 runs, and, for the
fingerprint, one stack seen from many addresses doing those things.

The counters live in proxy/state.py's capped store (decayed, one row per key).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import zlib
from typing import NamedTuple

from ..state import (
    ADDRESSES,
    AUDIO,
    AUDIO_BYTES,
    FIELDS,
    HEADS,
    NO_CONTEXT,
    NOT_FOUND,
    PAGES,
    REQ,
    TRACKS,
    WHOLE,
    ClientStore,
)

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


class BehaviourTracker:
    """Updates the three keys of a request and judges them."""

    def __init__(self, store: ClientStore) -> None:
        self.store = store

    def observe(self, facts: RequestFacts, ip_row: int, now: float) -> Behaviour:
        """Count this request on its keys and judge them. ip_row: the address's row, already
        decayed to `now`. Pages and other plain requests touch only that row: the network and
        fingerprint keys carry only what audio and HEAD requests do."""
        s = self.store
        v = s.values
        if not facts.is_audio and facts.method != "HEAD":
            b = ip_row * FIELDS
            v[b + REQ] += 1.0
            if facts.is_page:
                v[b + PAGES] += 1.0
            return self.judge_address(ip_row)
        rows = (ip_row, s.row(network_key(facts.ip), now), s.row(facts.fingerprint, now))
        # context is the requesting address's own: a page or feed it loaded itself (another
        # address with the same fingerprint loading one proves nothing)
        had_page = v[ip_row * FIELDS + PAGES] >= 0.5
        address_bit = 1 << (zlib.crc32(facts.ip.encode()) & 63)
        track_bit = 1 << (zlib.crc32(facts.path.encode()) & 63) if facts.is_audio else 0
        for r in rows:
            b = r * FIELDS
            v[b + REQ] += 1.0
            s.masks[2 * r + ADDRESSES] |= address_bit
            if facts.method == "HEAD":
                v[b + HEADS] += 1.0
            if facts.is_page:
                v[b + PAGES] += 1.0
            if facts.is_audio and facts.method == "GET":
                v[b + AUDIO] += 1.0
                s.masks[2 * r + TRACKS] |= track_bit
                if not facts.same_site_referer:
                    # a download button on the store's own page is a whole-file GET too
                    if not facts.has_range:
                        v[b + WHOLE] += 1.0
                    if not had_page:
                        v[b + NO_CONTEXT] += 1.0
        return self.judge(rows, facts.open_streams)

    def finish(self, ip: str, status: int, audio_bytes: int, now: float) -> None:
        """After the response: 404s and audio bytes, counted on the address key."""
        s = self.store
        r = s.row("i:" + ip, now)
        b = r * FIELDS
        if status == 404:
            s.values[b + NOT_FOUND] += 1.0
        s.values[b + AUDIO_BYTES] += audio_bytes

    def judge_address(self, ip_row: int) -> Behaviour:
        """For a plain request: what the address alone shows (its own earlier audio counts)."""
        v = self.store.values
        b = ip_row * FIELDS
        if (v[b + REQ] < FAST_REQUESTS and v[b + NO_CONTEXT] < NO_CONTEXT_AUDIO
                and v[b + WHOLE] < WHOLE_FILE_AUDIO and v[b + HEADS] < HEAD_SWEEP
                and v[b + NOT_FOUND] < NOT_FOUND_RUN
                and v[b + AUDIO_BYTES] < FASTER_THAN_PLAYBACK_BYTES):
            return NONE
        return self.judge((ip_row, ip_row, ip_row), 0)

    def judge(self, rows: tuple[int, int, int], open_streams: int) -> Behaviour:
        v, masks = self.store.values, self.store.masks
        ip_row, _, fp_row = rows
        flags: list[str] = []
        ib = ip_row * FIELDS
        if v[ib + REQ] >= FAST_REQUESTS:
            flags.append("fast")
        if _linear_count(masks[2 * ip_row + TRACKS]) >= MANY_TRACKS:
            flags.append("many-tracks")
        if v[ib + AUDIO_BYTES] >= FASTER_THAN_PLAYBACK_BYTES:
            flags.append("faster-than-playback")
        if open_streams >= PARALLEL_AUDIO:
            flags.append("parallel-audio")
        nb, fb = rows[1] * FIELDS, fp_row * FIELDS
        # flags no listener produces, on every key
        if max(v[ib + NO_CONTEXT], v[nb + NO_CONTEXT], v[fb + NO_CONTEXT]) >= NO_CONTEXT_AUDIO:
            flags.append("no-context")
        if max(v[ib + WHOLE], v[nb + WHOLE], v[fb + WHOLE]) >= WHOLE_FILE_AUDIO:
            flags.append("whole-file")
        if max(v[ib + HEADS], v[nb + HEADS], v[fb + HEADS]) >= HEAD_SWEEP:
            flags.append("head-sweep")
        if max(v[ib + NOT_FOUND], v[nb + NOT_FOUND], v[fb + NOT_FOUND]) >= NOT_FOUND_RUN:
            flags.append("not-found")
        if ((v[fb + NO_CONTEXT] >= 1.0 or v[fb + WHOLE] >= 1.0)
                and _linear_count(masks[2 * fp_row + ADDRESSES]) >= ROTATING_ADDRESSES):
            flags.append("rotating")
        if not flags:
            return NONE
        keep = 1.0
        for name in flags:
            keep *= 1.0 - WEIGHTS[name]
        return Behaviour(round(1.0 - keep, 3), tuple(flags))
