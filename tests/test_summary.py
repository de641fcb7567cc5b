"""`sonicshield summary`: what the rules did and would have done, by rule and client, read
back from the access log a real proxy wrote (both log formats) and from standard input."""

from __future__ import annotations

import io
import logging
from dataclasses import replace

import aiohttp
import pytest

from proxy.cli import main
from proxy.demo.store import build_store_app
from proxy.logs import JsonFormatter, TextFormatter
from proxy.settings import AudioSettings, EvidenceSettings

from .conftest import RULES_DIR, proxy_settings, shipped_rules, wait_for_records

VLC = "VLC/3.0.18 LibVLC/3.0.18"


@pytest.fixture
async def shadow_log(aiohttp_server, run_proxy, media_dir, caplog) -> list[logging.LogRecord]:
    """The access records of a proxy in shadow mode: GPTBot takes a stream, a tool claiming
    VLC takes three FLACs back to back, a browser loads a page."""
    caplog.set_level(logging.INFO, "sonicshield.access")
    store = await aiohttp_server(build_store_app(media_dir))
    settings = replace(proxy_settings(f"http://127.0.0.1:{store.port}", rules_dir=RULES_DIR),
                       shadow=True)
    base = await run_proxy(settings, shipped_rules())
    async with aiohttp.ClientSession() as s:
        for ua, path in [("GPTBot/1.2", "/stream/moth-waltz.mp3"),
                         (VLC, "/download/harbour-at-dawn.flac"),
                         (VLC, "/download/salt-and-cedar.flac"),
                         (VLC, "/download/glasshouse.flac"),
                         ("Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 "
                          "Firefox/153.0", "/album/first-light")]:
            async with s.get(base + path, headers={"User-Agent": ua}) as r:
                assert r.status == 200
                await r.read()
    records = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "access"]
    assert len(records) == 5
    return records


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()],
                         ids=["json", "text"])
async def test_a_shadow_run_read_back_by_rule_and_client(shadow_log, tmp_path, capsys,
                                                         formatter):
    log = tmp_path / "access.log"
    log.write_text("started\n" + "".join(formatter.format(r) + "\n" for r in shadow_log))
    assert main(["summary", str(log)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "5 requests (1 other lines skipped)"
    would = lines[lines.index("would have been served, had shadow mode been off") + 2:]
    assert any(li.split()[1:] == ["ai-crawler-audio", "decoy", "1", "1"] for li in would), out
    assert any(li.split()[1:] == ["players-off-their-lane", "truncate", "2", "1"]
               for li in would), out
    vlc = next(li for li in lines if "media-player" in li)
    assert "upstream 3" in vlc  # shadow: everyone got the real thing
    assert "players-off-their-lane 2, podcast-apps-and-players 1" in vlc


async def test_summary_reads_standard_input_and_refuses_a_log_without_access_lines(
        shadow_log, tmp_path, capsys, monkeypatch):
    text = "".join(JsonFormatter().format(r) + "\n" for r in shadow_log)
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert main(["summary", "-"]) == 0
    assert capsys.readouterr().out.startswith("5 requests\n")
    empty = tmp_path / "other.log"
    empty.write_text("nothing here\n")
    assert main(["summary", str(empty)]) == 1
    assert "no access-log line or evidence record" in capsys.readouterr().err
    assert main(["summary", str(tmp_path / "missing.log")]) == 2
    assert "missing.log" in capsys.readouterr().err


async def test_summary_reads_an_evidence_folder(aiohttp_server, run_proxy, media_dir, tmp_path,
                                                capsys):
    store = await aiohttp_server(build_store_app(media_dir))
    evidence = tmp_path / "evidence"
    settings = proxy_settings(f"http://127.0.0.1:{store.port}", rules_dir=RULES_DIR,
                              audio=AudioSettings(cache_dir=tmp_path / "variants", workers=1),
                              evidence=EvidenceSettings(dir=evidence))
    base = await run_proxy(settings, shipped_rules())
    async with aiohttp.ClientSession() as s, s.get(
            base + "/stream/moth-waltz.mp3", headers={"User-Agent": "GPTBot/1.2"}) as r:
        await r.read()
    await wait_for_records(evidence, "decoy", 1)
    assert main(["summary", str(evidence)]) == 0
    out = capsys.readouterr().out
    rule = next(li for li in out.splitlines() if "ai-crawler-audio" in li and "decoy" in li)
    assert rule.split()[2:4] == ["1", "1"]  # one request, one client
    assert "ai-crawler" in out.split("by client")[1]
