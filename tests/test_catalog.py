"""`sonicshield catalog build`: the store's audio found through its sitemap and feed, every
variant the rules can give made ahead, then served from the cache."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from proxy.catalog import actions_for, build
from proxy.cli import main
from proxy.demo.store import build_store_app
from proxy.exchange import Action
from proxy.rules import LiveRules, load_rules
from proxy.settings import AudioSettings

from .conftest import RULES_DIR, proxy_settings

RULES = """version: 1
rules:
  - name: preview-streams
    match: {content: audio, path: /stream/*}
    action: truncate
    params: {seconds: 10}
  - name: rest
    match: {}
    action: allow
"""


async def test_variants_are_made_ahead_and_served_from_the_cache(
        media_dir, aiohttp_server, run_proxy, tmp_path):
    seen: list[str] = []

    @web.middleware
    async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
        seen.append(f"{request.method} {request.path}")
        return await handler(request)

    store = build_store_app(media_dir)
    store.middlewares.append(count)
    upstream = await aiohttp_server(store)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10.yaml").write_text(RULES)
    ruleset = load_rules(rules)
    assert actions_for(ruleset, "/stream/moth-waltz.mp3") == [
        (Action.TRUNCATE, (("seconds", 10),))]
    assert actions_for(ruleset, "/download/moth-waltz.flac") == []
    settings = proxy_settings(f"http://127.0.0.1:{upstream.port}", rules_dir=rules,
                              audio=AudioSettings(cache_dir=tmp_path / "v", workers=2))
    done, failed = await build(settings, ruleset, None, 50)
    assert (done, failed) == (6, 0)  # the demo store's six streams, found via sitemap/feed
    made = sorted(p for p in seen if p.startswith("GET /stream/"))
    assert len(made) == 6
    again = await build(settings, ruleset, None, 50)  # a second run finds them all cached
    assert again == (6, 0)
    assert sorted(p for p in seen if p.startswith("GET /stream/")) == made
    seen.clear()
    base = await run_proxy(settings, LiveRules(ruleset))
    async with aiohttp.ClientSession() as s, s.get(base + "/stream/moth-waltz.mp3") as r:
        assert r.status == 200
        assert len(await r.read()) < (media_dir / "moth-waltz.mp3").stat().st_size / 3
    # served from the cache: the store is asked only whether the track changed
    assert [p for p in seen if "/stream/" in p] == ["HEAD /stream/moth-waltz.mp3"]


def test_catalog_build_reports_bad_input(tmp_path: Path, capsys):
    config = tmp_path / "sonicshield.yaml"
    config.write_text("upstream: {url: 'http://127.0.0.1:9'}\nworkers: nine\n")
    assert main(["catalog", "build", "--config", str(config)]) == 2
    assert "'workers' must be an integer" in capsys.readouterr().err
    config.write_text(f"upstream: {{url: 'http://127.0.0.1:9'}}\nrules_dir: {RULES_DIR}\n")
    assert main(["catalog", "build", "--config", str(config), "--urls",
                 str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err
