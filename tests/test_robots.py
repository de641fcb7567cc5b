"""robots.txt: the canonical file for everyone, never blocked, and compliance per client."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.robots import build_canonical
from proxy.rules import LiveRules, load_rules

from .conftest import RULES_DIR, proxy_settings

GPTBOT = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2)"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
STORE_ROBOTS = "User-agent: *\nDisallow: /cart\n\nSitemap: http://store.example/sitemap.xml\n"


def store_app(robots_status: int = 200) -> web.Application:
    async def robots(_: web.Request) -> web.Response:
        return web.Response(text=STORE_ROBOTS, status=robots_status)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"page {request.path}")

    app = web.Application()
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/{tail:.*}", page)
    return app


def rules_with(tmp_path: Path, text: str) -> Path:
    """The shipped agent lists and robots.txt policy, with the test's own rules only."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR / "agents", rules / "agents")
    shutil.copy(RULES_DIR / "robots.yaml", rules / "robots.yaml")
    (rules / "10-test.yaml").write_text(text)
    return rules


async def get(base: str, path: str, ua: str, client: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as s, s.get(
        base + path, headers={"User-Agent": ua, "X-Forwarded-For": client}
    ) as r:
        await r.read()
        return r


@pytest.fixture
async def proxy(aiohttp_server, run_proxy, tmp_path):
    async def start(rules_text: str, robots_status: int = 200) -> str:
        upstream = await aiohttp_server(store_app(robots_status))
        rules = rules_with(tmp_path, rules_text)
        settings = proxy_settings(
            f"http://127.0.0.1:{upstream.port}", verdict_header=True, rules_dir=rules,
            # the test plays several clients through a trusted front proxy on loopback
            trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
        )
        return await run_proxy(settings, LiveRules(load_rules(rules)))

    return start


BLOCK_EVERYTHING = """version: 1
rules:
  - name: nothing-for-anyone
    match: {}
    action: block
"""


async def test_canonical_robots_is_served_to_everyone_even_when_everything_is_blocked(proxy):
    base = await proxy(BLOCK_EVERYTHING)
    r = await get(base, "/robots.txt", GPTBOT, "203.0.113.1")
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    async with aiohttp.ClientSession() as s, s.get(base + "/robots.txt") as resp:
        text = await resp.text()
    # one group for everyone: the trap path first, then the store's own rules
    assert text.startswith("User-agent: *\nDisallow: /archive-complete/\nDisallow: /cart\n")
    assert text.count("User-agent: *") == 1
    ai_section = text[text.index("# SonicShield"):]
    for agent in ("GPTBot", "ClaudeBot", "CCBot", "Bytespider", "meta-externalagent"):
        assert f"\nuser-agent: {agent.lower()}\n" in ai_section.lower()
    assert "User-agent: PerplexityBot" not in ai_section  # search purpose: not reserved
    assert "User-agent: *\nDisallow: /\n" not in text  # never the whole site for everyone
    assert text.endswith("Disallow: /\n\nSitemap: http://store.example/sitemap.xml\n")
    assert build_canonical(text, []).allows("/album/first-light", "Mozilla/5.0")
    assert not build_canonical(text, []).allows("/archive-complete/all-tracks", "Mozilla/5.0")
    # declarations are never blocked; ordinary pages are
    assert (await get(base, "/.well-known/tdmrep.json", GPTBOT, "203.0.113.1")).status == 200
    assert (await get(base, "/album/x", CHROME, "203.0.113.1")).status == 403


COMPLIANCE_RULES = """version: 1
rules:
  - name: read-then-ignored
    match: {robots: violated-after-reading}
    action: block
  - name: never-read
    match: {robots: violated-without-reading}
    action: block
  - name: read-and-obeyed
    match: {robots: compliant}
    action: allow
  - name: not-yet-read
    match: {robots: unseen}
    action: allow
"""


async def test_compliance_states_per_client(proxy):
    base = await proxy(COMPLIANCE_RULES)

    def origin(r: aiohttp.ClientResponse) -> str:
        return r.headers["X-SonicShield-Verdict"].rsplit(" ", 1)[1]

    # a declared AI crawler that reads robots.txt, then takes a disallowed page
    assert (await get(base, "/robots.txt", GPTBOT, "203.0.113.1")).status == 200
    r = await get(base, "/album/first-light", GPTBOT, "203.0.113.1")
    assert (r.status, origin(r)) == (403, "read-then-ignored")
    # the same crawler from an address that never read it
    r = await get(base, "/album/first-light", GPTBOT, "203.0.113.2")
    assert (r.status, origin(r)) == (403, "never-read")
    # a violation is remembered: reading robots.txt afterwards does not wash it off
    await get(base, "/robots.txt", GPTBOT, "203.0.113.2")
    assert origin(await get(base, "/", GPTBOT, "203.0.113.2")) == "never-read"
    # a listener's browser never reads robots.txt and is never in violation
    r = await get(base, "/album/first-light", CHROME, "203.0.113.3")
    assert (r.status, origin(r)) == (200, "not-yet-read")
    # a search engine reads it and keeps to it, until it fetches the store's disallowed /cart
    await get(base, "/robots.txt", GOOGLEBOT, "203.0.113.4")
    assert origin(await get(base, "/album/first-light", GOOGLEBOT, "203.0.113.4")) == (
        "read-and-obeyed")
    assert origin(await get(base, "/cart", GOOGLEBOT, "203.0.113.4")) == "read-then-ignored"


async def test_store_without_robots_txt_gets_the_trap_and_ai_sections_alone(proxy):
    base = await proxy(COMPLIANCE_RULES, robots_status=404)
    async with aiohttp.ClientSession() as s, s.get(base + "/robots.txt") as r:
        text = await r.text()
    assert text.startswith(
        "User-agent: *\nDisallow: /archive-complete/\n\n# SonicShield: the artist")
    assert "User-agent: GPTBot\n" in text


def test_policy_errors_name_file_and_line(tmp_path: Path):
    rules = rules_with(tmp_path, BLOCK_EVERYTHING)
    (rules / "robots.yaml").write_text(
        "version: 1\ndisallow_ai_purposes: [training, trainin]\ndisalow_agents: [x]\n")
    from proxy.yamlsource import ConfigError

    with pytest.raises(ConfigError) as exc:
        load_rules(rules)
    assert [str(p) for p in exc.value.problems] == [
        "rules/robots.yaml:2:23: unknown purpose 'trainin' (did you mean 'training'?)",
        "rules/robots.yaml:3:1: unknown key 'disalow_agents' (did you mean 'disallow_agents'?)",
    ]


def test_policy_can_never_produce_a_global_disallow(tmp_path: Path):
    robots = build_canonical("", ["*", "GPTBot"])
    assert "User-agent: *" not in robots.text
    assert robots.allows("/album/x", "Mozilla/5.0")
    assert not robots.allows("/album/x", "GPTBot")
    rules = rules_with(tmp_path, BLOCK_EVERYTHING)
    (rules / "robots.yaml").write_text('version: 1\ndisallow_agents: ["*"]\n')
    from proxy.yamlsource import ConfigError

    with pytest.raises(ConfigError) as exc:
        load_rules(rules)
    assert [str(p) for p in exc.value.problems] == [
        "rules/robots.yaml:2:18: '*' is not an agent token (letters, digits, '-', '_', '.'); "
        "SonicShield never writes a `User-agent: *` group"
    ]


BEHAVIOUR_RULES = """version: 1
rules:
  - name: acts-like-a-crawler
    match: {content: audio, behaviour_score: 0.5}
    action: block
"""


async def test_rotating_crawler_is_stopped_at_its_third_track_and_a_listener_never(proxy):
    """Its second address of the /24 raises the context flags (one kind: weak, as two
    colleagues opening a shared link would); the third ties the network together."""
    base = await proxy(BEHAVIOUR_RULES)
    tracks = ["harbour-at-dawn", "salt-and-cedar", "low-tide-lanterns", "moth-waltz"]
    crawler = [await get(base, f"/stream/{t}.mp3", CHROME, f"127.0.0.{2 + i}")
               for i, t in enumerate(tracks)]
    assert [r.status for r in crawler] == [200, 200, 403, 403]
    # a listener with the same browser: page first, then the player's ranged reads
    async with aiohttp.ClientSession() as s:
        headers = {"User-Agent": CHROME, "X-Forwarded-For": "198.51.100.20",
                   "Accept-Language": "en-GB"}
        async with s.get(base + "/album/first-light", headers=headers) as r:
            assert r.status == 200
        for t in tracks:
            async with s.get(base + f"/stream/{t}.mp3", headers={
                **headers, "Range": "bytes=0-", "Referer": f"{base}/album/first-light"}) as r:
                assert r.status == 200, r.headers.get("X-SonicShield-Verdict")


async def test_global_shadow_mode_serves_the_real_thing_and_says_what_it_would_do(
    aiohttp_server, run_proxy, tmp_path
):
    upstream = await aiohttp_server(store_app())
    rules = rules_with(tmp_path, BLOCK_EVERYTHING)
    settings = proxy_settings(f"http://127.0.0.1:{upstream.port}", verdict_header=True,
                              rules_dir=rules, shadow=True)
    base = await run_proxy(settings, LiveRules(load_rules(rules)))
    r = await get(base, "/album/x", GPTBOT, "203.0.113.1")
    assert r.status == 200
    assert r.headers["X-SonicShield-Verdict"] == (
        "block shadow; rules/10-test.yaml:3 nothing-for-anyone")
