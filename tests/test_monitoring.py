"""The shipped monitoring, against a real Prometheus.

A real Prometheus (Debian's `prometheus`, on loopback, a temporary data folder) scrapes a
running SonicShield every second while listeners and crawlers use the demo store through it.
Then every query of every Grafana panel must return data, and every alert expression must be
silent before its scenario and fire after it. `promtool` checks the shipped files, and the
dashboards are checked against Grafana's dashboard model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from proxy.demo.catalogue import CATALOGUE
from proxy.demo.store import build_store_app

from .conftest import ROOT, RULES_DIR, free_port

DEPLOY = ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
TOKEN = "monitoring-test-token-0123456789"
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 "
                         "Firefox/133.0", "Accept-Language": "en", "Accept": "text/html",
           "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
GPTBOT = {"User-Agent": "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)"}
WGET = {"User-Agent": "Wget/1.21.3"}
# the operator's own rule, for this test: download tools get the real audio (the shipped
# rules give them a preview), which the real-audio-to-crawlers alert is there to notice
ALLOW_WGET = """version: 1
rules:
  - name: wget-gets-audio
    match: {content: audio, agent: Wget}
    action: allow
"""


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expression) for every target of every panel."""
    out = []
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        for p in d["panels"]:
            out += [(path.name, p["title"], t["expr"]) for t in p["targets"]]
    return out


def alert_rules() -> dict[str, str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def test_promtool_accepts_the_config_and_the_rules():
    for args in (["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                 ["check", "rules", str(ALERTS)]):
        out = subprocess.run(["promtool", *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_dashboards_follow_grafanas_model():
    sources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {s["uid"] for s in sources["datasources"]}
    assert len(DASHBOARDS) == 2
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        assert isinstance(d["schemaVersion"], int), path.name
        assert d["schemaVersion"] >= 36, path.name
        assert d["uid"], path.name
        assert d["title"], path.name
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for p in d["panels"]:
            where = f"{path.name}: {p['title']}"
            assert {"x", "y", "w", "h"} <= set(p["gridPos"]), where
            assert p["datasource"] == {"type": "prometheus", "uid": p["datasource"]["uid"]}
            assert p["datasource"]["uid"] in uids, where
            assert p["targets"], f"{where}: no query"
            for t in p["targets"]:
                assert t["expr"].strip(), where
                assert t["refId"], where
                assert t["datasource"]["uid"] in uids, where


class Prometheus:
    def __init__(self, tmp: Path, admin: str) -> None:
        config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(ALERTS)]
        config["scrape_configs"][0]["static_configs"] = [{"targets": [admin]}]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    async def query(self, s: aiohttp.ClientSession, expr: str, at: float) -> list[Any]:
        async with s.get(self.url + "/api/v1/query", params={"query": expr,
                                                            "time": f"{at:.3f}"}) as r:
            body = await r.json()
        assert body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    async def wait_until(self, s: aiohttp.ClientSession, expr: str, within: float = 30.0) -> float:
        """Poll until `expr` has a result (each poll also waits for the next scrape)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if await self.query(s, expr, time.time()):
                    return time.time()
            except aiohttp.ClientError:
                pass  # not listening yet
            await asyncio.sleep(0.25)
        parts = {part: await self.query(s, part, time.time()) for part in expr.split(" and ")}
        raise TimeoutError(f"no result for {expr} after {within} s: {parts}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


@pytest.fixture
def prometheus_binary() -> None:
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        pytest.fail("prometheus is required (apt-get install prometheus); make test installs it")


async def test_every_panel_has_data_and_every_alert_fires_only_in_its_scenario(
        prometheus_binary, aiohttp_server, spawn_proxy, media_dir, tmp_path):
    store_app = build_store_app(media_dir)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2.5)
        return web.Response(text="slow page")

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="too late")

    store_app.router.add_get("/slow", slow)
    store_app.router.add_get("/hang", hang)
    store = await aiohttp_server(store_app)
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    (rules / "25-wget.yaml").write_text(ALLOW_WGET)
    evidence = tmp_path / "evidence"
    proxy = spawn_proxy(
        f"http://127.0.0.1:{store.port}", admin=True, admin_token=TOKEN, rules_dir=rules,
        extra=f"audio:\n  cache_dir: {tmp_path / 'variants'}\n  max_jobs: 1\n"
              f"evidence:\n  dir: {evidence}\n  rotate_bytes: 65536\n"
              "timeouts:\n  upstream_response: 4\n"
              "log:\n  access_log: false\n")
    admin = f"127.0.0.1:{proxy.admin_port}"
    prom = Prometheus(tmp_path, admin)
    tracks = [t.slug for _, t in CATALOGUE.tracks()]
    try:
        async with aiohttp.ClientSession() as s:
            # before: a listener, and Prometheus has scraped it a few times
            await listener(s, proxy.url, tracks[0])
            await prom.wait_until(s, 'count_over_time(up{job="sonicshield"}[1m]) >= 3')
            before = await prom.wait_until(s, "sum(sonicshield_requests_total) > 0")
            started = before - 5

            await listener(s, proxy.url, tracks[1])
            await crawlers(s, proxy.url, tracks)
            # a rule file broken, and a reload asked for: refused, the old rules stay
            (rules / "26-broken.yaml").write_text("version: 1\nrules: [\n")
            async with s.post(f"http://{admin}/rules/reload",
                              headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 422 or r.status >= 400
            # the evidence folder taken away: the writer loses what it cannot write (its open
            # file fills to evidence.rotate_bytes, then there is no folder for the next)
            evidence.rename(tmp_path / "evidence-gone")
            for _ in range(300):
                async with s.head(f"{proxy.url}/stream/{tracks[0]}.mp3", headers=GPTBOT) as r:
                    assert r.status == 200
            # a slow store, then one that does not answer at all
            await asyncio.gather(*(get(s, proxy.url + "/slow", BROWSER) for _ in range(4)))
            assert await get(s, proxy.url + "/hang", BROWSER) == 504
            # and then the store goes away: the health probe sees it with no request passing
            await store.close()
            after = await prom.wait_until(
                s, 'sum(increase(sonicshield_evidence_dropped_total[5m])) > 0 and '
                   'min(sonicshield_upstream_up) == 0 and '
                   'sum(increase(sonicshield_rule_reloads_total{result="failed"}[5m])) > 0')

            # every panel's query returns data
            span = f"{int(after - started) + 5}s"
            empty = []
            for board, title, expr in panel_queries():
                q = expr.replace("$__rate_interval", "1m").replace("$__range", span)
                if not await prom.query(s, q, after):
                    empty.append(f"{board}: {title}: {q}")
            assert not empty, "panels without data:\n" + "\n".join(empty)

            # every alert: silent before, firing after (SonicShieldDown: once the proxy stops)
            rules_ = alert_rules()
            for name, expr in rules_.items():
                assert await prom.query(s, expr, before) == [], f"{name} fired before"
            proxy.stop()
            down = await prom.wait_until(s, 'up{job="sonicshield"} == 0')
            for name, expr in rules_.items():
                at = down if name == "SonicShieldDown" else after
                assert await prom.query(s, expr, at), f"{name} did not fire"
    finally:
        prom.stop()


async def get(s: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    async with s.get(url, headers=headers) as r:
        await r.read()
        return r.status


async def listener(s: aiohttp.ClientSession, base: str, track: str) -> None:
    """A fan: the track's page, its player's audio in ranges, with the page as Referer."""
    assert await get(s, f"{base}/track/{track}", BROWSER) == 200
    audio = {**BROWSER, "Referer": f"{base}/track/{track}", "Range": "bytes=0-65535",
             "Accept": "*/*", "Sec-Fetch-Dest": "audio", "Sec-Fetch-Mode": "no-cors"}
    assert await get(s, f"{base}/stream/{track}.mp3", audio) == 206


async def crawlers(s: aiohttp.ClientSession, base: str, tracks: list[str]) -> None:
    # GPTBot reads robots.txt, takes a track (a decoy, made now), then sweeps it 700 times
    assert await get(s, f"{base}/robots.txt", GPTBOT) == 200
    assert await get(s, f"{base}/stream/{tracks[0]}.mp3", GPTBOT) == 200
    for _ in range(700):
        async with s.head(f"{base}/stream/{tracks[0]}.mp3", headers=GPTBOT) as r:
            assert r.status == 200
    # three new tracks at once with one codec job allowed: two get the cheaper 403
    statuses = await asyncio.gather(*(get(s, f"{base}/stream/{t}.mp3", GPTBOT)
                                      for t in tracks[1:4]))
    assert sorted(statuses) == [200, 403, 403]
    # a download tool the operator lets take real audio, then, from an address of its own,
    # the hidden trap link (a trapped client's pages are tarpitted: it is not waited for)
    assert await get(s, f"{base}/stream/{tracks[4]}.mp3", WGET) == 200
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.9", 0))
    async with aiohttp.ClientSession(connector=connector) as trapped:
        with contextlib.suppress(TimeoutError):
            async with trapped.get(f"{base}/archive-complete/", headers=WGET,
                                   timeout=aiohttp.ClientTimeout(total=0.5)) as r:
                await r.read()
