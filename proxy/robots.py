"""robots.txt: the canonical file every client gets, and compliance judged against it.

The canonical file is the store's own robots.txt with the artist's reservation merged in, so
that every parser reads it the same way. RFC 9309 merges groups for the same agent, but many
real parsers (Python's urllib.robotparser, wget's) read only the first group that matches, so
the file holds one group per agent:

- one `User-agent: *` group: the store's own rules for everyone (all its `*` groups merged),
  the reservation lines (Content-Signal, Content-Usage) and the trap path;
- the store's groups for named agents, merged per agent, each with the reservation lines and
  the trap path as well (an agent with a group of its own reads no other: without it a
  compliant Googlebot would walk into the trap);
- one group for the AI agents the artist's policy names (rules/robots.yaml): `Disallow: /`;
  what the store's own groups said for those agents gives way to the reservation;
- the store's Sitemap lines, moved from the store's private origin to the public one (the
  `upstream.public_url`, or the Host the client used), which is the only one a crawler can
  reach and the only one that should be shown.

It is served by the proxy itself, with 200, to every client, blocked ones included: a crawler
that was never told cannot be said to have ignored the reservation. It never contains
`User-agent: *` with `Disallow: /`, whatever the policy says. The store's comments are not
carried over.

Compliance is judged with protego (RFC 9309) against the same text, for the client's own agent
token (or `*` for a UA without one).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from protego import Protego

from .agents import PURPOSES, Agent
from .logs import log_event
from .yamlsource import ConfigError, LocatedDict, Mark, Problem, load_yaml_file, suggest

log = logging.getLogger("sonicshield.robots")
POLICY_KEYS = ("version", "disallow_ai_purposes", "disallow_agents", "allow_agents")


@dataclass(frozen=True, slots=True)
class RobotsPolicy:
    """Which AI agents the generated section disallows (everything under /)."""

    disallow_ai_purposes: frozenset[str] = frozenset({"training", "undocumented"})
    disallow_agents: frozenset[str] = frozenset()  # extra tokens, any class
    allow_agents: frozenset[str] = frozenset()  # exceptions to the purposes rule

    def disallowed(self, agents: dict[str, Agent]) -> list[str]:
        names = {
            a.token for a in agents.values()
            if a.ua_class == "ai-crawler" and a.purpose in self.disallow_ai_purposes
        }
        names |= set(self.disallow_agents)
        allowed = {a.lower() for a in self.allow_agents}
        return sorted((n for n in names if n.lower() not in allowed), key=str.lower)


def load_policy(path: Path, display: str) -> RobotsPolicy:
    if not path.exists():
        return RobotsPolicy()
    doc = load_yaml_file(path, display)
    if not isinstance(doc, LocatedDict):
        raise ConfigError([Problem(Mark(display, 1, 1), "expected a mapping with 'version: 1'")])
    problems = [
        Problem(doc.key_mark(k), f"unknown key '{k}'{suggest(k, POLICY_KEYS)}")
        for k in doc if k not in POLICY_KEYS
    ]
    values: dict[str, frozenset[str]] = {}
    for key in POLICY_KEYS[1:]:
        raw = doc.get(key, [])
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            problems.append(Problem(doc.value_mark(key), f"'{key}' must be a list of names"))
            continue
        values[key] = frozenset(raw)
    for key in ("disallow_agents", "allow_agents"):
        for name in sorted(values.get(key, frozenset())):
            if not PRODUCT_TOKEN.fullmatch(name):
                problems.append(Problem(
                    doc.value_mark(key),
                    f"{name!r} is not an agent token (letters, digits, '-', '_', '.'); "
                    "SonicShield never writes a `User-agent: *` group",
                ))
    for purpose in values.get("disallow_ai_purposes", frozenset()):
        if purpose not in PURPOSES or not purpose:
            problems.append(Problem(doc.value_mark("disallow_ai_purposes"),
                                    f"unknown purpose {purpose!r}{suggest(purpose, PURPOSES)}"))
    if problems:
        raise ConfigError(problems)
    defaults = RobotsPolicy()
    return RobotsPolicy(
        disallow_ai_purposes=values.get("disallow_ai_purposes", defaults.disallow_ai_purposes)
        if "disallow_ai_purposes" in doc else defaults.disallow_ai_purposes,
        disallow_agents=values.get("disallow_agents", frozenset()),
        allow_agents=values.get("allow_agents", frozenset()),
    )


@dataclass(frozen=True, slots=True)
class CanonicalRobots:
    text: str
    sha256: str
    parser: Protego
    # (agent, path) -> allowed: protego walks every group per question, and a store's paths
    # repeat (cleared when full, so it stays bounded)
    _answers: dict[tuple[str, str], bool] = field(default_factory=dict, compare=False)

    def allows(self, path: str, agent: str) -> bool:
        key = (agent, path)
        answer = self._answers.get(key)
        if answer is None:
            if len(self._answers) >= _ANSWERS:
                self._answers.clear()
            answer = self._answers[key] = bool(self.parser.can_fetch(path, agent or "*"))
        return answer


_ANSWERS = 8192
_ORIGINS = 16


# RFC 9309 product tokens (plus digits and '.', which real agents use). Anything else, "*"
# above all, is never written into a generated group.
PRODUCT_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")


# The store's robots.txt, read as RFC 9309 groups: what build_canonical merges
_FIELD = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_-]*)\s*:\s*(.*?)\s*$")


@dataclass
class _Group:
    agents: list[str]
    members: list[str] = field(default_factory=list)  # "Field: value" lines, as written


def _parse(text: str) -> tuple[list[str], list[_Group], list[str]]:
    """(lines before any group, the groups in order, Sitemap URLs): comments and blank lines
    dropped, unparseable lines too (every parser ignores them)."""
    preamble: list[str] = []
    groups: list[_Group] = []
    sitemaps: list[str] = []
    group: _Group | None = None
    naming = False  # the last line was a User-agent: the next one joins its group
    for raw in text.splitlines():
        m = _FIELD.match(raw.split("#", 1)[0])
        if m is None:
            continue
        name, value = m[1], m[2]
        key = name.lower()
        if key == "user-agent":
            if group is None or not naming:
                group = _Group([])
                groups.append(group)
            group.agents.append(value)
            naming = True
        elif key == "sitemap":
            sitemaps.append(value)
        elif group is None:
            preamble.append(f"{name}: {value}")
        else:
            group.members.append(f"{name}: {value}")
            naming = False
    return preamble, groups, sitemaps


def build_canonical(
    upstream_text: str, disallowed: list[str], trap_path: str | None = None,
    declarations: tuple[str, ...] = (), sitemaps: tuple[str, str] | None = None,
) -> CanonicalRobots:
    """The one robots.txt every parser reads alike (module docstring).

    declarations: lines for every group (Content-Signal, Content-Usage: rights.py);
    sitemaps: (store origin, public origin): Sitemap URLs on the first are moved to the second.
    """
    reserved = {name.lower(): name for name in disallowed if PRODUCT_TOKEN.fullmatch(name)}
    preamble, groups, sitemap_urls = _parse(upstream_text)
    merged: dict[str, list[str]] = {}  # agent, lower-cased -> its members, all its groups'
    spelled: dict[str, str] = {}
    for group in groups:
        for agent in group.agents:
            key = agent.lower()
            spelled.setdefault(key, agent)
            members = merged.setdefault(key, [])
            members += [m for m in group.members if m not in members]
    # the trap first: parsers that take the first matching line (urllib.robotparser) must
    # meet it before a store's "Allow: /"
    trap = [f"Disallow: {trap_path}"] if trap_path else []
    blocks: list[list[str]] = []
    if preamble:
        blocks.append(preamble)
    everyone = merged.pop("*", [])
    if everyone or trap or declarations:
        blocks.append(["User-agent: *", *trap, *everyone, *declarations])
    # the store's groups for named agents: an agent with a group of its own reads no other,
    # so each carries the trap path and the declarations too; agents with the same members
    # share one group
    shared: dict[tuple[str, ...], list[str]] = {}
    for key, members in merged.items():
        if key not in reserved:
            shared.setdefault(tuple(members), []).append(spelled[key])
    for lines, agents in shared.items():
        blocks.append([*(f"User-agent: {a}" for a in agents), *trap, *lines, *declarations])
    if reserved:
        # the artist's reservation wins over what the store's own groups for these agents say
        blocks.append([
            "# SonicShield: the artist reserves these recordings from AI training and",
            "# text-and-data mining. The agents below may not fetch anything here.",
            *(f"User-agent: {name}" for name in reserved.values()),
            *declarations, "Disallow: /"])
    if sitemap_urls:
        blocks.append([f"Sitemap: {_moved(url, sitemaps)}" for url in sitemap_urls])
    text = "\n\n".join("\n".join(block) for block in blocks) + "\n" if blocks else ""
    return CanonicalRobots(text=text, sha256=hashlib.sha256(text.encode()).hexdigest(),
                           parser=Protego.parse(text))


def _moved(url: str, sitemaps: tuple[str, str] | None) -> str:
    if sitemaps is not None:
        store, public = sitemaps
        if url.lower().startswith(store.lower() + "/") or url.lower() == store.lower():
            return public + url[len(store):]
    return url


class RobotsSource:
    """The canonical robots.txt, rebuilt from the store's file every `refresh` seconds.

    The store's answer: 2xx is used; 4xx means "no robots.txt" (RFC 9309 2.3.1.3); a 5xx or an
    unreachable store keeps the last good text (at start, none: the AI section alone).
    """

    def __init__(self, url: str, refresh: float, trap_path: str | None = None,
                 public_url: str = "") -> None:
        self.url = url
        self.refresh = refresh
        self.trap_path = trap_path
        parts = urlsplit(url)
        self.store_origin = f"{parts.scheme}://{parts.netloc}"
        self.public_url = public_url
        self.upstream_text = ""
        self.disallowed: tuple[str, ...] = ()
        self.declarations: tuple[str, ...] = ()
        self.current = build_canonical("", [], trap_path)
        self._origins: dict[str, CanonicalRobots] = {}  # the file as served at each origin

    def canonical(
        self, disallowed: tuple[str, ...], declarations: tuple[str, ...] = ()
    ) -> CanonicalRobots:
        """The file for this rule set's policy (rebuilt only when the policy changed)."""
        if disallowed is not self.disallowed or declarations != self.declarations:
            self.disallowed, self.declarations = disallowed, declarations
            self._rebuild(self.upstream_text)
        return self.current

    def served_at(self, origin: str) -> CanonicalRobots:
        """The file as served to a client that reached the site at `origin` (scheme://host, as
        it used it: its Host, or a trusted proxy's X-Forwarded-Host/-Proto): its Sitemap lines
        point there. With upstream.public_url set, that is the only origin."""
        origin = self.public_url or origin
        robots = self._origins.get(origin)
        if robots is None:
            if len(self._origins) >= _ORIGINS:  # Host is the client's to choose: bounded
                self._origins.clear()
            robots = self._origins[origin] = self._build(self.upstream_text, origin)
        return robots

    def _rebuild(self, upstream_text: str) -> None:
        self.upstream_text = upstream_text
        self._origins.clear()
        self.current = self._build(upstream_text, self.public_url or None)

    def _build(self, upstream_text: str, origin: str | None) -> CanonicalRobots:
        return build_canonical(upstream_text, list(self.disallowed), self.trap_path,
                               self.declarations,
                               (self.store_origin, origin) if origin else None)

    async def fetch(self, session: aiohttp.ClientSession) -> None:
        try:
            async with asyncio.timeout(10), session.get(self.url, allow_redirects=False) as r:
                if r.status >= 500:
                    raise aiohttp.ClientResponseError(r.request_info, (), status=r.status)
                text = (await r.text(errors="replace"))[:500_000] if r.status < 300 else ""
        except (TimeoutError, aiohttp.ClientError) as exc:
            log_event(log, logging.WARNING, "robots-fetch-failed", url=self.url,
                      error=str(exc) or type(exc).__name__)
            return
        if text != self.upstream_text:
            self._rebuild(text)

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self.fetch(session)
            await asyncio.sleep(self.refresh)
