"""Real crawlers against the demo store behind SonicShield, then the evidence they left.

- wget mirrors the store, obeying robots.txt (it forbids wget nothing but the cart);
- Scrapy obeys robots.txt and takes a track, which a rule added for this test answers with a
  watermarked copy;
- Scrapy again, sending GPTBot's name but reading robots.txt as "Scrapy" (ROBOTSTXT_USER_AGENT:
  robots.txt forbids GPTBot everything, Scrapy nothing), so it fetches robots.txt and then
  takes what it forbids.

The report must name all three, show the third's robots.txt fetch and its first forbidden
request side by side (and nobody else's), and `trace` must take the watermarked copy back to
the encounter that handed it out.
"""

from __future__ import annotations

import json
import shutil
import sys

from proxy.cli import main
from proxy.demo.catalogue import CATALOGUE
from proxy.demo.store import build_store_app
from proxy.rules import LiveRules, load_rules
from proxy.settings import AudioSettings, EvidenceSettings

from .conftest import RULES_DIR, proxy_settings, wait_for_records
from .crawlers.runs import SPIDER, bounded, program

GPTBOT = "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)"
WATERMARK_TOOLS = """version: 1
rules:
  - name: tools-audio-marked
    description: For this test, download tools get a watermarked full copy.
    match: {content: audio, agent: Scrapy}
    action: watermark
"""


async def test_real_crawlers_leave_a_report_and_a_traceable_copy(
        aiohttp_server, run_proxy, media_dir, tmp_path, capsys):
    wget = program("wget", "wget")
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    (rules / "25-tools-marked.yaml").write_text(WATERMARK_TOOLS)
    store = await aiohttp_server(build_store_app(media_dir))
    key, evidence = tmp_path / "watermark.key", tmp_path / "evidence"
    settings = proxy_settings(
        f"http://127.0.0.1:{store.port}", rules_dir=rules,
        audio=AudioSettings(cache_dir=tmp_path / "variants", workers=1, watermark_key=key),
        evidence=EvidenceSettings(dir=evidence))
    base = await run_proxy(settings, LiveRules(load_rules(rules)))

    await bounded(wget, "-q", "-r", "-l", "1", "-t", "1", "--bind-address=127.0.0.2",
              "-P", str(tmp_path / "wget"), base + "/", limit=10)
    _, track = CATALOGUE.tracks()[1]
    out = tmp_path / "scraped"
    scrapy = (sys.executable, "-m", "scrapy", "runspider", str(SPIDER),
              "-s", "ROBOTSTXT_OBEY=True", "-s", "LOG_LEVEL=ERROR",
              "-s", "TELNETCONSOLE_ENABLED=False")
    await bounded(*scrapy, "-a", f"start={base}/stream/{track.slug}.mp3", "-a", f"out={out}",
              "-s", "DOWNLOAD_TIMEOUT=60", limit=90)
    (copy,) = out.iterdir()
    # its pages are tarpitted once it has violated: 3 s is all it waits for each
    await bounded(*scrapy, "-a", f"start={base}/,{base}/stream/{CATALOGUE.tracks()[0][1].slug}.mp3",
              "-a", f"out={tmp_path / 'gptbot'}", "-s", f"USER_AGENT={GPTBOT}",
              "-s", "ROBOTSTXT_USER_AGENT=Scrapy", "-s", "DOWNLOAD_TIMEOUT=3",
              "-s", "CLOSESPIDER_TIMEOUT=15", limit=30)
    await wait_for_records(evidence, "watermark", 1)
    await wait_for_records(evidence, "decoy", 1)

    capsys.readouterr()
    assert main(["evidence", "report", "--dir", str(evidence), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(chain["ok"] for chain in report["chains"])
    agents = {a["name"]: a for a in report["agents"]}
    assert set(agents) == {"Wget", "Scrapy", "GPTBot (OpenAI)"}
    assert agents["Wget"]["robots_txt_fetches"] == 1
    assert agents["Scrapy"]["robots_txt_fetches"] == 1
    assert agents["GPTBot (OpenAI)"]["robots_txt_fetches"] == 1
    assert agents["Scrapy"]["audio_by_variant"] == {"watermark": 1}
    assert set(agents["GPTBot (OpenAI)"]["audio_by_variant"]) == {"decoy"}  # (and retries)
    # the violator, and only it, with its robots.txt fetch and its first forbidden request
    (violation,) = report["fetched_then_violated"]
    assert (violation["client"], violation["group"]) == ("127.0.0.1", "GPTBot (OpenAI)")
    assert violation["robots_fetched"] < violation["violated"]
    (handout,) = report["watermarks"]
    assert agents["Scrapy"]["watermarks"] == [handout["watermark"]]

    original = media_dir / f"{track.slug}.mp3"
    assert main(["trace", str(copy), "--original", str(original), "--key", str(key),
                 "--evidence", str(evidence)]) == 0
    out_lines = capsys.readouterr().out.splitlines()
    assert f"payload   {handout['watermark']}" in out_lines[1]
    (served,) = [line for line in out_lines if line.startswith("served")]
    assert f" to 127.0.0.1 GET /stream/{track.slug}.mp3 ua='Scrapy/" in served
    assert f"id={handout['exchange']} " in served
    assert out_lines[-1] == f"matches   1 in {evidence}"
