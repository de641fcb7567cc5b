"""Store presets (rules/presets/) and the rule files' `content:` section they use."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from proxy.exchange import Action, Client, ContentKind, Exchange, Signals
from proxy.rules import load_rules
from proxy.yamlsource import ConfigError

from .conftest import RULES_DIR

PRESETS = RULES_DIR / "presets"
A = ContentKind.AUDIO
EXPECTED = {
    "faircamp": {"/first-light/mp3-v0/01-harbour.mp3": A, "/first-light/": ContentKind.PAGE},
    "funkwhale": {"/api/v1/listen/6f1c2a/": A, "/api/v1/channels/marla/rss": ContentKind.FEED,
                  "/library/albums/3": ContentKind.PAGE},
    "navidrome": {"/rest/stream.view": A, "/rest/stream": A, "/rest/download": A,
                  "/share/s/Xy12": A, "/rest/getCoverArt.view": ContentKind.IMAGE,
                  "/app/": ContentKind.PAGE},
    "mirlo": {"/v1/tracks/77/stream/playlist": A, "/v1/artists/marla": ContentKind.PAGE},
}
ARCHIVES = {"faircamp": "/first-light/flac/first-light.zip",
            "mirlo": "/v1/trackGroups/12/download"}


def with_preset(tmp_path: Path, name: str) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    shutil.copy(PRESETS / f"{name}.yaml", rules / f"05-{name}.yaml")
    return rules


def exchange(path: str, content: ContentKind, ua_class: str) -> Exchange:
    ex = Exchange(id="x", client=Client("203.0.113.5", "203.0.113.5", False, "https", "s"),
                  method="GET", path=path, query="")
    ex.signals = Signals(content=content, ua="GPTBot/1.2", ua_class=ua_class)
    return ex


def test_every_preset_is_documented():
    readme = (PRESETS / "README.md").read_text()
    assert sorted(p.stem for p in PRESETS.glob("*.yaml")) == sorted(EXPECTED)
    for name in EXPECTED:
        assert f"`{name}.yaml`" in readme


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_loads_with_the_shipped_rules_and_names_its_paths(tmp_path, name):
    ruleset = load_rules(with_preset(tmp_path, name))
    for path, kind in EXPECTED[name].items():
        assert ruleset.content_kind(path) is kind, path
    if name in ARCHIVES:
        path = ARCHIVES[name]
        kind = ruleset.content_kind(path)
        assert ruleset.decide(exchange(path, kind, "ai-crawler")).action is Action.BLOCK
        assert ruleset.decide(exchange(path, kind, "browser")).action is Action.ALLOW


def test_content_section_errors_name_file_and_line(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10-a.yaml").write_text(
        "version: 1\ncontent:\n  audio: [/rest/stream]\n  audo: [/x]\n  page: [rest]\n"
        "rules: []\n")
    (rules / "20-b.yaml").write_text("version: 1\ncontent:\n  page: [/rest/stream]\n")
    with pytest.raises(ConfigError) as err:
        load_rules(rules)
    assert [str(p) for p in err.value.problems] == [
        "rules/10-a.yaml:4:3: unknown content kind 'audo' (did you mean 'audio'?)",
        "rules/10-a.yaml:5:10: a path prefix like /rest/stream, got 'rest'",
        "rules/20-b.yaml:3:10: '/rest/stream' is already audio (rules/10-a.yaml:3)",
    ]
