"""What the proxy remembers about each client, in one store with a hard cap.

A crawler rotating through 100,000 source addresses must not grow the proxy without bound, so
the store holds at most `capacity` keys and, when full, evicts the least recently seen of 8
sampled keys. Each key is one row of a preallocated flat array of doubles (decaying counters,
the time the key was last seen, and the robots.txt and trap facts) plus two 64-bit masks used
as linear counters: no per-client objects, no per-request lists. docs/benchmarks.md has the
bytes per client.

Decaying counters without decaying them: an event at time t adds the weight 2^((t - E) / h)
(E the store's epoch, h the half-life), so a counter holds the sum of its events scaled to the
epoch, and its value now is that sum divided by 2^((now - E) / h). A request computes the two
weights once (`advance`) and every update is one addition, whatever the number of rows it
touches; nothing is multiplied on access. Every hour the epoch moves forward and every stored
sum is rescaled at once (numpy, about a millisecond per 100k rows), long before 2^x overflows.

Keys: "i:ADDRESS" (a client address), "n:NETWORK" (its /24 or /64), "f:FINGERPRINT".
"""

from __future__ import annotations

import math
import random
from array import array

import numpy as np

# row layout: counters scaled to the epoch, then the time last seen and the robots.txt facts
REQ, AUDIO, WHOLE, NO_CONTEXT, PAGES, HEADS, NOT_FOUND, AUDIO_BYTES = range(8)
LAST = 8  # monotonic time the key was last seen (for eviction and the distinct-count window)
ROBOTS_READ, ROBOTS_VIOLATION = 9, 10  # wall time of the first robots.txt read; 0/1/2 below
TRAPPED = 11  # wall time of the first trap-link hit, 0 if none
# the sitemap or feed the address fetched last (Listings id, 0 if none), the furthest entry of
# it the address has requested since, and how many requests set a new furthest entry
WALK_DOC, WALK_POS, WALK_STEPS = 12, 13, 14
FIELDS = 15
LONG_FIELDS = (AUDIO, WHOLE, NO_CONTEXT, PAGES, HEADS, NOT_FOUND, AUDIO_BYTES)
_ZERO_ROW = array("d", bytes(8 * FIELDS))
TRACKS, ADDRESSES = 0, 1  # masks
SHORT_HALF_LIFE = 60.0  # request rate
LONG_HALF_LIFE = 600.0  # everything else
REBASE_EVERY = 3600.0  # 2^(3600/60) = 2^60: far from overflowing a double

# robots.txt compliance states, as rules name them
UNSEEN = "unseen"
COMPLIANT = "compliant"
VIOLATED_AFTER_READING = "violated-after-reading"
VIOLATED_WITHOUT_READING = "violated-without-reading"
ROBOTS_STATES = (UNSEEN, COMPLIANT, VIOLATED_AFTER_READING, VIOLATED_WITHOUT_READING)
_VIOLATIONS = {1.0: VIOLATED_AFTER_READING, 2.0: VIOLATED_WITHOUT_READING}


class ClientStore:
    def __init__(self, capacity: int, seed: int | None = None) -> None:
        self.capacity = capacity
        self.values = array("d", bytes(8 * FIELDS * capacity))
        self.masks = array("Q", bytes(8 * 2 * capacity))
        self.rows: dict[str, int] = {}
        self.keys: list[str | None] = [None] * capacity
        self.evictions = 0
        self._next = 0
        self._random = random.Random(seed)
        self._epoch: float | None = None
        self._now = math.nan
        self.w_short = self.w_long = 1.0  # this moment's event weights (see advance)

    def __len__(self) -> int:
        return len(self.rows)

    def advance(self, now: float) -> None:
        """Set the weights of events at `now` (monotonic); cheap when `now` has not moved."""
        if now == self._now:
            return
        if self._epoch is None:
            self._epoch = now
        elif now - self._epoch > REBASE_EVERY:
            self._rebase(now)
        self._now = now
        x = now - self._epoch
        self.w_short = math.exp2(x / SHORT_HALF_LIFE)
        self.w_long = math.exp2(x / LONG_HALF_LIFE)

    def _rebase(self, now: float) -> None:
        assert self._epoch is not None
        shift = now - self._epoch
        table = np.frombuffer(self.values, dtype=np.float64).reshape(self.capacity, FIELDS)
        table[:, REQ] *= math.exp2(-shift / SHORT_HALF_LIFE)
        table[:, LONG_FIELDS] *= math.exp2(-shift / LONG_HALF_LIFE)
        self._epoch = now

    def row(self, key: str, now: float) -> int:
        """The key's row, seen at `now` (allocated, or evicting another, when new). Also sets
        the event weights for `now`."""
        self.advance(now)
        r = self.rows.get(key)
        v = self.values
        if r is None:
            r = self._allocate()
            self.rows[key] = r
            self.keys[r] = key
            base = r * FIELDS
            v[base : base + FIELDS] = _ZERO_ROW
            v[base + LAST] = now
            self.masks[2 * r] = self.masks[2 * r + 1] = 0
            return r
        base = r * FIELDS
        if now - v[base + LAST] > LONG_HALF_LIFE:  # the distinct counters start a new window
            self.masks[2 * r] = self.masks[2 * r + 1] = 0
        v[base + LAST] = now
        return r

    def add(self, row: int, field: int, amount: float = 1.0) -> None:
        """Count `amount` (at the moment of the last advance) on one counter."""
        self.values[row * FIELDS + field] += amount * (
            self.w_short if field == REQ else self.w_long)

    def value(self, row: int, field: int) -> float:
        """A counter's decayed value at the moment of the last advance."""
        return self.values[row * FIELDS + field] / (
            self.w_short if field == REQ else self.w_long)

    def _allocate(self) -> int:
        if self._next < self.capacity:
            self._next += 1
            return self._next - 1
        v = self.values
        victim = min(
            (self._random.randrange(self.capacity) for _ in range(8)),
            key=lambda r: v[r * FIELDS + LAST],
        )
        old = self.keys[victim]
        if old is not None:
            del self.rows[old]
        self.evictions += 1
        return victim

    def robots_state(self, row: int) -> str:
        base = row * FIELDS
        violation = self.values[base + ROBOTS_VIOLATION]
        if violation:
            return _VIOLATIONS[violation]
        return COMPLIANT if self.values[base + ROBOTS_READ] else UNSEEN

    def robots_read(self, row: int, wall_time: float) -> None:
        if not self.values[row * FIELDS + ROBOTS_READ]:
            self.values[row * FIELDS + ROBOTS_READ] = wall_time

    def trap_hit(self, row: int, wall_time: float) -> None:
        if not self.values[row * FIELDS + TRAPPED]:
            self.values[row * FIELDS + TRAPPED] = wall_time

    def trapped(self, row: int) -> bool:
        return self.values[row * FIELDS + TRAPPED] > 0

    def robots_violated(self, row: int) -> str:
        """Record a violation (the first one sticks) and return the state."""
        base = row * FIELDS
        if not self.values[base + ROBOTS_VIOLATION]:
            self.values[base + ROBOTS_VIOLATION] = 1.0 if self.values[base + ROBOTS_READ] else 2.0
        return self.robots_state(row)
