"""Header consistency: a UA that claims to be a browser, checked against what that browser
sends for that kind of request.

A download tool or a scraping framework given a Chrome User-Agent string keeps its own
headers. Every current browser sends Accept-Language on every request and Accept-Encoding on
every request but media; to a secure origin (https, or localhost, which browsers treat as
secure) Chromium (76+), Firefox (90+) and Safari (16.4+) send Sec-Fetch-Mode; to a secure
origin Chromium 89+ sends the `sec-ch-ua` client hints (measured on loopback: Chromium 156 sends
them to http://127.0.0.1), and on every navigation `Upgrade-Insecure-Requests: 1` (Chromium
since 44; Firefox ESR and WebKitGTK sent it on loopback too, but are not held to it over https
unmeasured). And a browser's page, image and script
requests never carry what tools send (`Accept-Encoding: identity`, Python's default;
`Connection: close` on HTTP/1.1).

Media requests (`Sec-Fetch-Dest: audio` or `video`) differ by engine, as recorded from the
real programs in tests/fixtures/clients/ (`python -m tests.clients.capture` records them
again): Chromium 156 and Firefox ESR 153 send a plain `Accept-Encoding: identity`; WebKitGTK
2.50 sends no Accept-Encoding at all, `Connection: close` and `Icy-Metadata: 1`. WebKit's
download requests carry no Sec-Fetch headers (DESIGN.md, measured 2026-12), so a WebKit claim
is not held to them.

Only claims are checked: a UA that says it is curl is not inconsistent for lacking
Accept-Language. The result is a tuple of named problems, () when consistent; one problem is
weak evidence (`headers: inconsistent`), two or more are a contradiction (`headers:
contradicted`): the shipped rules change what a browser gets only for the second.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

_CHROMIUM = re.compile(r"(?:Chrome|Chromium|CriOS|Edg|OPR)/(\d+)")
_FIREFOX = re.compile(r"Firefox/(\d+)")
_SAFARI = re.compile(r"Version/(\d+)(?:\.(\d+))?.* Safari/")

HEADER_PROBLEMS = (
    "no-accept-language",
    "no-accept-encoding",
    "no-sec-fetch",
    "no-client-hints",
    "no-upgrade-insecure",
    "tool-headers",
)


def _secure(scheme: str, host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return scheme == "https" or name in ("localhost", "[::1]") or name.startswith("127.")


@functools.lru_cache(maxsize=4096)
def _browser_claims(ua: str) -> tuple[str, bool, bool]:
    """(engine, sends Sec-Fetch-* to secure origins, sends sec-ch-ua over https) for this UA;
    engine is chromium, gecko, webkit or "" when the UA names none of them."""
    chromium = _CHROMIUM.search(ua)
    if chromium is not None:
        version = int(chromium.group(1))
        return "chromium", version >= 76, version >= 89
    firefox = _FIREFOX.search(ua)
    if firefox is not None:
        return "gecko", int(firefox.group(1)) >= 90, False
    safari = _SAFARI.search(ua)
    if safari is not None:
        # WebKit's downloads carry no Sec-Fetch: not asked of a WebKit claim
        return "webkit", False, False
    return "", False, False


_MEDIA = frozenset({"audio", "video", "track"})


def header_problems(
    ua_class: str, ua: str, headers: Mapping[str, str], scheme: str, host: str
) -> tuple[str, ...]:
    if ua_class != "browser":
        return ()
    problems = []
    engine, sends_sec_fetch, sends_hints = _browser_claims(ua)
    media = headers.get("Sec-Fetch-Dest", "").lower() in _MEDIA
    if "Accept-Language" not in headers:
        problems.append("no-accept-language")
    # WebKit's media requests send none; Chromium's and Firefox's send "identity"
    if "Accept-Encoding" not in headers and not (media and engine == "webkit"):
        problems.append("no-accept-encoding")
    secure = _secure(scheme, host)
    if sends_sec_fetch and "Sec-Fetch-Mode" not in headers and secure:
        problems.append("no-sec-fetch")
    if sends_hints and secure and "Sec-CH-UA" not in headers:
        problems.append("no-client-hints")
    if (engine == "chromium" and "Upgrade-Insecure-Requests" not in headers
            and headers.get("Sec-Fetch-Mode", "").lower() == "navigate"):
        problems.append("no-upgrade-insecure")
    if not media:  # media requests: identity is the browsers' own, WebKit closes
        closes = headers.get("Connection", "").lower() == "close"
        plain_identity = headers.get("Accept-Encoding", "").strip().lower() == "identity"
        if closes or plain_identity:
            problems.append("tool-headers")
    return tuple(problems)
