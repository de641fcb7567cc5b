"""robots.txt: the canonical file every client gets, and compliance judged against it.

The canonical file is the store's own robots.txt, verbatim, followed by a generated AI section
that disallows the AI agents the artist's policy names (rules/robots.yaml). It is served by the
proxy itself, with 200, to every client, blocked ones included: a crawler that was never told
cannot be said to have ignored the reservation. It never contains `User-agent: *` with
`Disallow: /`, whatever the policy says.

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


# RFC 9309 product tokens (plus digits and '.', which real agents use). Anything else, "*"
# above all, is never written into a generated group.
PRODUCT_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")


def build_canonical(
    upstream_text: str, disallowed: list[str], trap_path: str | None = None,
    declarations: tuple[str, ...] = (),
) -> CanonicalRobots:
    """declarations: lines for everyone's group (Content-Signal, Content-Usage: rights.py)."""
    disallowed = [name for name in disallowed if PRODUCT_TOKEN.fullmatch(name)]
    parts = []
    if upstream_text.strip():
        parts.append(upstream_text.rstrip("\n") + "\n")
    if trap_path or declarations:
        # for everyone (groups for the same agent merge, RFC 9309 2.2.1): the trap path, and
        # the reservation in the vocabularies that live in robots.txt; never a Disallow: /
        lines = ["User-agent: *", *declarations]
        if trap_path:
            lines.append(f"Disallow: {trap_path}")
        parts.append("\n".join(lines) + "\n")
    if disallowed:
        section = ["# SonicShield: the artist reserves these recordings from AI training and",
                   "# text-and-data mining. The agents below may not fetch anything here."]
        section += [f"User-agent: {name}" for name in disallowed]
        section.append("Disallow: /")
        parts.append("\n".join(section) + "\n")
    text = "\n".join(parts)
    return CanonicalRobots(text=text, sha256=hashlib.sha256(text.encode()).hexdigest(),
                           parser=Protego.parse(text))


class RobotsSource:
    """The canonical robots.txt, rebuilt from the store's file every `refresh` seconds.

    The store's answer: 2xx is used; 4xx means "no robots.txt" (RFC 9309 2.3.1.3); a 5xx or an
    unreachable store keeps the last good text (at start, none: the AI section alone).
    """

    def __init__(self, url: str, refresh: float, trap_path: str | None = None) -> None:
        self.url = url
        self.refresh = refresh
        self.trap_path = trap_path
        self.upstream_text = ""
        self.disallowed: tuple[str, ...] = ()
        self.declarations: tuple[str, ...] = ()
        self.current = build_canonical("", [], trap_path)

    def canonical(
        self, disallowed: tuple[str, ...], declarations: tuple[str, ...] = ()
    ) -> CanonicalRobots:
        """The file for this rule set's policy (rebuilt only when the policy changed)."""
        if disallowed is not self.disallowed or declarations != self.declarations:
            self.disallowed, self.declarations = disallowed, declarations
            self.current = self._build(self.upstream_text)
        return self.current

    def _build(self, upstream_text: str) -> CanonicalRobots:
        return build_canonical(upstream_text, list(self.disallowed), self.trap_path,
                               self.declarations)

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
            self.upstream_text = text
            self.current = self._build(text)

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self.fetch(session)
            await asyncio.sleep(self.refresh)
