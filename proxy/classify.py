"""Classification: request facts -> frozen Signals.

Cheap signals (content kind, user-agent class) are always computed; costly ones only when the
rule set matches on them (RuleSet.needs).
"""

from __future__ import annotations

from aiohttp import web

from .exchange import Exchange, Signals
from .robots import CanonicalRobots
from .rules import RuleSet
from .signals.content import content_kind
from .signals.headers import header_problems
from .state import VIOLATED_AFTER_READING, VIOLATED_WITHOUT_READING, ClientStore


def classify(
    request: web.Request, ex: Exchange, ruleset: RuleSet, robots: CanonicalRobots,
    clients: ClientStore,
) -> Signals:
    ua_text = request.headers.get("User-Agent", "")
    info = ruleset.ua.classify(ua_text)
    robots_state = ""
    if "robots" in ruleset.needs:
        robots_state = robots_compliance(ex, info.agent, robots, clients)
    problems: tuple[str, ...] = ()
    if "headers" in ruleset.needs:
        problems = header_problems(info.ua_class, ua_text, request.headers, ex.client.scheme,
                                   ex.client.host)
    return Signals(
        content=content_kind(ex.path),
        ua=ua_text,
        ua_class=info.ua_class,
        agent=info.agent,
        operator=info.operator,
        purpose=info.purpose,
        robots=robots_state,
        headers=problems,
    )


def robots_compliance(
    ex: Exchange, agent: str, robots: CanonicalRobots, clients: ClientStore
) -> str:
    """The client's robots.txt state after this request; a first violation is remembered."""
    state = clients.touch(ex.client.ip)
    if not state.robots_violation and ex.path != "/robots.txt" and not robots.allows(
        ex.path, agent
    ):
        state.robots_violation = (
            VIOLATED_AFTER_READING if state.robots_read_at else VIOLATED_WITHOUT_READING
        )
    return state.robots_state
