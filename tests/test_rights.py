"""Rights declarations from rules/rights.yaml: headers, tdmrep.json, ai.txt, robots.txt lines,
tags inside the variants, and the export by ISRC."""

from __future__ import annotations

import csv
import io
import json
import pickle
from pathlib import Path

import aiohttp
import mutagen
from aiohttp import web
from protego import Protego

from proxy.cli import main
from proxy.rules import LiveRules, load_rules
from proxy.settings import AudioSettings

from .audio_tools import make_sources
from .conftest import proxy_settings

RULES = Path(__file__).resolve().parent / "fixtures" / "rights"


def test_rights_travel_without_their_path_cache():
    """The evidence writer gets a copy of the rights with every batch: the per-path header
    cache stays behind, so a store with thousands of paths does not pickle it ten times a
    second on the event loop."""
    rights = load_rules(RULES).rights
    assert rights is not None
    bare = len(pickle.dumps(rights))
    for i in range(1000):
        rights.headers(f"/stream/track-{i}.mp3")
    copy = pickle.loads(pickle.dumps(rights))
    assert len(pickle.dumps(rights)) == bare
    assert copy == rights
    assert copy.headers("/real/track.mp3") == rights.headers("/real/track.mp3")
    assert copy.headers("/free/track.mp3") == (("tdm-reservation", "0"),)


async def test_every_machine_readable_declaration_is_made(aiohttp_server, run_proxy, tmp_path):
    sources = make_sources(tmp_path / "audio", seconds=8.0)

    async def store(request: web.Request) -> web.StreamResponse:
        if request.path == "/robots.txt":
            return web.Response(text="User-agent: *\nDisallow: /cart\n")
        if request.path == "/page":
            return web.Response(text="<html>a page</html>", content_type="text/html",
                                headers={"X-Robots-Tag": "noarchive"})
        return web.FileResponse(sources[request.path.rsplit(".", 1)[1]])

    app = web.Application()
    app.router.add_get("/{tail:.*}", store)
    upstream = await aiohttp_server(app)
    settings = proxy_settings(f"http://127.0.0.1:{upstream.port}", rules_dir=RULES,
                              audio=AudioSettings(cache_dir=tmp_path / "v", workers=1))
    base = await run_proxy(settings, LiveRules(load_rules(RULES)))
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/real/track.mp3") as r:
            assert r.headers["tdm-reservation"] == "1"
            assert r.headers["tdm-policy"] == "https://artist.example/licensing"
            assert r.headers["Content-Usage"] == "train-ai=n"
            assert r.headers["X-Robots-Tag"] == "noai, noimageai"
            assert await r.read() == sources["mp3"].read_bytes()
        async with s.get(base + "/page") as r:
            assert r.headers["tdm-reservation"] == "1"
            assert r.headers["X-Robots-Tag"] == "noarchive"  # the store's own value is kept
        async with s.get(base + "/free/track.mp3") as r:
            assert r.headers["tdm-reservation"] == "0"
            assert "Content-Usage" not in r.headers
        async with s.get(base + "/.well-known/tdmrep.json") as r:
            assert r.status == 200
            assert r.content_type == "application/json"
            entries = await r.json()
        assert entries[0] == {"location": "/truncate/track.*", "tdm-reservation": 1,
                              "tdm-policy": "https://artist.example/licensing"}
        assert {"location": "/free/*", "tdm-reservation": 0} in entries
        assert entries[-1]["location"] == "/*"
        async with s.get(base + "/ai.txt") as r:
            text = await r.text()
        assert "User-Agent: *" in text
        assert "Disallow: *.mp3" in text
        async with s.get(base + "/robots.txt") as r:
            robots = await r.text()
        assert "Content-Signal: search=yes, ai-input=no, ai-train=no" in robots
        assert "Content-Usage: train-ai=n" in robots
        parser = Protego.parse(robots)
        # the declarations never close the site: a search engine may still crawl it
        assert parser.can_fetch("/album/x", "Googlebot")
        assert not parser.can_fetch("/cart", "Googlebot")
        # the variant carries the rights tags
        async with s.get(base + "/truncate/track.flac") as r:
            assert r.status == 200
            (tmp_path / "variant.flac").write_bytes(await r.read())
        async with s.get(base + "/truncate/track.mp3") as r:
            (tmp_path / "variant.mp3").write_bytes(await r.read())
        async with s.get(base + "/truncate/track.m4a") as r:
            (tmp_path / "variant.m4a").write_bytes(await r.read())
    flac = mutagen.File(str(tmp_path / "variant.flac"))
    assert flac["ISRC"] == ["GBXXX2600001"]
    assert flac["COPYRIGHT"] == ["2026 Example Artist"]
    assert flac["LICENSE"] == ["https://artist.example/licensing"]
    id3 = mutagen.File(str(tmp_path / "variant.mp3")).tags
    assert str(id3["TSRC"]) == "GBXXX2600001"
    assert str(id3["TCOP"]) == "2026 Example Artist"
    assert id3["WCOP"].url == "https://artist.example/licensing"
    assert "no AI training" in str(id3["TXXX:TDM"])
    m4a = mutagen.File(str(tmp_path / "variant.m4a")).tags
    assert m4a["cprt"] == ["2026 Example Artist"]
    assert bytes(m4a["----:com.apple.iTunes:ISRC"][0]) == b"GBXXX2600001"


def test_export_by_isrc(capsys):
    assert main(["rights", "export", "--rules", str(RULES)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["isrc"], r["tdm_reservation"], r["ai_training"]) for r in rows] == [
        ("GBXXX2600001", "1", "no"), ("GBXXX2600002", "0", "yes")]
    assert main(["rights", "export", "--format", "json", "--rules", str(RULES)]) == 0
    tracks = json.loads(capsys.readouterr().out)["tracks"]
    assert tracks[0]["title"] == "Harbour at Dawn"
    assert tracks[0]["policy"] == "https://artist.example/licensing"


def test_bad_rights_files_are_reported(tmp_path, capsys):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rights.yaml").write_text(
        "version: 1\ndefaults:\n  reservation: maybe\n  polcy: x\ntracks:\n"
        "  - paths: [stream/a.mp3]\n    isrc: 12345\n  - paths: [/b]\n    isrc: GBXXX2600001\n"
        "  - paths: [/c]\n    isrc: GBXXX2600001\n    titel: C\n")
    assert main(["check", str(rules)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "rules/rights.yaml:3:16: 'reservation' must be true or false",
        "rules/rights.yaml:4:3: unknown key 'polcy' in 'defaults' (did you mean 'policy'?)",
        "rules/rights.yaml:6:12: 'paths' must be paths or globs starting with '/'",
        "rules/rights.yaml:7:11: 'isrc' must be an ISRC like GBXXX2600001 (country, registrant, "
        "year, number), got 12345",
        "rules/rights.yaml:11:11: ISRC GBXXX2600001 is listed twice (first at "
        "rules/rights.yaml:9:11)",
        "rules/rights.yaml:12:5: unknown key 'titel' (did you mean 'title'?)",
        "6 errors",
    ]
