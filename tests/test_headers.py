"""Header consistency: browser claims checked against what that browser always sends."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.signals.headers import header_problems

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
          "Gecko) Version/17.4 Safari/605.1.15")
# the shape of the navigation real Chromium sends (tests/fixtures/clients/chromium.json)
REAL_CHROME_PAGE = {
    "Accept": "text/html,application/xhtml+xml", "Accept-Encoding": "gzip, deflate, br, zstd",
    "Accept-Language": "en-GB,en;q=0.9", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document",
    "Sec-CH-UA": '"Chromium";v="131", "Not_A Brand";v="24"', "Upgrade-Insecure-Requests": "1",
}
REAL_CHROME_AUDIO = {
    "Accept": "*/*", "Accept-Encoding": "identity;q=1, *;q=0", "Accept-Language": "en-GB",
    "Range": "bytes=0-", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "audio",
    "Sec-CH-UA": '"Chromium";v="131"',
}
WGET = {"Accept": "*/*", "Accept-Encoding": "identity", "Connection": "Keep-Alive"}
SCRAPY = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
          "Accept-Language": "en", "Accept-Encoding": "gzip, deflate, br"}
AIOHTTP = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate"}


def check(ua: str, headers: dict[str, str], scheme: str = "https", host: str = "store.example"):
    return header_problems("browser", ua, CIMultiDict(headers), scheme, host)


@pytest.mark.parametrize("headers", [REAL_CHROME_PAGE, REAL_CHROME_AUDIO])
def test_real_chrome_is_consistent(headers):
    assert check(CHROME, headers) == ()


def test_firefox_and_safari_send_no_client_hints_and_need_none():
    firefox = {k: v for k, v in REAL_CHROME_PAGE.items() if k != "Sec-CH-UA"}
    assert check(FIREFOX, firefox) == ()
    assert check(SAFARI, firefox) == ()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (WGET, ("no-accept-language", "no-sec-fetch", "no-client-hints", "tool-headers")),
        (SCRAPY, ("no-sec-fetch", "no-client-hints")),
        (AIOHTTP, ("no-accept-language", "no-sec-fetch", "no-client-hints")),
        ({}, ("no-accept-language", "no-accept-encoding", "no-sec-fetch", "no-client-hints")),
    ],
)
def test_tools_with_a_chrome_user_agent(headers, expected):
    assert check(CHROME, headers) == expected


def test_plain_http_to_a_remote_host_expects_no_sec_fetch_or_hints():
    # browsers send Sec-Fetch-* and client hints only to secure origins (loopback is one)
    plain = {k: v for k, v in REAL_CHROME_PAGE.items() if not k.startswith("Sec-")}
    assert check(CHROME, plain, scheme="http", host="store.example") == ()
    assert check(CHROME, plain, scheme="http", host="127.0.0.1:8080") == (
        "no-sec-fetch", "no-client-hints")


def test_a_chromium_navigation_without_upgrade_insecure_requests():
    """Every navigation real Chromium makes carries Upgrade-Insecure-Requests: 1; a tool that
    copies Chrome's navigation headers but not that one, and no client hints, is two
    problems: contradicted."""
    copied = {k: v for k, v in REAL_CHROME_PAGE.items()
              if k not in ("Upgrade-Insecure-Requests", "Sec-CH-UA")}
    assert check(CHROME, copied) == ("no-client-hints", "no-upgrade-insecure")
    assert check(FIREFOX, copied) == ()  # not measured over https: not asked of Firefox


def test_only_browser_claims_are_checked():
    assert header_problems("http-library", "curl/8.0", CIMultiDict(), "https", "x") == ()
