"""`sonicshield audit`: the demo store alone scores poorly, behind SonicShield's shipped rules
well, and a misconfigured deployment has each of its mistakes named with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from proxy.audit import render
from proxy.audit.checks import Audit, run_audit
from proxy.cli import main
from proxy.demo.store import build_store_app

from .conftest import PASSTHROUGH_RULES, RULES_DIR, proxy_settings, shipped_rules

FAST = {"max_requests": 60, "rate": 50.0, "request_timeout": 60.0}


def finding(audit: Audit, key: str):
    found = [f for f in audit.findings if f.key == key]
    assert len(found) == 1, (key, [f.key for f in audit.findings])
    return found[0]


def received(audit: Audit) -> dict[str, str]:
    return {p.who: p.received for p in audit.probes}


async def test_the_demo_store_alone_is_exposed(aiohttp_server, media_dir):
    store = await aiohttp_server(build_store_app(media_dir))
    audit = await run_audit(f"http://127.0.0.1:{store.port}", **FAST)
    assert audit.score < 40
    assert received(audit) == {"listener": "real", "disguised crawler": "real",
                               "declared AI crawler": "real"}
    assert not finding(audit, "robots-ai-coverage").ok  # the shop's robots.txt has no AI lines
    assert finding(audit, "robots-ai-coverage").title.startswith("robots.txt keeps 0 of ")
    assert finding(audit, "robots-global-disallow").ok
    assert finding(audit, "robots-valid").ok
    for key in ("tdmrep", "ai-txt", "headers-pages", "headers-audio", "robots-signals",
                "lossless-exposed", "probe-disguised-crawler", "probe-declared-AI-crawler"):
        assert not finding(audit, key).ok, key
    assert any(u.endswith(".flac") for u in audit.audio_found)  # found through the pages
    assert audit.requests <= FAST["max_requests"]
    # the three most important fixes first: the real recording given to both crawlers
    assert [f.key for f in audit.fixes()[:2]] == ["probe-disguised-crawler",
                                                   "probe-declared-AI-crawler"]


async def test_behind_sonicshield_the_shipped_rules_score_well(aiohttp_server, run_proxy,
                                                               media_dir):
    store = await aiohttp_server(build_store_app(media_dir))
    proxy = await run_proxy(proxy_settings(f"http://127.0.0.1:{store.port}",
                                           rules_dir=RULES_DIR), shipped_rules())
    audit = await run_audit(proxy, **FAST)
    assert audit.score >= 85, render.text(audit)
    got = received(audit)
    assert got["listener"] == "real"
    assert got["disguised crawler"] == "decoy"
    assert got["declared AI crawler"] == "decoy"
    for key in ("robots-ai-coverage", "robots-global-disallow", "robots-valid", "robots-signals",
                "tdmrep", "ai-txt", "headers-pages", "headers-audio", "lossless-exposed"):
        assert finding(audit, key).ok, (key, finding(audit, key).detail)


async def test_a_misconfigured_deployment_has_each_mistake_named_with_its_fix(
        aiohttp_server, run_proxy, media_dir):
    """SonicShield in front of a store whose robots.txt shuts out everyone, with rules that
    let everything through and no rights file: no headers, real audio to every crawler."""
    track = next(p for p in sorted(media_dir.iterdir()) if p.suffix == ".mp3")

    async def home(_: web.Request) -> web.Response:
        return web.Response(text=f'<html><body><a href="/t/{track.name}">play</a></body></html>',
                            content_type="text/html")

    async def robots(_: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nDisallow: /\n")

    async def audio(_: web.Request) -> web.FileResponse:
        return web.FileResponse(track)

    app = web.Application()
    app.router.add_get("/", home)
    app.router.add_get("/robots.txt", robots)
    app.router.add_get(f"/t/{track.name}", audio)
    store = await aiohttp_server(app)
    proxy = await run_proxy(proxy_settings(f"http://127.0.0.1:{store.port}",
                                           rules_dir=PASSTHROUGH_RULES))
    audit = await run_audit(proxy, **FAST)
    assert audit.score < 60
    everyone = finding(audit, "robots-global-disallow")
    assert not everyone.ok
    assert "rules/robots.yaml" in everyone.fix
    for key in ("headers-audio", "headers-pages", "tdmrep"):
        assert not finding(audit, key).ok
        assert "rules/rights.yaml" in finding(audit, key).fix
    disguised = finding(audit, "probe-disguised-crawler")
    assert not disguised.ok
    assert disguised.title == "A disguised crawler received the real recording"
    assert "fake-browser-audio" in disguised.fix
    assert "ai-crawler-audio" in finding(audit, "probe-declared-AI-crawler").fix
    # each failed finding comes with its fix, the costliest first
    weights = [f.weight for f in audit.fixes()]
    assert weights == sorted(weights, reverse=True)
    assert all(f.fix for f in audit.findings if not f.ok)


async def test_reports_as_text_json_and_html(aiohttp_server, media_dir, tmp_path, capsys):
    store = await aiohttp_server(build_store_app(media_dir))
    audit = await run_audit(f"http://127.0.0.1:{store.port}", **FAST)
    text = render.text(audit)
    assert text.startswith(f"Sonic-Sovereignty audit of http://127.0.0.1:{store.port}\n"
                           f"score {audit.score}/100: ")
    assert "Fix first:\n  1. A disguised crawler received the real recording (-20)\n" in text
    assert "Chrome's User-Agent" in text  # the disguised probe is disclosed
    data = json.loads(render.as_json(audit))
    assert data["score"] == audit.score
    assert len(data["top_fixes"]) == 3
    page = render.html(audit)
    assert page.startswith("<!doctype html>")
    assert f'<span class="score">{audit.score}</span>' in page
    assert "<script" not in page


@pytest.mark.parametrize(("argv", "error"), [
    (["--rate", "0"], "argument --rate: must be above 0 and at most 20"),
    (["--max-requests", "many"], "argument --max-requests: not a number: 'many'"),
])
def test_bad_audit_options_are_named(argv, error, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["audit", "http://127.0.0.1:9", *argv])
    assert exc.value.code == 2
    assert error in capsys.readouterr().err


def test_an_unreachable_site_is_reported_not_crashed(tmp_path: Path, capsys):
    out = tmp_path / "audit.json"
    assert main(["audit", "http://127.0.0.1:9", "--format", "json", "--out", str(out),
                 "--timeout", "2"]) == 0
    data = json.loads(out.read_text())
    assert [f["key"] for f in data["findings"]][:1] == ["robots-missing"]
    assert "Connect call failed" in data["findings"][0]["detail"] or "refused" in \
        data["findings"][0]["detail"].lower()
