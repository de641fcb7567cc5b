"""Known user agents: the vendored lists in rules/agents/, and the command that regenerates them.

Three files, loaded in this order, a later file overriding an earlier one token by token:

- `ai-robots.yaml`, generated from ai.robots.txt's robots.json (AI agents: operator, purpose);
- `crawlers.yaml`, generated from crawler-user-agents.json (search engines, link previews, feed
  readers and podcast apps, archives, HTTP tools, headless browsers, other bots);
- `curated.yaml`, written by hand: media players and podcast apps the lists lack, and
  corrections (an ai.robots.txt name that is really a link preview, a search engine, ...).

Tokens are matched as whole words, case-insensitively; a token marked `product: true` only as a
product token followed by '/' (generic words such as "Code" or "Spider" would otherwise match
ordinary text).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .yamlsource import (
    ConfigError,
    LocatedDict,
    LocatedList,
    Mark,
    Problem,
    load_yaml_file,
    suggest,
)

UA_CLASSES = (
    "ai-crawler",
    "search-engine",
    "link-preview",
    "feed-reader",
    "media-player",
    "archiver",
    "bot",
    "http-library",
    "headless-browser",
    "browser",
    "empty",
    "unknown",
)
PURPOSES = ("training", "search", "user-triggered", "undocumented", "")
AGENT_FILES = ("ai-robots.yaml", "crawlers.yaml", "curated.yaml")


@dataclass(frozen=True, slots=True)
class Agent:
    token: str  # as the vendor writes it, e.g. "GPTBot"
    ua_class: str
    operator: str = ""
    purpose: str = ""  # for ai-crawler: training, search, user-triggered, undocumented
    product: bool = False  # match only as "token/..."


def load_agents(directory: Path) -> dict[str, Agent]:
    """token (lower-case) -> Agent, from the agent files present; errors with file:line:col."""
    agents: dict[str, Agent] = {}
    problems: list[Problem] = []
    for name in AGENT_FILES:
        path = directory / name
        if not path.exists():
            continue
        display = f"{directory.parent.name}/{directory.name}/{name}"
        try:
            doc = load_yaml_file(path, display)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if not isinstance(doc, LocatedDict) or not isinstance(doc.get("agents"), LocatedList):
            problems.append(Problem(Mark(display, 1, 1), "expected 'version: 1' and 'agents:'"))
            continue
        items: LocatedList = doc["agents"]
        for i, item in enumerate(items):
            agent = _agent(item, items.item_mark(i), problems)
            if agent is not None:
                agents[agent.token.lower()] = agent
    if problems:
        raise ConfigError(problems)
    return agents


_AGENT_KEYS = ("token", "class", "operator", "purpose", "product")


def _agent(item: Any, mark: Mark, problems: list[Problem]) -> Agent | None:
    if not isinstance(item, LocatedDict):
        problems.append(Problem(mark, "each agent must be a mapping"))
        return None
    before = len(problems)
    for key in item:
        if key not in _AGENT_KEYS:
            problems.append(Problem(item.key_mark(key), f"unknown key '{key}'"
                                    f"{suggest(key, _AGENT_KEYS)}"))
    token = item.get("token")
    if not isinstance(token, str) or len(token) < 2:
        problems.append(Problem(item.value_mark("token"), "'token' must be a string"))
    ua_class = item.get("class")
    if ua_class not in UA_CLASSES:
        problems.append(Problem(item.value_mark("class"), f"unknown class {ua_class!r}"
                                f"{suggest(str(ua_class), UA_CLASSES)}"))
    purpose = item.get("purpose", "")
    if purpose not in PURPOSES:
        problems.append(Problem(item.value_mark("purpose"), f"unknown purpose {purpose!r}"))
    if len(problems) > before:
        return None
    return Agent(token=str(token), ua_class=str(ua_class), operator=str(item.get("operator", "")),
                 purpose=str(purpose), product=bool(item.get("product", False)))


# ---- generating the vendored files --------------------------------------------------------

# ai.robots.txt names that are ordinary words; matched only as product tokens ("Code/1.2").
GENERIC_NAMES = frozenset({"code", "spider", "operator", "cursor", "trae", "yak", "lcc", "openai"})

# Known-Agents categories and free-text 'function' values -> purpose.
_PURPOSE_PATTERNS = (
    ("user-triggered", re.compile(r"assistant|agent|user|on behalf|browsing|chat", re.I)),
    ("search", re.compile(r"search", re.I)),
    ("training", re.compile(r"train|scrap|data|llm|dataset|model", re.I)),
)

# crawler-user-agents tags -> our classes, strongest first (an entry with several tags takes
# the first that applies).
_TAG_CLASSES = (
    ("ai-crawler", "ai-crawler"),
    ("social-preview", "link-preview"),
    ("search-engine", "search-engine"),
    ("feed-reader", "feed-reader"),
    ("archiver", "archiver"),
    ("browser-automation", "headless-browser"),
    ("http-library", "http-library"),
    ("seo", "bot"),
    ("monitoring", "bot"),
    ("scanner", "bot"),
    ("advertising", "bot"),
    ("academic", "bot"),
)


def purpose_of(function: str) -> str:
    for purpose, pattern in _PURPOSE_PATTERNS:
        if pattern.search(function):
            return purpose
    return "undocumented"


def _operator(text: str) -> str:
    """'[OpenAI](https://openai.com)' -> 'OpenAI'; 'Unclear at this time.' -> ''."""
    m = re.match(r"\[([^\]]+)\]", text)
    name = m.group(1) if m else text
    return "" if name.lower().startswith(("unclear", "no information")) else name.strip()


def literal_tokens(pattern: str) -> list[str]:
    """The literal strings a crawler-user-agents pattern needs, lower-cased.

    Handles what that list uses: escapes, letter-case classes ([wW]), alternation (a|b and
    (a|b)), anchors, and gaps ([\\s\\S]*, .*, \\d+) which split a pattern into the longest literal
    piece. Returns [] when nothing literal and specific (4+ characters) remains.
    """
    # escaped characters are literals: park them in the private-use area while parsing
    p = re.sub(r"\\([^\w\s])", lambda m: chr(0xE000 + ord(m.group(1))), pattern.lower())
    p = re.sub(r"\[(.)\1\]", r"\1", p)  # [ww] -> w after lower-casing
    p = p.replace("^", "").replace("$", "")
    alternatives = _split_alternatives(p)
    out = []
    for alt in alternatives:
        pieces = _GAPS.split(alt)
        best = max(pieces, key=len, default="")
        if len(best) < 4 or re.search(r"[()\[\]|*+?{}\\]", best):
            return []
        out.append(re.sub("[\ue000-\ue0ff]", lambda m: chr(ord(m.group()) - 0xE000), best).strip())
    return out


# what separates literal pieces: [\s\S]*, .*, .+, \d+, a character class, an optional group
# or character
_GAPS = re.compile(r"\[\\s\\S\][*+]|\.\*|\.\+|\\d[+*]?|\[[^\]]*\][*+?]?|\([^)]*\)[?*]|.\?")


def _split_alternatives(p: str) -> list[str]:
    m = re.fullmatch(r"(.*)\(([^()]*\|[^()]*)\)(.*)", p)
    if m:
        head, options, tail = m.groups()
        return [a for opt in options.split("|") for a in _split_alternatives(head + opt + tail)]
    if "|" in p and "(" not in p:
        return p.split("|")
    return [p]


def _vendor_spelling(key: str, instances: list[str]) -> str:
    """The token as the vendor's examples most often write it ('googlebot' -> 'Googlebot')."""
    spellings = Counter(
        ua[i : i + len(key)] for ua in instances if (i := ua.lower().find(key)) >= 0
    )
    return spellings.most_common(1)[0][0] if spellings else key


def _matches_instances(tokens: list[str], instances: list[str]) -> bool:
    return bool(tokens) and all(any(t in ua.lower() for t in tokens) for ua in instances)


def _header(source: str, data: bytes, note: str) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return (
        f"# GENERATED by `sonicshield agents update`: do not edit; put corrections in\n"
        f"# curated.yaml, which overrides this file token by token.\n"
        f"# Source: {source}\n# sha256 of the source file: {digest}\n# Licence: MIT (see the "
        f"source repository).\n# {note}\n"
    )


def _yaml_agents(agents: list[Agent]) -> str:
    lines = ["version: 1", "agents:" if agents else "agents: []"]
    for a in sorted(agents, key=lambda a: a.token.lower()):
        lines.append(f"  - token: {json.dumps(a.token)}")
        lines.append(f"    class: {a.ua_class}")
        if a.operator:
            lines.append(f"    operator: {json.dumps(a.operator)}")
        if a.purpose:
            lines.append(f"    purpose: {a.purpose}")
        if a.product:
            lines.append("    product: true")
    return "\n".join(lines) + "\n"


def generate_ai_robots(data: bytes, source: str) -> str:
    entries: dict[str, dict[str, Any]] = json.loads(data)
    agents = []
    for name, info in entries.items():
        agents.append(Agent(
            token=name,
            ua_class="ai-crawler",
            operator=_operator(str(info.get("operator", ""))),
            purpose=purpose_of(str(info.get("function", ""))),
            product=name.lower() in GENERIC_NAMES or bool(info.get("has_name_and_version")),
        ))
    note = f"{len(agents)} agents; purpose from each entry's 'function'."
    return _header(source, data, note) + _yaml_agents(agents)


def generate_crawlers(data: bytes, source: str, skip_tokens: set[str]) -> tuple[str, list[str]]:
    """Crawler entries whose pattern reduces to literal tokens that match all its instances.

    Returns the file text and the patterns left out (reported by the command).
    """
    entries: list[dict[str, Any]] = json.loads(data)
    agents: dict[str, Agent] = {}
    left_out = []
    for entry in entries:
        tags = entry.get("tags", [])
        ua_class = next((c for tag, c in _TAG_CLASSES if tag in tags), None)
        if ua_class is None:
            continue
        tokens = literal_tokens(entry["pattern"])
        if not _matches_instances(tokens, entry.get("instances", [])):
            left_out.append(entry["pattern"])
            continue
        for token in tokens:
            product = token.endswith("/")
            key = token.rstrip("/")
            if len(key) < 3 or key in skip_tokens or key in agents:
                continue
            agents[key] = Agent(token=_vendor_spelling(key, entry["instances"]),
                                ua_class=ua_class, product=product)
    note = (f"{len(agents)} tokens from {len(entries)} entries; {len(left_out)} patterns left "
            f"out (not reducible to literal tokens that match the entry's own examples).")
    return _header(source, data, note) + _yaml_agents(list(agents.values())), left_out


def update_agents(
    ai_robots: Path, crawlers: Path, out_dir: Path, ai_source: str, crawlers_source: str
) -> list[str]:
    """Regenerate ai-robots.yaml and crawlers.yaml from newer upstream files.

    The *_source texts name where the files came from (repository, path, commit) for the
    provenance header.
    """
    ai_data = ai_robots.read_bytes()
    ai_text = generate_ai_robots(ai_data, ai_source)
    ai_tokens = {name.lower() for name in json.loads(ai_data)}
    cr_text, left_out = generate_crawlers(crawlers.read_bytes(), crawlers_source, ai_tokens)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ai-robots.yaml").write_text(ai_text)
    (out_dir / "crawlers.yaml").write_text(cr_text)
    return left_out
