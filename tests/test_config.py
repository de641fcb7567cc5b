"""Settings, YAML loading and rule files: every error names file:line:col (texts pinned)."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

import pytest
from multidict import CIMultiDict

from proxy.cli import main
from proxy.exchange import Action, Client, ContentKind, Exchange, Signals
from proxy.rules import load_rules
from proxy.settings import Listen, load_settings, parse_listen
from proxy.yamlsource import ConfigError, load_yaml_text

from .conftest import RULES_DIR


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


def test_full_config_loads(tmp_path: Path):
    config = write(tmp_path, "c.yaml", """
listen: ["127.0.0.1:8080", "[::1]:8080"]
upstream: {url: "http://127.0.0.1:8081/", host_header: upstream, pool_size: 50}
trusted_proxies: [10.0.0.0/8, "::1"]
timeouts: {client_header: 5, upstream_idle: 30.5}
limits: {streams_per_client: 4, max_request_body: 0}
rules_dir: my-rules
admin: {listen: null, token: "0123456789abcdef"}
workers: 2
log: {format: text, level: debug, access_log: false}
verdict_header: true
""")
    s = load_settings(config)
    assert s.listen == (Listen("127.0.0.1", 8080), Listen("::1", 8080))
    assert s.upstream.url == "http://127.0.0.1:8081"
    assert s.upstream.host_header == "upstream"
    assert s.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1"))
    assert (s.timeouts.client_header, s.timeouts.upstream_idle) == (5.0, 30.5)
    assert s.rules_dir == tmp_path.resolve() / "my-rules"
    assert s.admin.listen is None
    assert s.admin.token == "0123456789abcdef"
    assert (s.workers, s.log.format, s.log.access_log, s.verdict_header) == (2, "text", False, True)


def test_every_problem_reported_at_once_with_positions(tmp_path: Path):
    config = write(tmp_path, "c.yaml", """listen: 8080x
upstream:
  url: http://store
  hostheader: preserve
timeouts:
  client_header: -1
limits:
  streams_per_client: lots
trusted_proxies: [10.0.0.0/33]
admin:
  token: short
log:
  format: xml
unknown_top: 1
shared_state: {redis_url: 'http://cache:6379', ttl: 60}
""")
    with pytest.raises(ConfigError) as exc:
        load_settings(config)
    p = str(config)
    assert problems(exc) == [
        f"{p}:1:9: 'listen' entries must be HOST:PORT: got '8080x', expected HOST:PORT",
        f"{p}:4:3: unknown key 'hostheader' in 'upstream' (did you mean 'host_header'?)",
        f"{p}:6:18: 'client_header' must be a number of seconds greater than 0: got -1",
        f"{p}:8:23: 'streams_per_client' must be an integer from 0 to 10000",
        f"{p}:9:19: 'trusted_proxies' entries must be addresses or CIDRs, got '10.0.0.0/33'",
        f"{p}:11:10: 'token' must be a string of at least 16 characters: it has 5",
        f"{p}:13:11: 'format' must be one of json, text: got 'xml'",
        f"{p}:14:1: unknown key 'unknown_top' in the config file",
        f"{p}:15:27: 'redis_url' must be a redis://, rediss:// or unix:// URL, or null: got "
        "'http://cache:6379'",
        f"{p}:15:53: 'ttl' must be a number of seconds greater than 600: got 60",
    ]


def test_command_line_overrides_are_validated_and_named(tmp_path: Path):
    with pytest.raises(ConfigError) as exc:
        load_settings(None, {"upstream.url": ("--upstream", "store:80"),
                             "listen": ("--listen", ["nope"])})
    assert problems(exc) == [
        "--listen: 'listen' entries must be HOST:PORT: got 'nope', expected HOST:PORT",
        "--upstream: 'url' must be an http:// or https:// URL: got 'store:80'",
    ]
    s = load_settings(None, {"upstream.url": ("--upstream", "http://127.0.0.1:9")})
    assert s.upstream.url == "http://127.0.0.1:9"


def test_yaml_syntax_error_alias_and_duplicate_key(tmp_path: Path):
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, "a.yaml", "upstream: {url: [\n"))
    assert problems(exc)[0].startswith(f"{tmp_path}/a.yaml:2:1: invalid YAML:")
    with pytest.raises(ConfigError) as exc:
        load_yaml_text("a: &x [1, 2]\nb: *x\n", "bomb.yaml")
    assert problems(exc) == ["bomb.yaml:2:4: YAML aliases (*name) are not allowed here; "
                             "write the value out"]
    with pytest.raises(ConfigError) as exc:
        load_yaml_text("workers: 1\nworkers: 2\n", "dup.yaml")
    assert problems(exc) == ["dup.yaml:2:1: duplicate key 'workers' (first defined at line 1)"]


def test_billion_laughs_is_refused_quickly():
    bomb = 'a: &a ["lol","lol"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b]\n'
    with pytest.raises(ConfigError, match="aliases"):
        load_yaml_text(bomb, "bomb.yaml")


def test_oversized_and_non_utf8_files_refused(tmp_path: Path):
    big = write(tmp_path, "big.yaml", "# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(big)
    assert problems(exc) == [f"{big}:1:1: file is {(1 << 20) + 3} bytes; the limit is 1048576"]
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"workers: 1\nname: \xff\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(bad)
    assert problems(exc) == [f"{bad}:2:1: file is not valid UTF-8"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(":8080", Listen("0.0.0.0", 8080)), ("127.0.0.1:0", Listen("127.0.0.1", 0)),
     ("[::]:443", Listen("::", 443)), (9000, Listen("0.0.0.0", 9000))],
)
def test_listen_forms(text, expected):
    assert parse_listen(text) == expected


def _exchange(path: str, method: str = "GET", content: ContentKind = ContentKind.PAGE) -> Exchange:
    ex = Exchange(id="t", client=Client("1.2.3.4", "1.2.3.4", False, "http", "h"),
                  method=method, path=path, query="")
    ex.signals = Signals(content=content, ua="")
    return ex


def test_rules_first_match_wins_and_origin_names_file_and_line(tmp_path: Path):
    rules = tmp_path / "rules"
    rules.mkdir()
    write(rules, "10-admin.yaml", """version: 1
rules:
  - name: block-admin-writes
    match: {path: ["/admin/*"], method: [POST, DELETE]}
    action: block
  - name: audio-shadow
    match: {content: audio}
    action: block
    shadow: true
""")
    write(rules, "99-default.yaml", "version: 1\nrules:\n  - name: rest\n    match: {}\n"
                                    "    action: allow\n")
    ruleset = load_rules(rules)
    v = ruleset.decide(_exchange("/admin/users", "POST"))
    assert (v.action, v.origin) == (Action.BLOCK, "rules/10-admin.yaml:3 block-admin-writes")
    assert len(v.rule_hash) == 12
    assert ruleset.decide(_exchange("/admin/users")).origin == "rules/99-default.yaml:3 rest"
    # a rule in shadow mode decides nothing: the next rule does, and the verdict says what
    # the shadow rule would have done
    v = ruleset.decide(_exchange("/a.mp3", content=ContentKind.AUDIO))
    assert (v.action, v.origin, v.shadow) == (Action.ALLOW, "rules/99-default.yaml:3 rest", False)
    assert v.shadowed is not None
    assert (v.shadowed.action, v.shadowed.origin) == (
        Action.BLOCK, "rules/10-admin.yaml:6 audio-shadow")
    assert v.header_value == ("allow; rules/99-default.yaml:3 rest; shadow block; "
                              "rules/10-admin.yaml:6 audio-shadow")


def test_a_shadow_block_falls_through_to_the_next_rule_for_a_crawler(tmp_path: Path):
    """A per-rule shadow block for CCBot served it the real file instead of the decoy the
    next rule gives every AI crawler's audio."""
    from proxy.explain import Judge, RequestSpec

    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    write(rules, "05-try.yaml", "version: 1\nrules:\n  - name: block-ccbot\n"
                                "    match: {agent: CCBot}\n    action: block\n"
                                "    shadow: true\n")
    ex = Judge(load_rules(rules)).judge(RequestSpec(
        "GET", "/stream/t.mp3", CIMultiDict({"User-Agent": "CCBot/2.0"}), "203.0.113.9"), 1.0)
    assert (ex.verdict.action, ex.verdict.origin.rsplit(" ", 1)[1]) == (
        Action.DECOY, "ai-crawler-audio")
    assert ex.verdict.shadowed is not None
    assert ex.verdict.shadowed.origin == "rules/05-try.yaml:3 block-ccbot"


def test_bad_rule_files_report_every_error(tmp_path: Path, capsys):
    rules = tmp_path / "rules"
    rules.mkdir()
    write(rules, "10-bad.yaml", """version: 1
rules:
  - name: typo
    match: {ua_clas: ai-crawler, content: [audio, vidoe]}
    action: poison
  - name: typo
    match: {path: "no-slash"}
    action: alow
    extra: 1
  - match: {}
    action: allow
""")
    write(rules, "20-worse.yaml", "version: 2\nrules: {}\n")
    assert main(["check", str(rules)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "rules/10-bad.yaml:4:13: rule 'typo': unknown match key 'ua_clas' (did you mean "
        "'ua_class'?)",
        "rules/10-bad.yaml:4:51: rule 'typo': match key 'content': unknown content kind "
        "'vidoe'",
        "rules/10-bad.yaml:5:13: rule 'typo': action 'poison' makes a variant of an audio file: "
        "the rule's match needs 'content: audio' (and no other kind)",
        "rules/10-bad.yaml:6:11: rule 'typo': duplicate name (first at rules/10-bad.yaml:3)",
        "rules/10-bad.yaml:7:19: rule 'typo': match key 'path': path patterns start with '/', "
        "got 'no-slash'",
        "rules/10-bad.yaml:8:13: rule 'typo': unknown action 'alow' (did you mean 'allow'?)",
        "rules/10-bad.yaml:9:5: rule 'typo': unknown key 'extra'",
        "rules/10-bad.yaml:10:5: every rule needs a 'name' of lower-case letters, digits, '.', "
        "'_' or '-'",
        "rules/20-worse.yaml:1:10: 'version: 1' is required",
        "rules/20-worse.yaml:2:8: 'rules' must be a list",
        "10 errors",
    ]


def test_shipped_rules_check_clean(capsys):
    assert main(["check"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_example_config_loads_with_its_documented_values():
    from .conftest import ROOT

    s = load_settings(ROOT / "sonicshield.example.yaml")
    assert s.upstream.url == "http://127.0.0.1:8081"
    assert s.rules_dir == ROOT / "rules"
    assert s.limits.max_request_body == 1 << 30
    assert s.admin.listen == Listen("127.0.0.1", 9180)


def test_ua_match_keys_validate_against_the_agent_lists(tmp_path: Path, capsys):
    import shutil

    from .conftest import RULES_DIR

    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR / "agents", rules / "agents")
    write(rules, "10-ai.yaml", """version: 1
rules:
  - name: ai
    match: {ua_class: [ai-crawler, ai-crawlr], agent: [GPTBot, GPTBott], purpose: trainig}
    action: block
""")
    assert main(["check", str(rules)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "rules/10-ai.yaml:4:36: rule 'ai': match key 'ua_class': unknown value 'ai-crawlr' "
        "(did you mean 'ai-crawler'?); one of ai-crawler, search-engine, link-preview, "
        "feed-reader, media-player, archiver, bot, http-library, headless-browser, browser, "
        "empty, unknown",
        "rules/10-ai.yaml:4:64: rule 'ai': match key 'agent': unknown agent 'GPTBott' "
        "(did you mean 'GPTBot'?)",
        "rules/10-ai.yaml:4:83: rule 'ai': match key 'purpose': unknown value 'trainig' "
        "(did you mean 'training'?); one of training, search, user-triggered, undocumented",
        "3 errors",
    ]
    (rules / "10-ai.yaml").write_text("""version: 1
rules:
  - name: ai-training
    match: {ua_class: ai-crawler, purpose: training, operator: openai}
    action: block
""")
    ruleset = load_rules(rules)
    ex = _exchange("/")
    ex.signals = Signals(content=ContentKind.PAGE, ua="", ua_class="ai-crawler", agent="GPTBot",
                         operator="OpenAI", purpose="training")
    assert ruleset.decide(ex).origin == "rules/10-ai.yaml:3 ai-training"


def test_behaviour_and_header_match_keys_report_bad_values(tmp_path: Path, capsys):
    rules = tmp_path / "rules"
    rules.mkdir()
    write(rules, "10-b.yaml", """version: 1
rules:
  - name: b
    match: {behaviour_score: 1.5, behaviour_flags: [no-contxt], headers: [no-sec-fech]}
    action: block
  - name: c
    match: {robots: violatd}
    action: block
""")
    assert main(["check", str(rules)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "rules/10-b.yaml:4:30: rule 'b': match key 'behaviour_score': takes one number from 0 "
        "to 1, got 1.5",
        "rules/10-b.yaml:4:53: rule 'b': match key 'behaviour_flags': unknown behaviour flag "
        "'no-contxt' (did you mean 'no-context'?); one of no-context, whole-file, fast, "
        "many-tracks, track-run, faster-than-playback, head-sweep, not-found, parallel-audio, "
        "rotating, walking-listing",
        "rules/10-b.yaml:4:75: rule 'b': match key 'headers': unknown header check "
        "'no-sec-fech' (did you mean 'no-sec-fetch'?); one of inconsistent, contradicted, "
        "no-accept-language, "
        "no-accept-encoding, no-sec-fetch, no-client-hints, no-upgrade-insecure, tool-headers",
        "rules/10-b.yaml:7:21: rule 'c': match key 'robots': unknown robots state 'violatd' "
        "(did you mean 'violated'?); one of unseen, compliant, violated-after-reading, "
        "violated-without-reading, violated",
        "4 errors",
    ]
