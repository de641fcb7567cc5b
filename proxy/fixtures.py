"""Rule fixtures: request sequences with the verdicts they must get (`sonicshield test-rules`).

A fixture file (YAML) is one scenario; its requests run in order through the proxy's own
classify and decide code, sharing client state, so robots.txt and behaviour build up as they
would live:

    version: 1
    name: GPTBot reads robots.txt, then takes audio
    requests:
      - path: /robots.txt
        client: 203.0.113.1
        headers: {User-Agent: "GPTBot/1.2"}
        expect: allow
      - path: /stream/harbour-at-dawn.mp3
        client: 203.0.113.1
        after: 5                      # seconds after the previous request (default 1)
        headers: {User-Agent: "GPTBot/1.2"}
        expect: {action: block, rule: ai-crawler-audio}

`expect` is an action, or {action, rule}. Defaults: method GET, client 203.0.113.10, https.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multidict import CIMultiDict

from .exchange import Action
from .explain import Judge, RequestSpec
from .rules import RuleSet
from .yamlsource import ConfigError, LocatedDict, LocatedList, Mark, Problem, load_yaml_file

REQUEST_KEYS = ("method", "path", "client", "headers", "after", "expect", "scheme", "host")


@dataclass(frozen=True, slots=True)
class Outcome:
    where: Mark
    expected: str
    got: str

    @property
    def ok(self) -> bool:
        return self.expected == self.got


def _expected(raw: Any, mark: Mark) -> tuple[str, str | None]:
    if isinstance(raw, str) and raw in {a.value for a in Action}:
        return raw, None
    if isinstance(raw, dict) and raw.get("action") in {a.value for a in Action} and set(
        raw
    ) <= {"action", "rule"}:
        return str(raw["action"]), (str(raw["rule"]) if "rule" in raw else None)
    raise ConfigError([Problem(mark, "'expect' must be an action or {action: A, rule: NAME}")])


def run_fixture(path: Path, ruleset: RuleSet, display: str) -> list[Outcome]:
    doc = load_yaml_file(path, display)
    if not isinstance(doc, LocatedDict) or not isinstance(doc.get("requests"), LocatedList):
        raise ConfigError([Problem(Mark(display, 1, 1),
                                   "a fixture needs 'version: 1', 'name' and 'requests'")])
    judge = Judge(ruleset)
    now = 1000.0
    outcomes = []
    requests: LocatedList = doc["requests"]
    for i, raw in enumerate(requests):
        mark = requests.item_mark(i)
        if not isinstance(raw, LocatedDict) or "path" not in raw or "expect" not in raw:
            raise ConfigError([Problem(mark, "each request needs 'path' and 'expect'")])
        unknown = [k for k in raw if k not in REQUEST_KEYS]
        if unknown:
            raise ConfigError([Problem(raw.key_mark(unknown[0]),
                                       f"unknown key '{unknown[0]}' in a fixture request")])
        action, rule = _expected(raw["expect"], raw.value_mark("expect"))
        now += float(raw.get("after", 1))
        headers = CIMultiDict({str(k): str(v) for k, v in (raw.get("headers") or {}).items()})
        host = str(raw.get("host", "store.example"))
        headers.setdefault("Host", host)
        spec = RequestSpec(method=str(raw.get("method", "GET")).upper(), path=str(raw["path"]),
                           headers=headers, client=str(raw.get("client", "203.0.113.10")),
                           scheme=str(raw.get("scheme", "https")), host=host)
        verdict = judge.judge(spec, now).verdict
        got_rule = verdict.origin.rsplit(" ", 1)[-1]
        expected = f"{action} ({rule})" if rule else action
        got = f"{verdict.action.value} ({got_rule})" if rule else verdict.action.value
        outcomes.append(Outcome(mark, expected, got))
    return outcomes


def run_fixtures(directory: Path, ruleset: RuleSet) -> list[Outcome]:
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise ConfigError([Problem(Mark(str(directory), 0, 0), "no fixture files (*.yaml)")])
    outcomes: list[Outcome] = []
    problems: list[Problem] = []
    for path in files:
        try:
            outcomes += run_fixture(path, ruleset, f"{directory.name}/{path.name}")
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return outcomes
