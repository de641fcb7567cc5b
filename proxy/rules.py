"""Rule files: YAML -> validated -> compiled RuleSet. YAML never reaches the hot path.

Files `*.yaml` in the rules directory load in name order; within a file, rules in order; the
first rule whose every match key holds (keys AND, list values OR) decides. Errors are reported
compiler style, every error of every file in one run: `file:line:col: rule 'x': message`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from . import tarpit
from .agents import PURPOSES, UA_CLASSES, Agent, load_agents
from .exchange import DEFAULT_ALLOW, Action, ContentKind, Exchange, Verdict
from .ranges import AddressSet, load_ranges
from .rights import Rights, load_rights
from .robots import load_policy
from .signals.behaviour import BEHAVIOUR_FLAGS
from .signals.content import content_kind
from .signals.headers import HEADER_PROBLEMS
from .signals.useragent import UAClassifier
from .state import ROBOTS_STATES, VIOLATED_AFTER_READING, VIOLATED_WITHOUT_READING
from .yamlsource import (
    ConfigError,
    LocatedDict,
    LocatedList,
    Mark,
    Problem,
    load_yaml_file,
    suggest,
)

Predicate = Callable[[Exchange], bool]
MatchCompiler = Callable[[list[Any]], Predicate]


class BadMatchValue(ValueError):
    """One value of a match key is wrong; `index` says which, so the error can point at it."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def _check_closed(
    values: list[Any], valid: tuple[str, ...], noun: str, listed: bool = True
) -> None:
    """Every value must be one of `valid`; the error names the bad one, with a suggestion."""
    for i, v in enumerate(values):
        if v not in valid:
            listing = f"; one of {', '.join(x for x in valid if x)}" if listed else ""
            raise BadMatchValue(i, f"unknown {noun} {v!r}{suggest(str(v), valid)}{listing}")


def _compile_path(patterns: list[Any]) -> Predicate:
    """Shell-style globs on the path: /album/*, /download/*.flac, /stream/**."""
    for i, p in enumerate(patterns):
        if not isinstance(p, str) or not p.startswith("/"):
            raise BadMatchValue(i, f"path patterns start with '/', got {p!r}")
    regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
    return lambda ex: regex.match(ex.path) is not None


def _compile_method(methods: list[Any]) -> Predicate:
    wanted = frozenset(str(m).upper() for m in methods)
    return lambda ex: ex.method in wanted


def _compile_content(kinds: list[Any]) -> Predicate:
    _check_closed(kinds, tuple(k.value for k in ContentKind), "content kind", listed=False)
    wanted = frozenset(ContentKind(k) for k in kinds)
    return lambda ex: ex.signals is not None and ex.signals.content in wanted


def _one_of(field: str, valid: tuple[str, ...]) -> MatchCompiler:
    """A match key whose values come from a closed list, compared to one Signals field."""

    def compile_(values: list[Any]) -> Predicate:
        _check_closed(values, valid, "value")
        wanted = frozenset(values)
        return lambda ex: ex.signals is not None and getattr(ex.signals, field) in wanted

    return compile_


def _compile_agent(agents: dict[str, Agent]) -> MatchCompiler:
    def compile_(names: list[Any]) -> Predicate:
        for i, name in enumerate(names):
            if str(name).lower() not in agents:
                raise BadMatchValue(i, f"unknown agent {name!r}"
                                       f"{suggest(str(name), [a.token for a in agents.values()])}")
        wanted = frozenset(agents[str(n).lower()].token for n in names)
        return lambda ex: ex.signals is not None and ex.signals.agent in wanted

    return compile_


def _compile_robots(states: list[Any]) -> Predicate:
    _check_closed(states, (*ROBOTS_STATES, "violated"), "robots state")
    wanted = set(states)
    if "violated" in wanted:
        wanted |= {VIOLATED_AFTER_READING, VIOLATED_WITHOUT_READING}
    frozen = frozenset(wanted)
    return lambda ex: ex.signals is not None and ex.signals.robots in frozen


def _compile_headers(problems: list[Any]) -> Predicate:
    """`headers: inconsistent` (any problem: weak evidence), `headers: contradicted` (two or
    more: the claim is contradicted), or named problems (any of them)."""
    _check_closed(problems, ("inconsistent", "contradicted", *HEADER_PROBLEMS), "header check")
    if "inconsistent" in problems:
        return lambda ex: ex.signals is not None and bool(ex.signals.headers)
    if "contradicted" in problems:
        return lambda ex: ex.signals is not None and len(ex.signals.headers) >= 2
    wanted = frozenset(problems)
    return lambda ex: ex.signals is not None and not wanted.isdisjoint(ex.signals.headers)


def _compile_score(values: list[Any]) -> Predicate:
    """`behaviour_score: 0.7` matches a score of 0.7 or more."""
    if len(values) != 1 or isinstance(values[0], bool) or not isinstance(values[0], int | float):
        raise ValueError("takes one number from 0 to 1 (matches that score or more)")
    threshold = float(values[0])
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"takes one number from 0 to 1, got {threshold:g}")
    return lambda ex: ex.signals is not None and ex.signals.behaviour_score >= threshold


def _compile_flags(flags: list[Any]) -> Predicate:
    _check_closed(flags, BEHAVIOUR_FLAGS, "behaviour flag")
    wanted = frozenset(flags)
    return lambda ex: ex.signals is not None and not wanted.isdisjoint(ex.signals.behaviour_flags)


def _compile_asn(values: list[Any]) -> Predicate:
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**32:
            raise BadMatchValue(i, f"ASNs are numbers like 16509, got {v!r}")
    wanted = frozenset(values)
    return lambda ex: ex.signals is not None and ex.signals.asn in wanted


def _compile_org(values: list[Any]) -> Predicate:
    """Case-insensitive substrings of the organisation: `org: [amazon, hetzner]`."""
    parts = tuple(str(v).lower() for v in values)
    return lambda ex: ex.signals is not None and any(p in ex.signals.org.lower() for p in parts)


def _one_bool(values: list[Any]) -> bool:
    if len(values) != 1 or not isinstance(values[0], bool):
        raise ValueError("takes true or false")
    return values[0]


def _boolean(field: str) -> MatchCompiler:
    """A true/false match key compared to one boolean Signals field."""

    def compile_(values: list[Any]) -> Predicate:
        wanted = _one_bool(values)
        return lambda ex: ex.signals is not None and getattr(ex.signals, field) is wanted

    return compile_


def _compile_verified(values: list[Any]) -> Predicate:
    """`verified: true` (forward-confirmed) or `false` (disproven); a pending check is
    neither, so a real search engine's first request is not refused."""
    wanted = "verified" if _one_bool(values) else "unverified"
    return lambda ex: ex.signals is not None and ex.signals.verified == wanted


def _compile_cidr(ranges: dict[str, AddressSet]) -> MatchCompiler:
    """Addresses, CIDRs, or the names of published range lists in networks/ (ranges.py)."""

    def compile_(values: list[Any]) -> Predicate:
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        lists: list[AddressSet] = []
        for i, v in enumerate(values):
            if str(v) in ranges:
                lists.append(ranges[str(v)])
                continue
            try:
                networks.append(ipaddress.ip_network(str(v), strict=False))
            except ValueError:
                listed = f" (lists in networks/: {', '.join(sorted(ranges))})" if ranges else ""
                raise BadMatchValue(i, f"not an address, CIDR or range list: {v!r}"
                                       f"{suggest(str(v), list(ranges))}{listed}") from None
        sets = (AddressSet(networks), *lists) if networks else tuple(lists)
        return lambda ex: any(ex.client.ip in s for s in sets)

    return compile_


def _compile_operator(operators: list[Any]) -> Predicate:
    wanted = frozenset(str(o).lower() for o in operators)
    return lambda ex: ex.signals is not None and ex.signals.operator.lower() in wanted


def match_keys(
    agents: dict[str, Agent], ranges: dict[str, AddressSet] | None = None
) -> dict[str, MatchCompiler]:
    """The closed set of match keys. Each compiles its list of values into one predicate."""
    return {
        "path": _compile_path,
        "method": _compile_method,
        "content": _compile_content,
        "ua_class": _one_of("ua_class", UA_CLASSES),
        "agent": _compile_agent(agents),
        "operator": _compile_operator,
        "purpose": _one_of("purpose", tuple(p for p in PURPOSES if p)),
        "robots": _compile_robots,
        "headers": _compile_headers,
        "behaviour_score": _compile_score,
        "behaviour_flags": _compile_flags,
        "asn": _compile_asn,
        "org": _compile_org,
        "datacenter": _boolean("datacenter"),
        "cidr": _compile_cidr(ranges or {}),
        "verified": _compile_verified,
        "trapped": _boolean("trapped"),
    }


# Signals that cost something per request are computed only when a rule matches on them:
# match key -> the signal it needs.
COSTLY_SIGNALS = {
    "robots": "robots",
    "headers": "headers",
    "behaviour_score": "behaviour",
    "behaviour_flags": "behaviour",
    "asn": "network",
    "org": "network",
    "datacenter": "network",
    "verified": "verified",
    "trapped": "trapped",
}
ALL_SIGNALS = frozenset(COSTLY_SIGNALS.values())

# Every action, with its parameter validator.
ParamsValidator = Callable[[dict[str, Any]], None]


def _no_params(params: dict[str, Any]) -> None:
    if params:
        raise ValueError(f"takes no params, got {', '.join(sorted(params))}")


def _audio_params(action: str, number: tuple[str, float, float] | None = None
                  ) -> ParamsValidator:
    """Params of an audio action: `watermark: true` (per-client marked copies of the
    variant) and, when `number` is (name, lo, hi), one optional number from lo to hi."""
    names = ", ".join([number[0], "watermark"] if number else ["watermark"])

    def validate(params: dict[str, Any]) -> None:
        for key, value in params.items():
            if key == "watermark":
                if not isinstance(value, bool):
                    raise ValueError("'watermark' must be true or false")
                continue
            if number is None or key != number[0]:
                raise ValueError(f"unknown param '{key}'; {action} takes {names}")
            name, lo, hi = number
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    lo <= value <= hi):
                raise ValueError(f"'{name}' must be a number from {lo:g} to {hi:g}")

    return validate


ACTIONS: dict[Action, ParamsValidator] = {
    Action.ALLOW: _no_params,
    Action.BLOCK: _no_params,
    Action.TARPIT: tarpit.validate_params,
    Action.TRUNCATE: _audio_params("truncate", ("seconds", 1, 600)),
    Action.DECOY: _audio_params("decoy"),
    Action.WATERMARK: _no_params,
    Action.POISON: _audio_params("poison", ("strength", 0.05, 1)),
}
AUDIO_ACTIONS = frozenset({Action.TRUNCATE, Action.DECOY, Action.POISON, Action.WATERMARK})
RULE_KEYS = ("name", "description", "match", "action", "params", "shadow")


@dataclass(frozen=True, slots=True)
class Condition:
    """One match key of a rule, kept with its source values for `sonicshield explain`."""

    key: str
    values: tuple[Any, ...]
    test: Predicate


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    origin: str  # "rules/20-ai.yaml:14 ai-audio"
    conditions: tuple[Condition, ...]
    verdict: Verdict
    uses: frozenset[str] = frozenset()  # costly signals its match needs


# Match keys whose answer is the same for every request of one client (one address and one
# User-Agent) until its trap or robots.txt facts change: a verdict of a bucket that tests only
# these can be reused for the client's next requests of that content kind (VerdictCache).
# The rest read the request itself (path, method, headers), counters that move with every
# request (behaviour), the path against robots.txt, or a check still running (verified).
CLIENT_KEYS = frozenset({"agent", "operator", "purpose", "asn", "org", "datacenter", "cidr",
                         "trapped"})


class Bucket(NamedTuple):
    """The rules a request of one content kind and one UA class can match: their remaining
    tests (content and ua_class are settled), the costly signals those tests read, and
    whether they read only facts of the client (CLIENT_KEYS)."""

    table: tuple[tuple[tuple[Predicate, ...], Verdict], ...]
    needs: frozenset[str]
    per_client: bool


def _bucket(rules: tuple[Rule, ...], content: ContentKind, ua_class: str) -> Bucket:
    table = []
    needs: set[str] = set()
    per_client = True
    for rule in rules:
        tests = []
        keys = []
        for c in rule.conditions:
            if c.key == "content":
                if content.value not in c.values:
                    break
            elif c.key == "ua_class":
                if ua_class not in c.values:
                    break
            else:
                tests.append(c.test)
                keys.append(c.key)
        else:
            table.append((tuple(tests), rule.verdict))
            needs |= rule.uses
            per_client = per_client and CLIENT_KEYS.issuperset(keys)
            if not tests and not rule.verdict.shadow:
                break  # this rule always matches here: the ones after it never decide
    return Bucket(tuple(table), frozenset(needs), per_client)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Compiled rules and the agent lists they were compiled against (swapped together)."""

    rules: tuple[Rule, ...]
    files: tuple[str, ...]
    ua: UAClassifier
    robots_disallowed: tuple[str, ...] = ()  # agents the robots.txt AI section names
    needs: frozenset[str] = frozenset()  # the COSTLY_SIGNALS some rule matches on
    datacenter_asns: frozenset[int] = frozenset()  # rules/networks/datacenters.yaml
    rights: Rights | None = None  # rules/rights.yaml: the declarations (None: none made)
    # path prefixes whose content kind the rule files state (a store whose streams have no
    # audio suffix: /rest/stream?id=...), longest first; the suffix table decides the rest
    content_prefixes: tuple[tuple[str, ContentKind], ...] = ()
    # content kind -> UA class -> Bucket: what decide walks for such a request, precomputed
    # so neither key is tested per rule, and a request's costly signals are only those its
    # candidate rules read
    buckets: dict[ContentKind, dict[str, Bucket]] = field(init=False)
    robots_declarations: tuple[str, ...] = field(init=False)  # rights lines for robots.txt
    _kinds: dict[str, ContentKind] = field(init=False)  # content_kind's answers, by path

    def __post_init__(self) -> None:
        object.__setattr__(self, "robots_declarations",
                           tuple(self.rights.robots_lines()) if self.rights else ())
        buckets = {content: {ua_class: _bucket(self.rules, content, ua_class)
                             for ua_class in UA_CLASSES} for content in ContentKind}
        object.__setattr__(self, "buckets", buckets)
        object.__setattr__(self, "_kinds", {})

    def content_kind(self, path: str) -> ContentKind:
        kind = self._kinds.get(path)
        if kind is None:
            kind = next((k for prefix, k in self.content_prefixes if path.startswith(prefix)),
                        None) or content_kind(path)
            if len(self._kinds) >= _KNOWN_PATHS:
                self._kinds.clear()  # paths are the client's to choose: keep the memory bounded
            self._kinds[path] = kind
        return kind

    def bucket(self, content: ContentKind, ua_class: str) -> Bucket:
        return self.buckets[content][ua_class]

    def decide(self, ex: Exchange) -> Verdict:
        """The first matching rule's verdict. A rule in shadow mode decides nothing: the first
        one that matches is kept in the verdict (`shadowed`) and the rules after it decide."""
        if ex.signals is None:
            return DEFAULT_ALLOW
        shadowed = None
        for tests, verdict in self.buckets[ex.signals.content][ex.signals.ua_class].table:
            for test in tests:
                if not test(ex):
                    break
            else:
                if not verdict.shadow:
                    return verdict if shadowed is None else replace(verdict, shadowed=shadowed)
                if shadowed is None:
                    shadowed = verdict
        return DEFAULT_ALLOW if shadowed is None else replace(DEFAULT_ALLOW, shadowed=shadowed)


_KNOWN_PATHS = 8192


class LiveRules:
    """The rule set in force. Reload swaps in a whole new RuleSet or, on error, keeps the old."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.current = ruleset


def rule_hash(raw: LocatedDict) -> str:
    """A short stable hash of what the rule says (not where it stands)."""
    body = {k: raw.get(k) for k in ("match", "action", "params", "shadow")}
    canonical = json.dumps(body, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _compile_rule(
    raw: Any, mark: Mark, display: str, seen: dict[str, Mark], problems: list[Problem],
    keys: dict[str, MatchCompiler],
) -> Rule | None:
    if not isinstance(raw, LocatedDict):
        problems.append(Problem(mark, "each rule must be a mapping"))
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        problems.append(
            Problem(raw.value_mark("name") if "name" in raw else raw.mark,
                    "every rule needs a 'name' of lower-case letters, digits, '.', '_' or '-'")
        )
        name = "?"
    elif name in seen:
        problems.append(
            Problem(raw.value_mark("name"), f"rule '{name}': duplicate name (first at "
                    f"{seen[name].file}:{seen[name].line})")
        )
    else:
        seen[name] = raw.value_mark("name")
    before = len(problems)

    def fail(m: Mark, message: str) -> None:
        problems.append(Problem(m, f"rule '{name}': {message}"))

    for key in raw:
        if key not in RULE_KEYS:
            fail(raw.key_mark(key), f"unknown key '{key}'{suggest(key, RULE_KEYS)}")

    conditions: list[Condition] = []
    match = raw.get("match", None)
    if match is None:
        fail(raw.mark, "missing 'match' (use 'match: {}' to match every request)")
    elif not isinstance(match, LocatedDict):
        fail(raw.value_mark("match"), "'match' must be a mapping of match keys")
    else:
        for key, value in match.items():
            compiler = keys.get(key)
            if compiler is None:
                fail(match.key_mark(key), f"unknown match key '{key}'{suggest(key, keys)}")
                continue
            values = list(value) if isinstance(value, list) else [value]
            if not values or any(isinstance(v, dict | list) or v is None for v in values):
                fail(match.value_mark(key), f"match key '{key}' takes a value or a list of values")
                continue
            try:
                conditions.append(Condition(key, tuple(values), compiler(values)))
            except (ValueError, re.error) as exc:
                where = match.value_mark(key)
                if isinstance(exc, BadMatchValue) and isinstance(value, LocatedList):
                    where = value.item_mark(exc.index)
                fail(where, f"match key '{key}': {exc}")

    action_text = raw.get("action")
    action: Action | None = None
    if action_text is None:
        fail(raw.mark, "missing 'action'")
    elif action_text not in {a.value for a in Action}:
        names = [a.value for a in Action]
        fail(raw.value_mark("action"),
             f"unknown action {action_text!r}{suggest(str(action_text), names)}")
    else:
        action = Action(action_text)

    params = raw.get("params") or {}
    if not isinstance(params, dict):
        fail(raw.value_mark("params"), "'params' must be a mapping")
        params = {}
    elif action is not None:
        try:
            ACTIONS[action](params)
        except (ValueError, TypeError) as exc:
            fail(raw.value_mark("params"), f"params for '{action.value}': {exc}")

    if action in AUDIO_ACTIONS and isinstance(match, LocatedDict):
        content = next((c.values for c in conditions if c.key == "content"), None)
        if content is None or set(content) != {"audio"}:
            fail(raw.value_mark("action"),
                 f"action '{action.value}' makes a variant of an audio file: the rule's match "
                 f"needs 'content: audio' (and no other kind)")

    shadow = raw.get("shadow", False)
    if not isinstance(shadow, bool):
        fail(raw.value_mark("shadow"), "'shadow' must be true or false")

    if len(problems) > before or action is None:
        return None
    origin = f"{display}:{raw.mark.line} {name}"
    uses = frozenset(COSTLY_SIGNALS[k] for k in match if k in COSTLY_SIGNALS) if isinstance(
        match, dict) else frozenset()
    verdict = Verdict(
        action=action,
        origin=origin,
        rule_hash=rule_hash(raw),
        params=tuple(sorted(params.items())),
        shadow=bool(shadow),
    )
    return Rule(name=name, origin=origin, conditions=tuple(conditions), verdict=verdict,
                uses=uses)


def load_rules(directory: Path) -> RuleSet:
    """Load and compile every rule file of a directory; ConfigError lists all problems.

    Files are named as `DIR/FILE` (the rules folder's own name and the file's), which keeps
    verdict origins short and the same wherever the folder is deployed.
    """
    if not directory.is_dir():
        raise ConfigError([Problem(Mark(str(directory), 0, 0), "rules directory does not exist")])
    problems: list[Problem] = []
    rules: list[Rule] = []
    seen: dict[str, Mark] = {}
    prefixes: dict[str, tuple[ContentKind, str]] = {}  # prefix -> (kind, where it was set)
    try:
        agents = load_agents(directory / "agents")
    except ConfigError as exc:
        problems.extend(exc.problems)
        agents = {}
    rights = None
    try:
        rights = load_rights(directory / "rights.yaml", f"{directory.name}/rights.yaml")
    except ConfigError as exc:
        problems.extend(exc.problems)
    ranges, range_problems = load_ranges(directory, directory.name)
    problems.extend(range_problems)
    keys = match_keys(agents, ranges)
    datacenter_asns: frozenset[int] = frozenset()
    try:
        datacenter_asns = load_datacenters(directory / "networks" / "datacenters.yaml",
                                           f"{directory.name}/networks/datacenters.yaml")
    except ConfigError as exc:
        problems.extend(exc.problems)
    robots_disallowed: tuple[str, ...] = ()
    try:
        policy = load_policy(directory / "robots.yaml", f"{directory.name}/robots.yaml")
        robots_disallowed = tuple(policy.disallowed(agents))
    except ConfigError as exc:
        problems.extend(exc.problems)
    files = sorted(p for p in directory.iterdir()
                   if p.suffix in (".yaml", ".yml") and p.is_file()
                   and p.stem not in ("robots", "rights"))
    for path in files:
        display = f"{directory.name}/{path.name}"
        try:
            doc = load_yaml_file(path, display)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if doc is None:
            continue
        if not isinstance(doc, LocatedDict):
            problems.append(Problem(Mark(display, 1, 1), "a rule file must be a mapping"))
            continue
        for key in doc:
            if key not in FILE_KEYS:
                problems.append(Problem(doc.key_mark(key), f"unknown key '{key}' in a rule file"
                                        f"{suggest(key, FILE_KEYS)}"))
        if "content" in doc:
            _content_prefixes(doc, display, prefixes, problems)
        if doc.get("version") != 1:
            problems.append(Problem(doc.value_mark("version") if "version" in doc else doc.mark,
                                    "'version: 1' is required"))
        if "rules" not in doc:  # a file may only name content paths
            continue
        items = doc["rules"]
        if not isinstance(items, LocatedList):
            problems.append(Problem(doc.value_mark("rules"), "'rules' must be a list"))
            continue
        for i, item in enumerate(items):
            rule = _compile_rule(item, items.item_mark(i), display, seen, problems, keys)
            if rule is not None:
                rules.append(rule)
    if problems:
        raise ConfigError(problems)
    return RuleSet(
        rules=tuple(rules),
        files=tuple(f"{directory.name}/{p.name}" for p in files),
        ua=UAClassifier(agents),
        robots_disallowed=robots_disallowed,
        needs=frozenset().union(*(r.uses for r in rules)),
        datacenter_asns=datacenter_asns,
        rights=rights,
        content_prefixes=tuple(sorted(((p, k) for p, (k, _) in prefixes.items()),
                                      key=lambda pk: -len(pk[0]))),
    )


FILE_KEYS = ("version", "content", "rules")
_CONTENT_KINDS = tuple(k.value for k in ContentKind if k is not ContentKind.DECLARATION)


def _content_prefixes(doc: LocatedDict, display: str,
                      prefixes: dict[str, tuple[ContentKind, str]],
                      problems: list[Problem]) -> None:
    """`content: {audio: [/rest/stream, ...], page: [...]}`: path prefixes and their kind."""
    section = doc["content"]
    if not isinstance(section, LocatedDict):
        problems.append(Problem(doc.value_mark("content"), "'content' must map content kinds "
                                f"({', '.join(_CONTENT_KINDS)}) to lists of path prefixes"))
        return
    for kind_name, items in section.items():
        if kind_name not in _CONTENT_KINDS:
            problems.append(Problem(section.key_mark(kind_name), f"unknown content kind "
                                    f"'{kind_name}'{suggest(str(kind_name), _CONTENT_KINDS)}"))
            continue
        if not isinstance(items, LocatedList):
            problems.append(Problem(section.value_mark(kind_name),
                                    f"'{kind_name}' must be a list of path prefixes"))
            continue
        for i, prefix in enumerate(items):
            mark = items.item_mark(i)
            if not isinstance(prefix, str) or not prefix.startswith("/") or len(prefix) < 2 \
                    or prefix.startswith("/.well-known/"):
                problems.append(Problem(mark, f"a path prefix like /rest/stream, got {prefix!r}"))
                continue
            kind = ContentKind(kind_name)
            earlier = prefixes.get(prefix)
            if earlier is not None and earlier[0] is not kind:
                problems.append(Problem(mark, f"'{prefix}' is already {earlier[0].value} "
                                        f"({earlier[1]})"))
                continue
            prefixes[prefix] = (kind, f"{mark.file}:{mark.line}")


def load_datacenters(path: Path, display: str) -> frozenset[int]:
    """ASNs of hosting providers: `datacenters: [{asn: 16509, name: ...}, ...]`."""
    if not path.exists():
        return frozenset()
    doc = load_yaml_file(path, display)
    items = doc.get("datacenters") if isinstance(doc, LocatedDict) else None
    if not isinstance(items, LocatedList):
        raise ConfigError([Problem(Mark(display, 1, 1),
                                   "expected 'version: 1' and 'datacenters:'")])
    asns, problems = set(), []
    for i, item in enumerate(items):
        asn = item.get("asn") if isinstance(item, dict) else None
        if isinstance(asn, bool) or not isinstance(asn, int) or not 0 < asn < 2**32:
            problems.append(Problem(items.item_mark(i), "each entry needs 'asn: NUMBER'"))
        else:
            asns.add(asn)
    if problems:
        raise ConfigError(problems)
    return frozenset(asns)
