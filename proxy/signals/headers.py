"""Header consistency: a UA that claims to be a browser, checked against what browsers send.

A download tool or a scraping framework given a Chrome User-Agent string keeps its own
headers. Every current browser sends Accept-Language and Accept-Encoding on every request;
to a secure origin (https, or localhost, which browsers treat as secure) Chromium (76+),
Firefox (90+) and Safari (16.4+) send Sec-Fetch-Mode; over https, Chromium 89+ sends the
`sec-ch-ua` client hints. And a browser never sends some headers tools do (Python's
`Accept-Encoding: identity` default for page requests, `Connection: close` on HTTP/1.1...).

Only claims are checked: a UA that says it is curl is not inconsistent for lacking
Accept-Language. The result is a tuple of named problems, () when consistent.
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
    "tool-headers",
)


def _secure(scheme: str, host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return scheme == "https" or name in ("localhost", "[::1]") or name.startswith("127.")


@functools.lru_cache(maxsize=4096)
def _browser_claims(ua: str) -> tuple[bool, bool]:
    """(sends Sec-Fetch-* to secure origins, sends sec-ch-ua over https) for this UA."""
    chromium = _CHROMIUM.search(ua)
    firefox = _FIREFOX.search(ua) if chromium is None else None
    safari = _SAFARI.search(ua) if chromium is None and firefox is None else None
    sends_sec_fetch = (
        (chromium is not None and int(chromium.group(1)) >= 76)
        or (firefox is not None and int(firefox.group(1)) >= 90)
        or (safari is not None and (int(safari.group(1)), int(safari.group(2) or 0)) >= (16, 4))
    )
    return sends_sec_fetch, chromium is not None and int(chromium.group(1)) >= 89


def header_problems(
    ua_class: str, ua: str, headers: Mapping[str, str], scheme: str, host: str
) -> tuple[str, ...]:
    if ua_class != "browser":
        return ()
    problems = []
    if "Accept-Language" not in headers:
        problems.append("no-accept-language")
    if "Accept-Encoding" not in headers:
        problems.append("no-accept-encoding")
    sends_sec_fetch, sends_hints = _browser_claims(ua)
    if sends_sec_fetch and "Sec-Fetch-Mode" not in headers and _secure(scheme, host):
        problems.append("no-sec-fetch")
    if sends_hints and scheme == "https" and "Sec-CH-UA" not in headers:
        problems.append("no-client-hints")
    closes = headers.get("Connection", "").lower() == "close"
    # Python's urllib says "identity"; browsers do only for media ("identity;q=1, *;q=0")
    plain_identity = headers.get("Accept-Encoding", "").strip().lower() == "identity"
    if closes or plain_identity:
        problems.append("tool-headers")
    return tuple(problems)
