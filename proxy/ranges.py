"""Published crawler address ranges, as named lists a rule's `cidr` key can use.

Operators publish the addresses their crawlers use, in one JSON shape (Google's googlebot.json,
Bing's bingbot.json, OpenAI's gptbot.json, Perplexity's perplexitybot.json and others):
`{"creationTime": "...", "prefixes": [{"ipv4Prefix": "66.249.64.0/27"}, {"ipv6Prefix": ...}]}`.
`sonicshield ranges import NAME FILE` turns such a file into `rules/networks/NAME.yaml`, with
its provenance, and `cidr: [NAME]` in a rule then matches any address in it. The lists change
every few weeks, so none is vendored: a stale copy would be wrong in both directions. Fetch the
operator's file where the proxy runs, import it, reload.

Lookups: the prefixes are merged into sorted, disjoint integer intervals per address family and
searched with bisect, so a list of hundreds of prefixes costs one parse and one bisect.
"""

from __future__ import annotations

import bisect
import datetime
import ipaddress
import json
from collections.abc import Iterable
from pathlib import Path

from .yamlsource import ConfigError, LocatedDict, LocatedList, Mark, Problem, load_yaml_file

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RANGES_DIR = "networks"  # inside the rules folder
NOT_RANGES = frozenset({"datacenters.yaml"})  # other files of that folder


class AddressSet:
    """Membership of addresses in a set of networks, by bisect over merged intervals."""

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        by_family: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for n in networks:
            by_family[n.version].append((int(n.network_address), int(n.broadcast_address)))
        for family, spans in by_family.items():
            for start, end in sorted(spans):
                ends = self._ends[family]
                if ends and start <= ends[-1] + 1:
                    ends[-1] = max(ends[-1], end)
                else:
                    self._starts[family].append(start)
                    ends.append(end)

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        value = int(ip)
        i = bisect.bisect_right(self._starts[ip.version], value) - 1
        return i >= 0 and value <= self._ends[ip.version][i]


def parse_published(data: bytes) -> tuple[list[IPNetwork], str]:
    """The prefixes of a published ranges file, and its creationTime ("" when absent)."""
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    prefixes = doc.get("prefixes") if isinstance(doc, dict) else None
    if not isinstance(prefixes, list):
        raise ValueError("expected an object with a 'prefixes' list (the shape of "
                         "googlebot.json, bingbot.json, gptbot.json)")
    networks: list[IPNetwork] = []
    for i, entry in enumerate(prefixes):
        text = None
        if isinstance(entry, dict):
            text = entry.get("ipv4Prefix") or entry.get("ipv6Prefix")
        try:
            networks.append(ipaddress.ip_network(str(text), strict=False))
        except ValueError:
            raise ValueError(f"prefixes[{i}]: not an ipv4Prefix or ipv6Prefix: {entry!r}") from None
    if not networks:
        raise ValueError("the file lists no prefixes")
    created = doc.get("creationTime", "")
    return networks, created if isinstance(created, str) else ""


def render_list(name: str, networks: list[IPNetwork], source: str, created: str) -> str:
    imported = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"# {name}: published crawler addresses, imported by `sonicshield ranges import`.",
        f"# Source: {source}",
        f"# Published: {created or 'not stated in the file'}; imported: {imported}.",
        "# Re-import when the operator publishes a new file; rules name this list as "
        f"`cidr: [{name}]`.",
        "version: 1",
        "prefixes:",
    ]
    lines += [f"  - {n}" for n in networks]
    return "\n".join(lines) + "\n"


def load_ranges(directory: Path, display_dir: str) -> tuple[dict[str, AddressSet], list[Problem]]:
    """Every list in DIR/networks/ (datacenters.yaml aside), by file stem."""
    folder = directory / RANGES_DIR
    lists: dict[str, AddressSet] = {}
    problems: list[Problem] = []
    if not folder.is_dir():
        return lists, problems
    for path in sorted(folder.glob("*.yaml")):
        if path.name in NOT_RANGES:
            continue
        display = f"{display_dir}/{RANGES_DIR}/{path.name}"
        try:
            doc = load_yaml_file(path, display)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        items = doc.get("prefixes") if isinstance(doc, LocatedDict) else None
        if not isinstance(items, LocatedList) or doc.get("version") != 1:
            problems.append(Problem(Mark(display, 1, 1),
                                    "expected 'version: 1' and 'prefixes:' (a list of CIDRs)"))
            continue
        networks = []
        for i, item in enumerate(items):
            try:
                networks.append(ipaddress.ip_network(str(item), strict=False))
            except ValueError:
                problems.append(Problem(items.item_mark(i), f"not a CIDR: {item!r}"))
        lists[path.stem] = AddressSet(networks)
    return lists, problems
