"""The ladder: the rung a request stands on, from its signals (proxy/ladder.py)."""

from __future__ import annotations

import pytest

from proxy.exchange import ContentKind, Signals
from proxy.ladder import rung


def signals(**fields: object) -> Signals:
    return Signals(content=ContentKind.AUDIO, ua="x", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "level"),
    [
        ({"ua_class": "browser"}, 0),
        ({"ua_class": "browser", "headers": ("no-client-hints",)}, 1),
        ({"ua_class": "unknown"}, 1),
        ({"ua_class": "browser", "behaviour_flags": ("no-context", "whole-file")}, 1),
        ({"ua_class": "browser", "robots": "violated-without-reading"}, 1),
        ({"ua_class": "unknown", "behaviour_flags": ("no-context",)}, 2),
        ({"ua_class": "http-library"}, 2),
        ({"ua_class": "headless-browser"}, 2),
        ({"ua_class": "media-player"}, 0),
        ({"ua_class": "media-player", "behaviour_flags": ("track-run",)}, 2),
        ({"ua_class": "media-player", "behaviour_flags": ("track-run", "no-context")}, 3),
        ({"ua_class": "feed-reader", "behaviour_flags": ("walking-listing",)}, 1),
        ({"ua_class": "link-preview", "behaviour_flags": ("walking-listing",)}, 2),
        ({"ua_class": "ai-crawler", "agent": "GPTBot"}, 3),
        ({"ua_class": "browser", "trapped": True}, 3),
        ({"ua_class": "browser", "robots": "violated-after-reading"}, 3),
        ({"ua_class": "browser", "headers": ("no-sec-fetch", "no-client-hints")}, 3),
        ({"ua_class": "browser", "behaviour_flags": ("no-context", "rotating")}, 3),
        ({"ua_class": "search-engine", "verified": "unverified"}, 3),
    ],
)
def test_each_kind_of_evidence_has_its_rung(fields, level):
    got = rung(signals(**fields))
    assert got.level == level, got
    assert bool(got.reasons) == (level > 0)
