"""Classification: request facts -> frozen Signals.

Cheap signals (content kind, user-agent class) are always computed; costly ones only when a
rule that could decide this request reads them (RuleSet.bucket: the rules left once the
content kind and the UA class are known).
"""

from __future__ import annotations

from collections.abc import Mapping

from .exchange import ContentKind, Exchange, Signals
from .robots import CanonicalRobots
from .rules import RuleSet
from .signals.behaviour import NONE, BehaviourTracker, RequestFacts, header_fingerprint
from .signals.headers import header_problems
from .signals.network import UNKNOWN as UNKNOWN_NETWORK
from .signals.network import AsnDatabase
from .signals.verify import CrawlerVerifier
from .state import ClientStore


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
    recorded = ruleset.needs
    clients = tracker.store
    # the address's row, for the robots.txt state and the behaviour counters
    ip_row = clients.row("i:" + ex.client.ip, now) if not recorded.isdisjoint(STATEFUL) else -1
    robots_state = ""
    if "robots" in recorded:
        robots_state = robots_compliance(ex.path, info.agent, robots, clients, ip_row)
    problems: tuple[str, ...] = ()
    if "headers" in needs:
        problems = header_problems(info.ua_class, ua_text, headers, ex.client.scheme,
                                   ex.client.host)
    acting = NONE
    if "behaviour" in recorded:
        judge = "behaviour" in needs
        # a podcast app reads the feed, then downloads enclosures with no Referer
        is_page = content is _PAGE or content is _FEED
        if content is not _AUDIO and ex.method != "HEAD":
            acting = tracker.observe_plain(ip_row, ex.path, is_page, judge)
        else:
            referer = headers.get("Referer", "")
            facts = RequestFacts(
                ip=ex.client.ip,
                fingerprint=header_fingerprint(ua_text, headers),
                method=ex.method,
                path=ex.path,
                is_audio=content is _AUDIO,
                is_page=is_page,
                has_range="Range" in headers,
                same_site_referer=bool(referer) and _same_site(referer, ex.client.host),
                open_streams=open_streams,
            )
            acting = tracker.observe(facts, ip_row, judge)
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
        trapped="trapped" in recorded and clients.trapped(ip_row),
    )


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
