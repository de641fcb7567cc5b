"""What the proxy remembers about each client, in one store with a hard cap, shared by workers.

A crawler rotating through 100,000 source addresses must not grow the proxy without bound, so
the store holds at most `capacity` keys and, when full, evicts the least recently seen of 8
sampled keys. Everything lives in one flat buffer: per key a row of doubles (decaying
counters, the time the key was last seen, the robots.txt, trap and sitemap-walk facts), two
64-bit masks used as linear counters, the key's 64-bit hash, and an open-addressing index
(linear probing) from hash to row. No per-client Python objects: docs/benchmarks.md has the
bytes per client.

One process: the buffer is a bytearray. `--workers N`: the supervisor creates the buffer as a
file in shared memory (`ClientStore.create`) and every worker maps it (`ClientStore.attach`),
so a crawler whose connections land on different workers is one client, not N slower ones.
Workers read and count without locking; adding a key (and evicting one) takes an flock on the
file, which the kernel releases should a worker die holding it. The races left are bounded
and never inflate a count: two workers adding to one counter at the same instant may lose
one of the two additions, and a reader probing the index while a key is inserted or evicted
may miss its key, take the lock and look again.

Decaying counters without decaying them on every access: time is cut into frames of FRAME
seconds; an event at time t adds the weight 2^((t - F) / h) (F the start of the current frame,
h the counter's half-life), so within a frame every update is one addition. A row remembers
its frame; the first access in a later frame rescales its counters once by 2^(-(F - F') / h).
A weight never exceeds 2^(FRAME / h) = 2, so a worker that computed its weights an instant
before another rescaled the row adds at most one event counted double, never a runaway figure.

Keys: Client.key (an address and its program), "n:NETWORK" (an address's /24 or /64). Their
hashes are Python's string hashes, so workers share PYTHONHASHSEED (set by the supervisor;
`attach` checks it) and the index stays keyed by a secret an attacker cannot aim at.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import random
from array import array
from pathlib import Path

# row layout: counters scaled to the row's frame, then the time last seen, the robots.txt facts
REQ, AUDIO, WHOLE, NO_CONTEXT, PAGES, HEADS, NOT_FOUND, AUDIO_BYTES = range(8)
LAST = 8  # monotonic time the key was last seen (for eviction and the distinct-count window)
ROBOTS_READ, ROBOTS_VIOLATION = 9, 10  # wall time of the first robots.txt read; 0/1/2 below
TRAPPED = 11  # wall time of the first trap-link hit, 0 if none
# the sitemap or feed the address fetched last (Listings id, 0 if none), the furthest entry of
# it the address has requested since, and how many requests set a new furthest entry
WALK_DOC, WALK_POS, WALK_STEPS = 12, 13, 14
FRAME_NO = 15  # the frame the row's counters are scaled to
# a number from the store-wide counter, new whenever the row changes hands or a robots.txt or
# trap fact is set: a verdict reused for a client (classify.VerdictCache) holds while it stays
VERSION = 16
# new tracks started outside any page or listing the client read (short half-life: a
# player's lane check, BehaviourTracker's track-run)
STARTS = 17
FIELDS = 18
LONG_FIELDS = (AUDIO, WHOLE, NO_CONTEXT, PAGES, HEADS, NOT_FOUND, AUDIO_BYTES)
TRACKS, ADDRESSES = 0, 1  # masks
SHORT_HALF_LIFE = 60.0  # request rate
LONG_HALF_LIFE = 600.0  # everything else
FRAME = 60.0  # seconds; weights stay within [1, 2)

# robots.txt compliance states, as rules name them
UNSEEN = "unseen"
COMPLIANT = "compliant"
VIOLATED_AFTER_READING = "violated-after-reading"
VIOLATED_WITHOUT_READING = "violated-without-reading"
ROBOTS_STATES = (UNSEEN, COMPLIANT, VIOLATED_AFTER_READING, VIOLATED_WITHOUT_READING)
_VIOLATIONS = {1.0: VIOLATED_AFTER_READING, 2.0: VIOLATED_WITHOUT_READING}

# the buffer: a header of 8 unsigned 64-bit words, then values, masks, owners and the index
_MAGIC = 0x5353_5354_0003  # "SSST", layout 3
_H_MAGIC, _H_CAPACITY, _H_SLOTS, _H_USED, _H_EVICTIONS, _H_HASHCHECK, _H_VERSION = range(7)
_HEADER = 8
_M64 = (1 << 64) - 1
_PROBE_LIMIT = 64  # a probe this long means the index is being rewritten: take the lock
_ZERO_ROW = array("d", bytes(8 * FIELDS))


class StoreError(Exception):
    """A shared client store that cannot be used (wrong file, other hash seed)."""


def _key_hash(key: str) -> int:
    return hash(key) & _M64 or 1  # 0 marks a free owner slot


def _hash_check() -> int:
    return _key_hash("sonicshield client store")


def _layout(capacity: int) -> tuple[int, int]:
    """(index slots, buffer bytes): a power of two at least twice the capacity."""
    slots = 1 << max(4, (2 * capacity - 1).bit_length())
    words = _HEADER + capacity * FIELDS + capacity * 2 + capacity + slots
    return slots, words * 8


def rescale(v: memoryview[float] | array[float], base: int, frame: float) -> None:
    """Rescale the row at `base` of `v` from its own frame to `frame`."""
    gone = (frame - v[base + FRAME_NO]) * FRAME
    short = math.exp2(-gone / SHORT_HALF_LIFE)
    v[base + REQ] *= short
    v[base + STARTS] *= short
    long = math.exp2(-gone / LONG_HALF_LIFE)
    for f in LONG_FIELDS:
        v[base + f] *= long
    v[base + FRAME_NO] = frame


class ClientStore:
    def __init__(self, capacity: int, seed: int | None = None) -> None:
        """A store for this process alone."""
        slots, size = _layout(capacity)
        buffer = bytearray(size)
        self._bind(memoryview(buffer), None, seed)
        self._header[_H_MAGIC], self._header[_H_CAPACITY] = _MAGIC, capacity
        self._header[_H_SLOTS] = slots
        self._setup()

    @classmethod
    def create(cls, path: Path, capacity: int) -> None:
        """Make the shared store's file (the supervisor, before starting workers)."""
        slots, size = _layout(capacity)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            with mmap.mmap(fd, _HEADER * 8) as head:
                header = array("Q", [_MAGIC, capacity, slots, 0, 0, 0, 0, 0])
                head[:] = header.tobytes()
        finally:
            os.close(fd)

    @classmethod
    def attach(cls, path: Path, seed: int | None = None) -> ClientStore:
        """Map the shared store a supervisor created (each worker)."""
        store = cls.__new__(cls)
        fd = os.open(path, os.O_RDWR)
        size = os.fstat(fd).st_size
        view = memoryview(mmap.mmap(fd, size))
        store._bind(view, fd, seed)
        header = store._header
        if header[_H_MAGIC] != _MAGIC or _layout(header[_H_CAPACITY])[1] != size:
            raise StoreError(f"{path} is not a SonicShield client store")
        store._lock()
        try:  # the first worker to attach writes its hash of a known text; the rest compare
            if not header[_H_HASHCHECK]:
                header[_H_HASHCHECK] = _hash_check()
            same = header[_H_HASHCHECK] == _hash_check()
        finally:
            store._unlock()
        if not same:
            raise StoreError(f"{path}: this process hashes keys differently from the workers "
                             "already using the store (PYTHONHASHSEED must be the same in all)")
        store._setup()
        return store

    def _bind(self, view: memoryview, fd: int | None, seed: int | None) -> None:
        self._view = view
        self._fd = fd  # the shared file, locked while a key is added; None: not shared
        self._header: memoryview[int] = view[: _HEADER * 8].cast("Q")
        self._random = random.Random(seed)
        self._frame = -1.0
        self._now = math.nan
        self.w_short = self.w_long = 1.0  # this moment's event weights (see advance)

    def _setup(self) -> None:
        capacity = self.capacity = int(self._header[_H_CAPACITY])
        slots = int(self._header[_H_SLOTS])
        self._mask = slots - 1
        view, start = self._view, _HEADER * 8
        rows_end = start + capacity * FIELDS * 8
        masks_end = rows_end + capacity * 16
        owners_end = masks_end + capacity * 8
        self.values: memoryview[float] = view[start:rows_end].cast("d")
        self.masks: memoryview[int] = view[rows_end:masks_end].cast("Q")
        self._owners: memoryview[int] = view[masks_end:owners_end].cast("Q")
        self._index: memoryview[int] = view[owners_end : owners_end + slots * 8].cast("Q")

    @property
    def evictions(self) -> int:
        return int(self._header[_H_EVICTIONS])

    def __len__(self) -> int:
        return int(self._header[_H_USED])

    def advance(self, now: float) -> None:
        """Set the weights of events at `now` (monotonic); cheap when `now` has not moved."""
        if now == self._now:
            return
        self._now = now
        frame = now // FRAME
        self._frame = frame
        x = now - frame * FRAME
        self.w_short = math.exp2(x / SHORT_HALF_LIFE)
        self.w_long = math.exp2(x / LONG_HALF_LIFE)

    def row(self, key: str, now: float) -> int:
        """The key's row, seen at `now` (allocated, or evicting another, when new). Also sets
        the event weights for `now`."""
        self.advance(now)
        h = _key_hash(key)
        r = self.find_hash(h)
        if r < 0:
            return self._insert(h, now)
        v = self.values
        base = r * FIELDS
        if v[base + FRAME_NO] != self._frame:
            rescale(v, base, self._frame)
        if now - v[base + LAST] > LONG_HALF_LIFE:  # the distinct counters start a new window
            self.masks[2 * r] = self.masks[2 * r + 1] = 0
        v[base + LAST] = now
        return r

    def find(self, key: str) -> int:
        """The key's row, or -1; counts nothing."""
        return self.find_hash(_key_hash(key))

    def find_hash(self, h: int) -> int:
        index, owners, mask = self._index, self._owners, self._mask
        i = h & mask
        for _ in range(_PROBE_LIMIT):
            r = index[i]
            if not r:
                return -1
            if owners[r - 1] == h:
                return r - 1
            i = (i + 1) & mask
        return -1

    @property
    def frame(self) -> float:
        """The frame of the last advance."""
        return self._frame

    def _insert(self, h: int, now: float) -> int:
        self._lock()
        try:
            r = self.find_hash(h)  # another worker may have added it meanwhile
            if r >= 0:
                self.values[r * FIELDS + LAST] = now
                return r
            header = self._header
            if header[_H_USED] < self.capacity:
                r = int(header[_H_USED])
                header[_H_USED] = r + 1
            else:
                r = self._victim()
                self._unindex(r)
                header[_H_EVICTIONS] += 1
            base = r * FIELDS
            v = self.values
            v[base : base + FIELDS] = _ZERO_ROW
            v[base + LAST] = now
            v[base + FRAME_NO] = self._frame
            self.masks[2 * r] = self.masks[2 * r + 1] = 0
            self._owners[r] = h
            self.changed(r)
            index, mask = self._index, self._mask
            i = h & mask
            while index[i]:
                i = (i + 1) & mask
            index[i] = r + 1
            return r
        finally:
            self._unlock()

    def _victim(self) -> int:
        v = self.values
        return min((self._random.randrange(self.capacity) for _ in range(8)),
                   key=lambda r: v[r * FIELDS + LAST])

    def _unindex(self, row: int) -> None:
        """Take a row's key out of the index (backward-shift deletion: no tombstones)."""
        index, owners, mask = self._index, self._owners, self._mask
        i = owners[row] & mask
        while index[i] != row + 1:
            if not index[i]:
                return  # not indexed (a worker died half-way through an insert)
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            r = index[j]
            if not r:
                break
            home = owners[r - 1] & mask
            # the entry at j may fill the hole at i unless its home lies cyclically in (i, j]
            if (i < home <= j) if i <= j else (home > i or home <= j):
                continue
            index[i] = r
            i = j
        index[i] = 0

    def _lock(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def _unlock(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def add(self, row: int, field: int, amount: float = 1.0) -> None:
        """Count `amount` (at the moment of the last advance) on one counter."""
        self.values[row * FIELDS + field] += amount * (
            self.w_short if field == REQ else self.w_long)

    def value(self, row: int, field: int) -> float:
        """A counter's decayed value at the moment of the last advance."""
        return self.values[row * FIELDS + field] / (
            self.w_short if field == REQ else self.w_long)

    def changed(self, row: int) -> None:
        """Give the row a new VERSION (no lock: two workers racing may hand out one number
        twice, to two rows or to one; either way every row's version only grows)."""
        n = self._header[_H_VERSION] + 1
        self._header[_H_VERSION] = n
        self.values[row * FIELDS + VERSION] = n

    def robots_state(self, row: int) -> str:
        base = row * FIELDS
        violation = self.values[base + ROBOTS_VIOLATION]
        if violation:
            return _VIOLATIONS[violation]
        return COMPLIANT if self.values[base + ROBOTS_READ] else UNSEEN

    def robots_read(self, row: int, wall_time: float) -> None:
        if not self.values[row * FIELDS + ROBOTS_READ]:
            self.values[row * FIELDS + ROBOTS_READ] = wall_time
            self.changed(row)

    def trap_hit(self, row: int, wall_time: float) -> None:
        if not self.values[row * FIELDS + TRAPPED]:
            self.values[row * FIELDS + TRAPPED] = wall_time
            self.changed(row)

    def trapped(self, row: int) -> bool:
        return self.values[row * FIELDS + TRAPPED] > 0

    def robots_violated(self, row: int) -> str:
        """Record a violation (the first one sticks) and return the state."""
        base = row * FIELDS
        if not self.values[base + ROBOTS_VIOLATION]:
            self.values[base + ROBOTS_VIOLATION] = 1.0 if self.values[base + ROBOTS_READ] else 2.0
            self.changed(row)
        return self.robots_state(row)
