"""What the proxy remembers about each client, in one store with a hard cap.

A crawler rotating through 100,000 source addresses must not grow the proxy without bound, so
the store holds at most `capacity` keys and, when full, evicts the least recently seen of 8
sampled keys. Each key is one row of a preallocated flat array of doubles (decayed counters
sharing one timestamp, and the robots.txt facts) plus two 64-bit masks used as linear counters:
no per-client objects, no per-request lists. docs/benchmarks.md has the bytes per client.

Keys: "i:ADDRESS" (a client address), "n:NETWORK" (its /24 or /64), "f:FINGERPRINT".
"""

from __future__ import annotations

import math
import random
from array import array

# row layout: decayed behaviour counters, then the robots.txt facts (not decayed)
LAST, REQ, AUDIO, WHOLE, NO_CONTEXT, PAGES, HEADS, NOT_FOUND, AUDIO_BYTES = range(9)
ROBOTS_READ, ROBOTS_VIOLATION = 9, 10  # wall time of the first robots.txt read; 0/1/2 below
TRAPPED = 11  # wall time of the first trap-link hit, 0 if none
FIELDS = 12
_DECAYED_LONG = (AUDIO, WHOLE, NO_CONTEXT, PAGES, HEADS, NOT_FOUND, AUDIO_BYTES)
_ZERO_ROW = array("d", bytes(8 * FIELDS))
_LN2 = math.log(2)
TRACKS, ADDRESSES = 0, 1  # masks
SHORT_HALF_LIFE = 60.0  # request rate
LONG_HALF_LIFE = 600.0  # everything else

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

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, key: str, now: float) -> int:
        """The key's row, decayed to `now` (allocated, or evicting another, when new)."""
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
        elapsed = now - v[base + LAST]
        if elapsed > 0:
            short = math.exp(-elapsed * _LN2 / SHORT_HALF_LIFE)
            long_ = math.exp(-elapsed * _LN2 / LONG_HALF_LIFE)
            v[base + REQ] *= short
            for field in _DECAYED_LONG:
                v[base + field] *= long_
            if elapsed > LONG_HALF_LIFE:  # the distinct counters start a new window
                self.masks[2 * r] = self.masks[2 * r + 1] = 0
            v[base + LAST] = now
        return r

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
