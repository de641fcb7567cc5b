"""What the proxy remembers about each client, in a store with a hard cap.

A crawler rotating through 100,000 source addresses must not grow the proxy without bound, so
the store holds at most `capacity` clients and evicts the least recently seen. Each entry is a
small __slots__ object; see docs/benchmarks.md for the measured bytes per client.
"""

from __future__ import annotations

from collections import OrderedDict

# robots.txt compliance states, as rules name them
UNSEEN = "unseen"
COMPLIANT = "compliant"
VIOLATED_AFTER_READING = "violated-after-reading"
VIOLATED_WITHOUT_READING = "violated-without-reading"
ROBOTS_STATES = (UNSEEN, COMPLIANT, VIOLATED_AFTER_READING, VIOLATED_WITHOUT_READING)


class ClientState:
    """One client's memory.

    robots_read_at: wall time of its first robots.txt fetch, 0.0 if never.
    robots_violation: the first violation, sticky: "" none, or one of the VIOLATED_* states.
    """

    __slots__ = ("robots_read_at", "robots_violation")

    def __init__(self) -> None:
        self.robots_read_at = 0.0
        self.robots_violation = ""

    @property
    def robots_state(self) -> str:
        if self.robots_violation:
            return self.robots_violation
        return COMPLIANT if self.robots_read_at else UNSEEN


class ClientStore:
    """Bounded LRU map from client key to ClientState."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.evictions = 0
        self._clients: OrderedDict[str, ClientState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def get(self, key: str) -> ClientState | None:
        return self._clients.get(key)

    def touch(self, key: str) -> ClientState:
        """The client's state, created if new; marks it most recently seen."""
        state = self._clients.get(key)
        if state is None:
            state = self._clients[key] = ClientState()
            if len(self._clients) > self.capacity:
                self._clients.popitem(last=False)
                self.evictions += 1
        else:
            self._clients.move_to_end(key)
        return state
