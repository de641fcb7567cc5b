"""Classification: request facts -> frozen Signals.

Cheap signals (content kind, user-agent class) are always computed; costly ones only when a
rule that could decide this request reads them (RuleSet.bucket: the rules left once the
content kind and the UA class are known). A client's repeat requests whose rules read only
facts of the client take their verdict from VerdictCache and are recorded after the response.
"""

from __future__ import annotations

from collections.abc import Mapping

from .exchange import ContentKind, Exchange, Signals, Verdict
from .robots import CanonicalRobots
from .rules import RuleSet
from .signals.behaviour import (
    NONE,
    Behaviour,
    BehaviourTracker,
    RequestFacts,
)
from .signals.headers import header_problems
from .signals.network import UNKNOWN as UNKNOWN_NETWORK
from .signals.network import AsnDatabase
from .signals.verify import CrawlerVerifier
from .state import FIELDS, VERSION, ClientStore


def classify(
    headers: Mapping[str, str], ex: Exchange, ruleset: RuleSet, robots: CanonicalRobots,
    tracker: BehaviourTracker, open_streams: int, now: float, asn_db: AsnDatabase,
    verifier: CrawlerVerifier | None, needs: frozenset[str] | None = None,
) -> Signals:
    """open_streams: responses this client address has open right now; now: monotonic time;
    needs: the costly signals to compute (default: those this request's candidate rules
    read, RuleSet.bucket). Facts that later requests may be judged on (robots.txt
    violations, behaviour counters) are recorded whenever some rule reads them."""
    ua_text = headers.get("User-Agent", "")
    info = ruleset.ua.classify(ua_text)
    content = ruleset.content_kind(ex.path)
    if needs is None:
        needs = ruleset.bucket(content, info.ua_class).needs
    clients = tracker.store
    # the address's row, for the robots.txt state and the behaviour counters
    ip_row = (clients.row(ex.client.key, now)
              if not ruleset.needs.isdisjoint(STATEFUL) else -1)
    robots_state, acting = _record(headers, ex, ua_text, info.agent, content, ruleset, robots,
                                   tracker, ip_row, open_streams, "behaviour" in needs)
    problems: tuple[str, ...] = ()
    if "headers" in needs:
        problems = header_problems(info.ua_class, ua_text, headers, ex.client.scheme,
                                   ex.client.host)
    network = asn_db.lookup(ex.client.ip) if "network" in needs else UNKNOWN_NETWORK
    verified = ""
    if "verified" in needs and verifier is not None and info.agent:
        verified = verifier.status(ex.client.ip, info.agent, now)
    return Signals(
        content=content,
        ua=ua_text,
        ua_class=info.ua_class,
        agent=info.agent,
        operator=info.operator,
        purpose=info.purpose,
        robots=robots_state,
        headers=problems,
        behaviour_score=acting.score,
        behaviour_flags=acting.flags,
        asn=network.asn,
        org=network.org,
        datacenter=network.asn in ruleset.datacenter_asns,
        verified=verified,
        trapped="trapped" in ruleset.needs and clients.trapped(ip_row),
    )


def record(
    headers: Mapping[str, str], ex: Exchange, ruleset: RuleSet, robots: CanonicalRobots,
    tracker: BehaviourTracker, open_streams: int, now: float,
) -> None:
    """What classify records of a request, for one whose signals and verdict came from
    VerdictCache: run after the response, off the listener's path."""
    signals = ex.signals
    if signals is None or ruleset.needs.isdisjoint(STATEFUL):
        return
    ip_row = tracker.store.row(ex.client.key, now)
    _record(headers, ex, signals.ua, signals.agent, signals.content, ruleset, robots, tracker,
            ip_row, open_streams, False)


def _record(
    headers: Mapping[str, str], ex: Exchange, ua_text: str, agent: str, content: ContentKind,
    ruleset: RuleSet, robots: CanonicalRobots, tracker: BehaviourTracker, ip_row: int,
    open_streams: int, judge: bool,
) -> tuple[str, Behaviour]:
    """Count the request where some rule reads what it counts: the robots.txt state after
    it (a first violation is remembered) and, when `judge`, the client's behaviour."""
    recorded = ruleset.needs
    robots_state = ""
    if "robots" in recorded:
        robots_state = robots_compliance(ex.path, agent, robots, tracker.store, ip_row)
    if "behaviour" not in recorded:
        return robots_state, NONE
    # a podcast app reads the feed, then downloads enclosures with no Referer
    is_page = content is _PAGE or content is _FEED
    if content is not _AUDIO and ex.method != "HEAD":
        return robots_state, tracker.observe_plain(ip_row, ex.path, is_page, judge)
    referer = headers.get("Referer", "")
    facts = RequestFacts(
        ip=ex.client.ip,
        method=ex.method,
        path=ex.path,
        is_audio=content is _AUDIO,
        is_page=is_page,
        has_range="Range" in headers,
        same_site_referer=bool(referer) and _same_site(referer, ex.client.host),
        open_streams=open_streams,
    )
    return robots_state, tracker.observe(facts, ip_row, judge)


class _Known:
    """VerdictCache's entry for one client: what classify found of it (`base`), the verdicts
    of its requests by content kind, and where its row keeps its VERSION and what it was."""

    __slots__ = ("base", "expires", "kinds", "ruleset", "slot", "version")

    def __init__(self, ruleset: RuleSet, expires: float, slot: int, version: float,
                 base: Signals) -> None:
        self.ruleset, self.expires = ruleset, expires
        self.slot, self.version = slot, version
        self.base = base
        self.kinds: dict[ContentKind, tuple[Signals, Verdict]] = {}


class VerdictCache:
    """A worker's per-client verdict cache: (address, User-Agent) -> what classify found of the
    client and the verdict for each content kind it asked for, reused for its next requests
    whose rule bucket reads only facts of the client (rules.CLIENT_KEYS: the UA's class and
    agent, the address's network, the trap) while its row in the client store keeps its
    VERSION. A trap hit, a robots.txt read or violation, the row evicted (each gives the row a
    new version), a rule reload or `ttl` seconds (an ASN database replaced) end the reuse.

    What a cached verdict skips is the work of deciding; what classify records of the request
    (robots.txt state, behaviour counters) is still recorded, after the response (`record`).
    The facts a verdict rests on live in the client store that workers share and Redis
    merges, so every worker's cache agrees with the shared state: the cache itself holds
    nothing another worker or instance would need."""

    def __init__(self, store: ClientStore, asn_db: AsnDatabase, capacity: int,
                 ttl: float = 60.0) -> None:
        self.store = store
        self.asn_db = asn_db
        self.capacity = capacity
        self.ttl = ttl
        self._known: dict[tuple[str, str], _Known] = {}
        self.lookups = self.hits = 0

    @property
    def misses(self) -> int:
        return self.lookups - self.hits

    def lookup(self, ex: Exchange, ua: str, ruleset: RuleSet,
               now: float) -> tuple[Signals, Verdict] | None:
        """`ex`'s signals and verdict from what is known of its client; None when classify
        must run."""
        self.lookups += 1
        known = self._known.get((ex.client.key, ua))
        if known is None or known.ruleset is not ruleset or now > known.expires or (
                known.slot >= 0 and self.store.values[known.slot] != known.version):
            return None
        content = ruleset.content_kind(ex.path)
        hit = known.kinds.get(content)
        if hit is None and ruleset.bucket(content, known.base.ua_class).per_client:
            ex.signals = known.base._replace(content=content)  # decide reads it from ex
            hit = known.kinds[content] = (ex.signals, ruleset.decide(ex))
        if hit is not None:
            self.hits += 1
        return hit

    def remember(self, ex: Exchange, ua: str, ruleset: RuleSet, now: float) -> None:
        """After classify and decide: keep what was found if the bucket reads only facts of
        the client."""
        signals = ex.signals
        if (not self.capacity or signals is None
                or not ruleset.bucket(signals.content, signals.ua_class).per_client):
            return
        store = self.store
        row = -1
        if not ruleset.needs.isdisjoint(STATEFUL):
            row = store.find(ex.client.key)
            if row < 0:  # evicted by another worker since classify: nothing to check against
                return
        slot = row * FIELDS + VERSION if row >= 0 else -1
        base = signals
        if "network" in ruleset.needs and not signals.asn:  # for the other kinds' buckets
            network = self.asn_db.lookup(ex.client.ip)
            base = signals._replace(asn=network.asn, org=network.org,
                                    datacenter=network.asn in ruleset.datacenter_asns)
        if len(self._known) >= self.capacity:
            self._known.pop((ex.client.key, ua), None)
            if len(self._known) >= self.capacity:
                del self._known[next(iter(self._known))]  # the longest known
        known = _Known(ruleset, now + self.ttl, slot, store.values[slot] if row >= 0 else 0.0,
                       base)
        known.kinds[signals.content] = (signals, ex.verdict)
        self._known[(ex.client.key, ua)] = known

    def __len__(self) -> int:
        return len(self._known)


def _same_site(referer: str, host: str) -> bool:
    """Referer on this store: 'https://HOST/...' (any scheme)."""
    _, sep, rest = referer.partition("://")
    return bool(sep) and rest.split("/", 1)[0] == host


STATEFUL = frozenset({"robots", "behaviour", "trapped"})  # the signals kept per client
# enum members bound once: a class attribute lookup on an Enum costs more than the test
_AUDIO, _PAGE, _FEED = ContentKind.AUDIO, ContentKind.PAGE, ContentKind.FEED


def robots_compliance(
    path: str, agent: str, robots: CanonicalRobots, clients: ClientStore, row: int
) -> str:
    """The client's robots.txt state after this request; a first violation is remembered."""
    if path != "/robots.txt" and not robots.allows(path, agent):
        return clients.robots_violated(row)
    return clients.robots_state(row)
