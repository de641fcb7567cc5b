"""The per-client verdict cache: a client's repeat request reuses its verdict only while
nothing that verdict reads can have changed, and is still counted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import generate_latest

from proxy.app import build_app
from proxy.app_keys import METRICS, TRACKER, VERDICTS
from proxy.classify import VerdictCache
from proxy.clientip import client_key
from proxy.exchange import Action, Client, Exchange, Signals, Verdict
from proxy.explain import Judge, RequestSpec
from proxy.rules import load_rules
from proxy.signals.behaviour import BehaviourTracker
from proxy.state import PAGES, REQ, ClientStore

from .conftest import RULES_DIR, metric_sum, proxy_settings, shipped_rules

CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
LISTENER = {"User-Agent": CHROME, "Accept-Language": "en", "Accept-Encoding": "gzip",
            "Sec-Fetch-Mode": "navigate"}
GPTBOT = {"User-Agent": "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)"}


class Proxy:
    """classify and decide as the handler runs them, behind a VerdictCache."""

    def __init__(self, store: ClientStore | None = None, capacity: int = 64) -> None:
        self.ruleset = shipped_rules().current
        self.judge = Judge(self.ruleset)
        if store is not None:
            self.judge.tracker = BehaviourTracker(store)
        self.store = self.judge.tracker.store
        self.cache = VerdictCache(self.store, self.judge.asn_db, capacity)

    def ask(self, path: str, headers: dict[str, str], ip: str = "192.0.2.7",
            now: float = 100.0) -> tuple[Verdict, bool]:
        """The verdict, and whether it came from the cache."""
        ex = Exchange(id="t", client=Client(ip, ip, False, "https", "store.example",
                                            client_key(ip, CIMultiDict(headers))),
                      method="GET", path=path, query="")
        ua = headers.get("User-Agent", "")
        hit = self.cache.lookup(ex, ua, self.ruleset, now)
        if hit is not None:
            return hit[1], True
        ex = self.judge.judge(RequestSpec("GET", path, CIMultiDict(headers), ip), now)
        self.cache.remember(ex, ua, self.ruleset, now)
        return ex.verdict, False


def key(headers: dict[str, str], ip: str = "192.0.2.7") -> str:
    """The client store's key of a client sending `headers` from `ip`."""
    return client_key(ip, CIMultiDict(headers))


def origin(verdict: Verdict) -> str:
    return verdict.origin.rsplit(" ", 1)[-1]


def test_a_listeners_repeat_requests_reuse_the_verdict():
    p = Proxy()
    first, cached = p.ask("/album/first-light", LISTENER)
    assert (first.action, cached) == (Action.ALLOW, False)
    again, cached = p.ask("/artist", LISTENER)
    assert (again, cached) == (first, True)
    # another content kind whose rules read only facts of the client: decided from them
    image, cached = p.ask("/cover/a.png", LISTENER)
    assert (image.action, cached) == (Action.ALLOW, True)
    # audio rules read the request's headers and the behaviour counters: never reused
    assert p.ask("/stream/a.mp3", {**LISTENER, "Range": "bytes=0-"})[1] is False
    assert p.ask("/stream/a.mp3", {**LISTENER, "Range": "bytes=0-"})[1] is False
    # another address, or another User-Agent from the same address, is another client
    assert p.ask("/artist", LISTENER, ip="192.0.2.8")[1] is False
    assert p.ask("/artist", {**LISTENER, "User-Agent": CHROME + " Edg/131.0"})[1] is False


def test_a_trap_hit_ends_the_reuse():
    p = Proxy()
    assert p.ask("/artist", LISTENER)[0].action is Action.ALLOW
    assert p.ask("/artist", LISTENER)[1] is True
    p.store.trap_hit(p.store.row(key(LISTENER), 100.0), time.time())
    verdict, cached = p.ask("/artist", LISTENER)
    assert (verdict.action, origin(verdict), cached) == (Action.TARPIT, "trapped-pages", False)


def test_a_robots_txt_read_ends_the_reuse():
    p = Proxy()
    verdict, _ = p.ask("/stream/a.mp3", GPTBOT)
    assert (verdict.action, origin(verdict)) == (Action.DECOY, "ai-crawler-audio")
    assert p.ask("/stream/b.mp3", GPTBOT)[1] is True
    p.store.robots_read(p.store.row(key(GPTBOT), 100.0), time.time())
    assert p.ask("/stream/b.mp3", GPTBOT)[1] is False
    # a bucket that reads the robots.txt state is judged on every request
    verdict, _ = p.ask("/album/first-light", GPTBOT)
    assert (verdict.action, origin(verdict)) == (Action.TARPIT, "ai-crawler-ignores-robots")
    assert p.ask("/album/first-light", GPTBOT)[1] is False


def test_eviction_of_the_clients_row_ends_the_reuse():
    p = Proxy(ClientStore(1000, seed=1))
    p.ask("/artist", LISTENER, now=1.0)
    assert p.ask("/artist", LISTENER, now=1.0)[1] is True
    for i in range(20_000):  # a flood of new addresses pushes the listener's row out
        p.store.row(f"i:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 2.0)
    assert p.store.find(key(LISTENER)) == -1
    assert p.ask("/artist", LISTENER, now=3.0)[1] is False


def test_a_rule_reload_and_time_end_the_reuse():
    p = Proxy()
    p.ask("/artist", LISTENER, now=100.0)
    assert p.ask("/artist", LISTENER, now=100.0 + p.cache.ttl)[1] is True
    assert p.ask("/artist", LISTENER, now=100.1 + p.cache.ttl)[1] is False  # too old
    p.ask("/artist", LISTENER, now=200.0)
    p.ruleset = load_rules(RULES_DIR)  # what a reload swaps in
    assert p.ask("/artist", LISTENER, now=200.0)[1] is False


def test_a_change_made_by_another_worker_ends_the_reuse(tmp_path: Path):
    ClientStore.create(tmp_path / "clients", 1000)
    mine, other = (ClientStore.attach(tmp_path / "clients") for _ in range(2))
    p = Proxy(mine)
    p.ask("/artist", LISTENER)
    assert p.ask("/artist", LISTENER)[1] is True
    other.trap_hit(other.row(key(LISTENER), 100.0), time.time())  # the trap, on another worker
    verdict, cached = p.ask("/artist", LISTENER)
    assert (origin(verdict), cached) == ("trapped-pages", False)


def test_the_cache_holds_at_most_its_capacity():
    p = Proxy(capacity=4)
    for i in range(10):
        p.ask("/artist", LISTENER, ip=f"192.0.2.{i}")
    assert len(p.cache) == 4
    assert p.ask("/artist", LISTENER, ip="192.0.2.9")[1] is True  # the newest are kept
    assert p.ask("/artist", LISTENER, ip="192.0.2.0")[1] is False


def test_no_capacity_no_cache():
    p = Proxy(capacity=0)
    p.ask("/artist", LISTENER)
    assert p.ask("/artist", LISTENER)[1] is False
    assert len(p.cache) == 0


async def proxied(aiohttp_client) -> tuple[web.Application, Any]:
    """The proxy app with the shipped rules in front of a store of HTML pages, and a client."""
    async def store(_: web.Request) -> web.Response:
        return web.Response(text="<p>page</p>", content_type="text/html")

    upstream = web.Application()
    upstream.router.add_get("/{tail:.*}", store)
    up = await aiohttp_client(upstream)
    app = build_app(proxy_settings(str(up.make_url("")).rstrip("/"), rules_dir=RULES_DIR),
                    shipped_rules())
    return app, await aiohttp_client(app)


async def test_requests_answered_from_the_cache_are_still_counted(aiohttp_client):
    app, client = await proxied(aiohttp_client)
    for i in range(30):
        async with client.get(f"/album/{i}", headers=LISTENER) as r:
            assert r.status == 200
            await r.read()
    verdicts, store_ = app[VERDICTS], app[TRACKER].store
    assert (verdicts.lookups, verdicts.hits) == (30, 29)
    row = store_.find(key(LISTENER, "127.0.0.1"))
    assert abs(store_.value(row, PAGES) - 30) < 0.1  # every page, the 29 reused ones too
    assert abs(store_.value(row, REQ) - 30) < 0.5


def test_the_signals_of_a_reused_verdict_are_the_clients():
    p = Proxy()
    p.ask("/artist", GPTBOT)  # a page: judged (the rules read its robots.txt state)
    ex = Exchange(id="t", client=Client("192.0.2.7", "192.0.2.7", False, "https", "s",
                                        key(GPTBOT)),
                  method="GET", path="/stream/a.mp3", query="")
    assert p.cache.lookup(ex, GPTBOT["User-Agent"], p.ruleset, 100.0) is None
    p.ask("/stream/a.mp3", GPTBOT)
    hit = p.cache.lookup(ex, GPTBOT["User-Agent"], p.ruleset, 100.0)
    assert hit is not None
    signals: Signals = hit[0]
    assert (signals.content.value, signals.ua_class, signals.agent, signals.operator) == (
        "audio", "ai-crawler", "GPTBot", "OpenAI")
    assert signals.robots == "violated-without-reading"  # the page it took before


async def test_the_verdict_cache_counts_are_exported(aiohttp_client):
    app, client = await proxied(aiohttp_client)
    for _ in range(5):
        async with client.get("/artist", headers=LISTENER) as r:
            await r.read()
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = generate_latest(app[METRICS].registry).decode()
        if metric_sum(text, "sonicshield_verdict_cache_lookups_total", result="hit") == 4:
            break
        await asyncio.sleep(0.1)
    assert metric_sum(text, "sonicshield_verdict_cache_lookups_total", result="hit") == 4
    assert metric_sum(text, "sonicshield_verdict_cache_lookups_total", result="miss") == 1
