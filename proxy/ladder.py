"""The ladder: how strong the evidence against one request is, rung by rung.

The shipped rules grow the response with the evidence (rules/10-listeners.yaml, README "The
ladder"): nothing or one weak signal keeps the real thing; two signals, or a tool that says
it is one, get a preview; strong evidence gets decoys and slow pages. `sonicshield explain`
shows the rung a request stands on and the facts that put it there, so an operator can see
at once whether a rule of theirs answers weak evidence harshly.

The rung is read from the request's signals alone, not from the rule that matched: it says
what is known, the rules say what to do about it.
"""

from __future__ import annotations

from typing import NamedTuple

from .exchange import Signals
from .signals.behaviour import families
from .state import VIOLATED_AFTER_READING, VIOLATED_WITHOUT_READING

RUNGS = ("nothing", "weak", "two signals", "strong")
TOOL_CLASSES = frozenset({"http-library", "bot", "empty", "headless-browser"})
# classes whose lane is a claim checked by behaviour (rules/10-listeners.yaml)
LANE_CLASSES = frozenset({"media-player", "feed-reader", "link-preview", "search-engine",
                          "archiver"})
OFF_LANE_FLAGS = frozenset({"track-run", "many-tracks", "parallel-audio",
                            "faster-than-playback", "head-sweep", "not-found", "rotating"})
# a link preview fetches one page and its image: walking a listing or hurrying is off it too
PREVIEW_OFF_LANE_FLAGS = OFF_LANE_FLAGS | {"walking-listing", "fast"}


class Rung(NamedTuple):
    level: int  # index into RUNGS
    reasons: tuple[str, ...]  # the facts at that level

    @property
    def name(self) -> str:
        return RUNGS[self.level]

    def describe(self) -> str:
        why = "; ".join(self.reasons) or "no signal against it"
        return f"{self.level} ({self.name}): {why}"


def rung(s: Signals) -> Rung:
    strong: list[str] = []
    weak: list[str] = []
    declared: list[str] = []  # a tool's own word, or two weak signals together
    if s.ua_class == "ai-crawler":
        strong.append(f"declares an AI agent ({s.agent or s.ua})")
    if s.robots == VIOLATED_AFTER_READING:
        strong.append("fetched what robots.txt disallows after reading it")
    elif s.robots == VIOLATED_WITHOUT_READING:
        weak.append("fetched what robots.txt disallows, without reading it")
    if s.trapped:
        strong.append("followed the trap link")
    if s.verified == "unverified":
        strong.append("claims a search engine its address disproves")
    if len(s.headers) >= 2:
        strong.append(f"headers contradict its browser ({', '.join(s.headers)})")
    elif s.headers:
        weak.append(f"one odd header ({s.headers[0]})")
    kinds = families(s.behaviour_flags)
    if len(kinds) >= 2:
        strong.append(f"behaviour of {len(kinds)} independent kinds "
                      f"({', '.join(s.behaviour_flags)})")
    elif kinds:
        weak.append(f"one kind of behaviour ({', '.join(s.behaviour_flags)})")
    if s.ua_class in TOOL_CLASSES:
        declared.append(f"says it is a {s.ua_class} ({s.ua or 'no user agent'})")
    elif s.ua_class == "unknown":
        weak.append("unknown user agent")
    elif s.ua_class in LANE_CLASSES:
        lane = PREVIEW_OFF_LANE_FLAGS if s.ua_class == "link-preview" else OFF_LANE_FLAGS
        off = ", ".join(f for f in s.behaviour_flags if f in lane)
        if off:
            declared.append(f"a {s.ua_class} off its lane ({off})")
    if strong:
        return Rung(3, tuple(strong))
    if declared or len(weak) >= 2:
        return Rung(2, tuple(declared + weak))
    return Rung(1 if weak else 0, tuple(weak))
