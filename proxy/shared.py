"""Client state shared by several SonicShield instances through Redis (optional).

Each instance keeps its own client store (proxy/state.py) and treats Redis as the common
truth. A request whose verdict reads client state first pulls its keys' rows from Redis into
the local rows (one round trip, a Lua script), is classified locally, and then pushes what it
changed (counts, track and address bits, the robots.txt and trap facts) back, before the
response goes out; what the response itself adds (a 404, the audio bytes sent, a robots.txt
read) follows when the exchange ends. So a crawler alternating between instances is counted
as one client, and classified as fast as it would be by one instance.

In Redis a key is a hash: counters decayed to the wall time `t` of its last update (each
update decays them first, with the store's half-lives), the linear-counter masks as four
32-bit words (reset like the store's after LONG_HALF_LIFE idle), and the first robots.txt
read, robots.txt violation and trap hit. Keys expire `ttl` seconds after their last update.

Redis down or slow (`timeout`): the request goes on with the local state alone, the gauge
sonicshield_shared_state_up drops to 0, one log line says why, and a background task pings
Redis every `retry` seconds until it answers (another log line, the gauge back to 1). Counts
made while Redis was away stay local.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .logs import log_event
from .metrics import Metrics
from .settings import SharedStateSettings
from .state import (
    ADDRESSES,
    FIELDS,
    FRAME_NO,
    LONG_HALF_LIFE,
    ROBOTS_READ,
    ROBOTS_VIOLATION,
    SHORT_HALF_LIFE,
    TRACKS,
    TRAPPED,
    ClientStore,
    rescale,
)

log = logging.getLogger("sonicshield")

_COUNTERS = 8  # REQ .. AUDIO_BYTES, the store's first fields (STARTS, the track-run
# count, stays with the instance: a player's lane is judged on what it asked of this one)
_FACTS = (ROBOTS_READ, ROBOTS_VIOLATION, TRAPPED)
_PER_KEY = _COUNTERS + 4 + len(_FACTS)  # the script's arguments (and answer) per key
_W32 = 0xFFFFFFFF

# KEYS: the rows' keys. ARGV: now (wall seconds), ttl (ms), the short and long half-lives,
# then per key: 8 counter additions, 4 mask words to OR in, and the robots.txt read time,
# violation (1 after reading, 2 without) and trap time to record unless already recorded.
# Answers per key the merged row in the same order, as strings (a Lua number would come back
# as an integer).
MERGE = """
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local short_h, long_h = tonumber(ARGV[3]), tonumber(ARGV[4])
local names = {'c0','c1','c2','c3','c4','c5','c6','c7','m0','m1','m2','m3','rr','rv','tr'}
local out = {}
for i, key in ipairs(KEYS) do
  local a = 4 + (i - 1) * 15
  local f = redis.call('HMGET', key, 't', unpack(names))
  local t = tonumber(f[1]) or now
  local age = now - t
  if age < 0 then age = 0 end
  local row, set = {}, {'t', string.format('%.17g', now)}
  for j = 1, 8 do
    local keep = 2 ^ (-age / (j == 1 and short_h or long_h))
    row[j] = (tonumber(f[j + 1]) or 0) * keep + tonumber(ARGV[a + j])
  end
  for j = 9, 12 do
    local m = 0
    if age <= long_h then m = tonumber(f[j + 1]) or 0 end
    row[j] = bit.bor(m, tonumber(ARGV[a + j]))
  end
  for j = 13, 15 do
    local old = tonumber(f[j + 1]) or 0
    if old ~= 0 then row[j] = old else row[j] = tonumber(ARGV[a + j]) end
  end
  local answer = {}
  for j = 1, 15 do
    answer[j] = string.format('%.17g', row[j])
    set[#set + 1] = names[j]
    set[#set + 1] = answer[j]
  end
  redis.call('HSET', key, unpack(set))
  redis.call('PEXPIRE', key, ttl)
  out[i] = answer
end
return out
"""


class Pulled:
    """The rows a request pulled, and what they held then (to push only what changed)."""

    __slots__ = ("before", "keys", "masks", "rows")

    def __init__(self, keys: Sequence[str], rows: Sequence[int], store: ClientStore) -> None:
        self.keys = tuple(keys)
        self.rows = tuple(rows)
        self.before: list[array[float]] = []
        self.masks: list[tuple[int, int]] = []
        self.remember(store)

    def remember(self, store: ClientStore) -> None:
        v, m = store.values, store.masks
        self.before = [array("d", v[r * FIELDS : (r + 1) * FIELDS]) for r in self.rows]
        self.masks = [(m[2 * r], m[2 * r + 1]) for r in self.rows]


class SharedState:
    def __init__(self, settings: SharedStateSettings, store: ClientStore,
                 metrics: Metrics) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.up = True
        # a pooled connection may have been closed by a Redis restart: one immediate retry on
        # a fresh connection, no more (the request is waiting)
        self._redis = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout, retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError])
        self._merge = self._redis.register_script(MERGE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconnect: asyncio.Task[None] | None = None
        metrics.shared_state_up.set(1)

    async def aclose(self) -> None:
        if self._reconnect is not None:
            self._reconnect.cancel()
        for task in list(self._tasks):
            with suppress(asyncio.CancelledError, Exception):
                await task
        await self._redis.aclose()

    async def pull(self, keys: Sequence[str], now: float) -> Pulled | None:
        """The keys' rows, merged with what Redis holds (None while Redis is away: the local
        rows stand alone). now: monotonic, as the store counts."""
        if not self.up:
            return None
        store = self.store
        rows = [store.row(k, now) for k in keys]
        try:
            answer = await self._call(keys, [0.0] * (_PER_KEY * len(keys)))
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)
            return None
        v, masks = store.values, store.masks
        ws, wl = store.w_short, store.w_long
        for r, fields in zip(rows, answer, strict=True):
            got = [float(x) for x in fields]
            b = r * FIELDS
            # counts: the larger of the two pictures (Redis holds this instance's pushes too;
            # the local row may hold counts made while Redis was away)
            v[b] = max(v[b], got[0] * ws)
            for j in range(1, _COUNTERS):
                v[b + j] = max(v[b + j], got[j] * wl)
            masks[2 * r + TRACKS] |= _word(got[8], got[9])
            masks[2 * r + ADDRESSES] |= _word(got[10], got[11])
            for j, field in enumerate(_FACTS):
                if got[12 + j] and not v[b + field]:
                    v[b + field] = got[12 + j]
                    store.changed(r)
        return Pulled(keys, rows, store)

    def push(self, pulled: Pulled) -> None:
        """Send what changed in the pulled rows since the pull (or the last push)."""
        if not self.up:
            return
        store = self.store
        v, masks = store.values, store.masks
        ws, wl = store.w_short, store.w_long
        args: list[float] = []
        changed = False
        for r, before, (tracks, addresses) in zip(pulled.rows, pulled.before, pulled.masks,
                                                   strict=True):
            b = r * FIELDS
            if v[b + FRAME_NO] != store.frame:  # a frame has passed: compare like with like
                rescale(v, b, store.frame)
            if before[FRAME_NO] != store.frame:
                rescale(before, 0, store.frame)
            deltas = [(v[b] - before[0]) / ws]
            deltas += [(v[b + j] - before[j]) / wl for j in range(1, _COUNTERS)]
            new_tracks = masks[2 * r + TRACKS] & ~tracks
            new_addresses = masks[2 * r + ADDRESSES] & ~addresses
            facts = [v[b + f] if v[b + f] and not before[f] else 0.0 for f in _FACTS]
            if new_tracks or new_addresses or any(facts) or any(d > 0 for d in deltas):
                changed = True
            args += [max(d, 0.0) for d in deltas]
            args += [*_halves(new_tracks), *_halves(new_addresses), *facts]
        if not changed:
            return
        pulled.remember(store)
        task = asyncio.get_running_loop().create_task(self._send(pulled.keys, args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, keys: Sequence[str], args: list[float]) -> None:
        try:
            await self._call(keys, args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)

    async def _call(self, keys: Sequence[str], args: list[float]) -> Any:
        s = self.settings
        return await self._merge(
            keys=[s.key_prefix + k for k in keys],
            args=[repr(time.time()), int(s.ttl * 1000), SHORT_HALF_LIFE, LONG_HALF_LIFE, *args])

    def _down(self, exc: BaseException) -> None:
        self.metrics.shared_state_errors.inc()
        if not self.up:
            return
        self.up = False
        self.metrics.shared_state_up.set(0)
        log_event(log, logging.WARNING, "shared-state-down", error=str(exc) or type(exc).__name__,
                  retry_s=self.settings.retry, note="classifying with this instance's own "
                  "client state until Redis answers again")
        self._reconnect = asyncio.get_running_loop().create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(self.settings.retry)
            try:
                await self._redis.ping()
            except (RedisError, OSError, TimeoutError):
                continue
            self.up = True
            self.metrics.shared_state_up.set(1)
            log_event(log, logging.INFO, "shared-state-up")
            return


def _word(lo: float, hi: float) -> int:
    return (int(hi) & _W32) << 32 | (int(lo) & _W32)


def _halves(mask: int) -> tuple[float, float]:
    """A 64-bit mask as the two signed 32-bit words Redis's Lua bit library works in."""
    lo, hi = mask & _W32, mask >> 32 & _W32
    return float(lo - (1 << 32) if lo >> 31 else lo), float(hi - (1 << 32) if hi >> 31 else hi)
