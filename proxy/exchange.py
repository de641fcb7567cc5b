"""The data objects that flow through the pipeline.

request -> Exchange -> classify (Signals) -> decide (Verdict) -> respond -> record

This module imports nothing from the package: every stage depends on it, it depends on no stage.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import NamedTuple


class Action(enum.StrEnum):
    """What the proxy does with a request. The closed set the rule files may name."""

    ALLOW = "allow"
    BLOCK = "block"
    TARPIT = "tarpit"
    TRUNCATE = "truncate"
    DECOY = "decoy"
    POISON = "poison"
    WATERMARK = "watermark"


class ContentKind(enum.StrEnum):
    """What a request is after, judged from its path before the upstream answers."""

    PAGE = "page"
    AUDIO = "audio"
    IMAGE = "image"
    ASSET = "asset"  # CSS, JavaScript, fonts
    FEED = "feed"  # RSS/Atom, sitemaps
    DECLARATION = "declaration"  # robots.txt, /.well-known/*, ai.txt
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Client:
    """Who is asking, after the trusted-proxy rule has been applied.

    ip:    the client address the proxy believes (the TCP peer, or the first untrusted hop of
           X-Forwarded-For when the peer is a configured trusted proxy).
    peer:  the TCP peer address as seen on the socket.
    via_trusted_proxy: True when `ip` came from X-Forwarded-For through a trusted peer.
    scheme: http or https as the client used it (from X-Forwarded-Proto only via a trusted peer).
    host:  the Host the client asked for (from X-Forwarded-Host only via a trusted peer).
    key:   the client store's key for this client: its address and a fingerprint of its
           browser or program (proxy/clientip.py client_key), so that a listener behind an
           address a crawler used is not judged by the crawler's doings; "c:ADDRESS" alone
           when built without headers (offline tools, tests).
    """

    ip: str
    peer: str
    via_trusted_proxy: bool
    scheme: str
    host: str
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", "c:" + self.ip)


class Signals(NamedTuple):
    """What classification found. Immutable: computed once per exchange, then only read.
    (A NamedTuple: built on every request, and a frozen dataclass takes 2.7 us to build.)

    content:  the kind of resource requested (from the path).
    ua:       the raw User-Agent header, "" when absent.
    ua_class: what the UA says it is: ai-crawler, search-engine, link-preview, feed-reader,
              media-player, archiver, bot, http-library, headless-browser, browser, empty,
              unknown (see rules/agents/).
    agent:    the known agent token that matched ("GPTBot"), "" when none did.
    operator: who runs that agent ("OpenAI"), "" when unknown.
    purpose:  for AI agents: training, search, user-triggered or undocumented; else "".
    robots:   the client's robots.txt compliance: unseen, compliant, violated-after-reading,
              violated-without-reading; "" when no rule asks (not computed).
    headers:  what a UA claiming to be a browser lacks or sends that browsers never do
              (no-accept-language, no-sec-fetch, ...); () when consistent or not computed.
    behaviour_score: 0..1, how crawler-like this client has acted (0.0 when not computed).
    behaviour_flags: the named behaviours behind the score (no-context, whole-file, ...).
    asn, org: the client address's autonomous system and its organisation (0 and "" when
              unknown or not computed).
    datacenter: the ASN is a hosting or cloud provider (rules/networks/datacenters.yaml).
    verified: for an agent whose operator publishes crawler DNS domains: "verified" (forward-
              confirmed reverse DNS), "unverified", or "pending" (being checked); else "".
    trapped:  this client address has fetched a trap link (now or before).
    """

    content: ContentKind
    ua: str
    ua_class: str = "unknown"
    agent: str = ""
    operator: str = ""
    purpose: str = ""
    robots: str = ""
    headers: tuple[str, ...] = ()
    behaviour_score: float = 0.0
    behaviour_flags: tuple[str, ...] = ()
    asn: int = 0
    org: str = ""
    datacenter: bool = False
    verified: str = ""
    trapped: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one exchange.

    action:    what to do.
    params:    the action's parameters, already validated (e.g. {"seconds": 30}).
    origin:    where the decision came from, for operators: "rules/20-ai.yaml:14 ai-audio"
               or "default/allow".
    rule_hash: a short stable hash of the rule's content, so evidence can say exactly which
               version of a rule decided.
    shadow:    decided and recorded, but the real response is served: the whole proxy runs in
               shadow mode (`shadow: true` in the config), or, on a rule's own verdict, the
               rule has `shadow: true` (RuleSet.decide then lets the rules after it decide).
    shadowed:  the verdict of a shadow rule that matched before the rule that decided: what it
               would have done, for the records; None when no shadow rule matched.
    """

    action: Action
    origin: str
    rule_hash: str = ""
    params: tuple[tuple[str, object], ...] = ()
    shadow: bool = False
    shadowed: Verdict | None = None

    @property
    def header_value(self) -> str:
        """The X-SonicShield-Verdict header: action and origin (and a shadow rule's)."""
        mode = " shadow" if self.shadow else ""
        value = f"{self.action.value}{mode}; {self.origin}"
        if self.shadowed is not None:
            value += f"; shadow {self.shadowed.action.value}; {self.shadowed.origin}"
        return value


DEFAULT_ALLOW = Verdict(action=Action.ALLOW, origin="default/allow")


class Served(NamedTuple):
    """A substituted audio body, for the evidence log.

    key:    the variant's cache key (names the original version and the recipe).
    mark:   the 64-bit watermark payload of this client's copy, None when unmarked.
    pieces: the files and byte ranges [start, end) that, joined, are the whole variant.
    """

    key: str
    mark: int | None
    pieces: tuple[tuple[str, int, int], ...]


@dataclass(slots=True)
class Exchange:
    """Everything the proxy learned and did for one request. Mutable; one per request.

    id:          a short unique id, also sent upstream as X-Request-Id.
    started:     monotonic clock at arrival (for the duration).
    wall:        wall-clock time at arrival (for logs and evidence).
    client:      who is asking (see Client).
    method:      the request method.
    path:        the normalised, decoded path (proxy/inbound.py): what the rules judge and the
                 caches key on.
    query:       the query string as the client sent it.
    target:      the normalised target as the store is asked for it (encoded path and query).
    signals:     set by classify.
    verdict:     set by decide.
    status:      the status sent to the client (0 until a response started).
    bytes_out:   body bytes written to the client.
    bytes_in:    request body bytes forwarded upstream.
    variant:     what was served: "upstream" for the real response, "local" for a response the
                 proxy made itself (error pages, blocks), "robots.txt", "declaration",
                 "tarpit", or the audio action whose variant was sent (truncate, decoy, ...).
    served:      for an audio variant, which one (see Served).
    audio_rate:  seconds of audio per body byte (for the seconds-served metric).
    upstream_ms: time to the upstream's response headers, None when the upstream was not asked.
    error:       a short machine-readable reason when something failed ("upstream-timeout",
                 "client-abort", ...); None on success.
    """

    id: str
    client: Client
    method: str
    path: str
    query: str
    target: str = ""  # set by the handler; offline judges (explain, catalog) forward nothing
    started: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)
    signals: Signals | None = None
    verdict: Verdict = DEFAULT_ALLOW
    status: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    variant: str = "upstream"
    served: Served | None = None
    audio_rate: float = 0.0  # seconds of audio per body byte, 0.0 when not audio or unknown
    upstream_ms: float | None = None
    error: str | None = None

    @property
    def duration_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0
