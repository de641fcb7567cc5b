"""User-agent classification against the vendored lists, and their generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.agents import generate_ai_robots, generate_crawlers, literal_tokens, load_agents
from proxy.cli import main
from proxy.signals.useragent import UAClassifier, UAInfo

from .conftest import RULES_DIR

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")


@pytest.fixture(scope="module")
def classifier() -> UAClassifier:
    return UAClassifier(load_agents(RULES_DIR / "agents"))


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
         "+https://openai.com/gptbot)", UAInfo("ai-crawler", "GPTBot", "OpenAI", "training")),
        ("Mozilla/5.0 (compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
         UAInfo("ai-crawler", "ClaudeBot", "Anthropic", "training")),
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ChatGPT-User/1.0; "
         "+https://openai.com/bot)", UAInfo("ai-crawler", "ChatGPT-User", "OpenAI",
                                            "user-triggered")),
        ("CCBot/2.0 (https://commoncrawl.org/faq/)",
         UAInfo("ai-crawler", "CCBot", "Common Crawl Foundation", "training")),
        (CHROME, UAInfo("browser")),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
         UAInfo("search-engine", "Googlebot")),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
         "Gecko) Version/17.4 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
         UAInfo("search-engine", "Applebot", "Apple")),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
         UAInfo("link-preview", "facebookexternalhit", "Meta")),
        ("http.rb/5.1.1 (Mastodon/4.2.0; +https://mastodon.social/)",
         UAInfo("link-preview", "Mastodon")),
        ("Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
         UAInfo("link-preview", "Discordbot")),
        ("AntennaPod/3.4.0", UAInfo("feed-reader", "AntennaPod")),
        ("Overcast/3.0 (+http://overcast.fm/; Apple Watch podcast app)",
         UAInfo("feed-reader", "Overcast")),
        ("Podcasts/1650.20 CFNetwork/1333.0.4 Darwin/21.5.0", UAInfo("feed-reader", "Podcasts")),
        ("VLC/3.0.20 LibVLC/3.0.20", UAInfo("media-player", "VLC")),
        ("Lavf/60.3.100", UAInfo("media-player", "Lavf")),
        ("AppleCoreMedia/1.0.0.21E236 (iPhone; U; CPU OS 17_4 like Mac OS X; en_us)",
         UAInfo("media-player", "AppleCoreMedia")),
        ("Mozilla/5.0 (compatible; archive.org_bot +http://archive.org/details/archive.org_bot)",
         UAInfo("archiver", "archive.org_bot")),
        ("Wget/1.21.3", UAInfo("http-library", "Wget")),
        ("curl/7.88.1", UAInfo("http-library", "curl")),
        ("Scrapy/2.11.2 (+https://scrapy.org)", UAInfo("http-library", "Scrapy")),
        ("Python/3.11 aiohttp/3.14.5", UAInfo("http-library", "aiohttp")),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "HeadlessChrome/156.0.0.0 Safari/537.36", UAInfo("headless-browser", "HeadlessChrome")),
        ("", UAInfo("empty")),
        ("   ", UAInfo("empty")),
        ("SomethingElse/1.0", UAInfo("unknown")),
        # generic ai.robots.txt names match only as product tokens
        ("My Code editor (Spider-Man fan edition)", UAInfo("unknown")),
        ("Code/1.90.0 Chrome/120 Electron/28", UAInfo("ai-crawler", "Code", "", "user-triggered")),
    ],
)
def test_user_agent_classes(classifier, ua, expected):
    assert classifier.classify(ua) == expected


def test_whole_words_only(classifier):
    # "ccbot" inside a longer word is not CCBot
    assert classifier.classify("NotCCBotReally/1.0").ua_class == "unknown"


def test_literal_tokens_from_regex_patterns():
    assert literal_tokens("[wW]get") == ["wget"]
    assert literal_tokens("Ahrefs(Bot|SiteAudit)") == ["ahrefsbot", "ahrefssiteaudit"]
    assert literal_tokens("Mediapartners \\(Googlebot\\)") == ["mediapartners (googlebot)"]
    assert literal_tokens("BlogTraffic\\/\\d\\.\\d+ Feed-Fetcher") == ["feed-fetcher"]
    assert literal_tokens("Y!J") == []


def test_generators_keep_provenance_and_apply_the_product_rule(tmp_path: Path):
    robots = json.dumps({
        "GPTBot": {"operator": "[OpenAI](https://openai.com)", "function": "AI Data Scrapers"},
        "Spider": {"operator": "Unclear at this time.", "function": "AI Search Crawlers"},
    }).encode()
    text = generate_ai_robots(robots, "example/robots.json@abc123")
    assert "# Source: example/robots.json@abc123" in text
    crawlers = json.dumps([
        {"pattern": "Googlebot\\/", "tags": ["search-engine"],
         "instances": ["Mozilla/5.0 (compatible; Googlebot/2.1)"]},
        {"pattern": "[wW]idget[sS]pider", "tags": ["seo"], "instances": ["widgetspider 1.0"]},
        {"pattern": "Y!J", "tags": ["search-engine"], "instances": ["Y!J-BRW/1.0"]},
    ]).encode()
    crawler_text, left_out = generate_crawlers(crawlers, "example/crawlers.json@def456", set())
    assert left_out == ["Y!J"]
    agents_dir = tmp_path / "agents"
    agents_dir.mkdir()
    (agents_dir / "ai-robots.yaml").write_text(text)
    (agents_dir / "crawlers.yaml").write_text(crawler_text)
    agents = load_agents(agents_dir)
    assert agents["gptbot"].operator == "OpenAI"
    assert agents["gptbot"].purpose == "training"
    assert agents["spider"].product
    assert agents["spider"].purpose == "search"
    assert agents["googlebot"].product
    assert agents["googlebot"].token == "Googlebot"
    assert agents["widgetspider"].ua_class == "bot"


def test_agents_update_command(tmp_path: Path, capsys):
    robots = tmp_path / "robots.json"
    robots.write_text(json.dumps({"GPTBot": {"operator": "OpenAI", "function": "LLM training."}}))
    crawlers = tmp_path / "crawlers.json"
    crawlers.write_text(json.dumps([{"pattern": "ds9", "tags": ["seo"], "instances": ["ds9"]}]))
    out = tmp_path / "out"
    assert main(["agents", "update", "--ai-robots", str(robots), "--crawlers", str(crawlers),
                 "--out", str(out), "--ai-robots-source", "src-a"]) == 0
    printed = capsys.readouterr().out
    assert "left out (not reducible to literal tokens): ds9" in printed
    assert load_agents(out)["gptbot"].token == "GPTBot"
