"""`sonicshield explain`: the signals and the first matching rule, with reasons."""

from __future__ import annotations

import json

from proxy.cli import main

CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")


def test_explain_a_fake_browser(capsys):
    assert main(["explain", "https://store.example/stream/moth-waltz.mp3",
                 "-H", f"User-Agent: {CHROME}", "-H", "Accept: */*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "request   GET /stream/moth-waltz.mp3 from 203.0.113.10"
    assert "  headers          no-accept-language, no-accept-encoding, no-sec-fetch, " \
           "no-client-hints" in out
    assert "  no     rules/20-ai-crawlers.yaml:10 ai-crawler-audio: ua_class is not " \
           "ai-crawler" in out
    assert "  MATCH  rules/30-disguised.yaml:18 fake-browser-audio -> decoy" in out
    assert out[-2] == ("rung      3 (strong): headers contradict its browser "
                       "(no-accept-language, no-accept-encoding, no-sec-fetch, no-client-hints)")
    assert out[-1].startswith("verdict   decoy (rules/30-disguised.yaml:18 fake-browser-audio, "
                              "rule hash ")


def test_explain_names_the_rung_of_weak_evidence(capsys):
    """One odd header is rung 1: the real thing."""
    assert main(["explain", "https://store.example/stream/moth-waltz.mp3",
                 "-H", f"User-Agent: {CHROME}", "-H", "Accept: */*",
                 "-H", "Accept-Language: en", "-H", "Accept-Encoding: identity",
                 "-H", "Sec-Fetch-Mode: no-cors", "-H", "Sec-Fetch-Dest: audio",
                 "-H", "Referer: https://store.example/album/first-light"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "rung      1 (weak): one odd header (no-client-hints)"
    assert out[-1].startswith("verdict   allow (rules/99-default.yaml:5 default-allow")


def test_explain_an_access_log_line(capsys):
    line = json.dumps({"event": "access", "client": "198.51.100.4", "method": "GET",
                       "path": "/feed.xml", "ua": "AntennaPod/3.4.0", "status": 200})
    assert main(["explain", "--log-line", line]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  ua_class         feed-reader" in out
    assert "  (header checks left out: an access-log line does not record headers)" in out
    assert "  MATCH  rules/10-listeners.yaml:56 podcast-apps-and-players -> allow" in out


def test_explain_refuses_bad_input(capsys):
    assert main(["explain", "--log-line", "{not json"]) == 2
    assert capsys.readouterr().err.startswith(
        "sonicshield explain: not a SonicShield access-log line")
    assert main(["explain", "x", "-H", "no colon"]) == 2
    assert capsys.readouterr().err.strip() == "sonicshield explain: not a URL or path: 'x'"
