"""What real listener programs sent (tests/fixtures/clients/, recorded from Debian's Chromium,
Firefox ESR, WebKitGTK, VLC, mpv, gPodder, Newsboat and a Mastodon-style link preview by
`python -m tests.clients.capture`), judged by the proxy's own checks: every request of every
program is what its claim says it is.

When a new release changes what a browser sends, recording it again makes this fail here,
not for a fan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from multidict import CIMultiDict

from proxy.signals.headers import header_problems

from .conftest import shipped_rules

CLIENTS = Path(__file__).parent / "fixtures" / "clients"
PROGRAMS = sorted(p.stem for p in CLIENTS.glob("*.json"))
UA_CLASS = {"chromium": "browser", "firefox": "browser", "webkit": "browser",
            "vlc": "media-player", "mpv": "media-player", "gpodder": "feed-reader",
            "newsboat": "feed-reader", "link-preview": "link-preview"}


def recorded(program: str) -> list[tuple[str, str, CIMultiDict[str]]]:
    data = json.loads((CLIENTS / f"{program}.json").read_text())
    return [(r["kind"], r["path"], CIMultiDict(r["headers"])) for r in data["requests"]]


def test_every_program_is_recorded():
    assert sorted(UA_CLASS) == PROGRAMS


@pytest.mark.parametrize("program", PROGRAMS)
def test_each_program_is_taken_for_what_it_is(program):
    ua = shipped_rules().current.ua
    for _, _, headers in recorded(program):
        assert ua.classify(headers.get("User-Agent", "")).ua_class == UA_CLASS[program]


@pytest.mark.parametrize("program", ["chromium", "firefox", "webkit"])
def test_every_request_of_a_real_browser_is_consistent(program):
    kinds = set()
    for kind, path, headers in recorded(program):
        host = headers["Host"]
        # recorded from 127.0.0.1 (a secure origin to browsers), so Sec-Fetch-* was sent
        assert header_problems("browser", headers["User-Agent"], headers, "http", host) == (), (
            kind, path)
        kinds.add(kind)
    assert {"document", "audio", "image", "style"} <= kinds


def test_a_tool_borrowing_a_browsers_audio_headers_is_still_seen():
    """The media leniency (identity, no Accept-Encoding for WebKit) is for media requests: a
    page request with Chromium's audio headers is a tool."""
    _, _, audio = next(r for r in recorded("chromium") if r[0] == "audio")
    page = CIMultiDict(audio)
    page["Sec-Fetch-Dest"] = "document"
    assert header_problems("browser", page["User-Agent"], page, "http", page["Host"]) == (
        "tool-headers",)
