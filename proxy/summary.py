"""`sonicshield summary`: what the rules did, and would have done, by rule and by client.

The first-deployment path is shadow first (README "Shadow first"): run with `shadow: true`,
read this summary of the access log (or of the evidence log), and enforce once every rule
that would have changed a response did so for crawlers only. A line is counted for its
deciding rule and, where a shadow rule matched first or the whole proxy ran in shadow mode,
for what would have been served.

Sources: access-log files (what the proxy writes to stderr, in either `log.format`: JSON
lines or logfmt text; other lines are skipped and counted), `-` for standard input, or an
evidence folder (every exchange record; the evidence log keeps only the requests that were
not plainly allowed).
"""

from __future__ import annotations

import collections
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from .evidence.report import read_records


@dataclass(frozen=True, slots=True)
class Line:
    """One request, as either log records it."""

    client: str
    ua: str
    ua_class: str
    rule: str  # the deciding rule's origin
    action: str  # the action decided
    served: str  # what the client got: upstream or the variant's kind
    would: tuple[str, str] | None  # (action, origin) that shadow mode kept from the client
    bytes: int


@dataclass
class Tally:
    requests: int = 0
    bytes: int = 0
    clients: set[str] = field(default_factory=set)
    served: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, line: Line, served: str) -> None:
        self.requests += 1
        self.bytes += line.bytes
        self.clients.add(line.client)
        self.served[served] += 1


@dataclass
class Summary:
    lines: int = 0
    skipped: int = 0
    by_rule: dict[str, Tally] = field(default_factory=dict)
    would: dict[tuple[str, str], Tally] = field(default_factory=dict)  # (origin, action)
    by_client: dict[tuple[str, str], Tally] = field(default_factory=dict)  # (ip, ua_class)
    client_uas: dict[tuple[str, str], str] = field(default_factory=dict)
    client_rules: dict[tuple[str, str], collections.Counter[str]] = field(
        default_factory=dict)


def _access_line(fields: dict[str, Any]) -> Line:
    shadowed = fields.get("shadowed")
    would = None
    if isinstance(shadowed, str) and "; " in shadowed:
        action, origin = shadowed.split("; ", 1)
        would = (action, origin)
    elif fields.get("shadow") and fields.get("action") != "allow":
        would = (str(fields["action"]), str(fields["verdict"]))
    return Line(client=str(fields["client"]), ua=str(fields.get("ua", "")),
                ua_class=str(fields.get("ua_class", "")), rule=str(fields["verdict"]),
                action=str(fields["action"]), served=str(fields.get("variant", "")),
                would=would, bytes=int(fields.get("bytes") or 0))


def _evidence_line(record: dict[str, Any]) -> Line:
    verdict = record["verdict"]
    shadowed = verdict.get("shadowed")
    would = None
    if shadowed is not None:
        would = (str(shadowed["action"]), str(shadowed["origin"]))
    elif verdict.get("shadow") and verdict.get("action") != "allow":
        would = (str(verdict["action"]), str(verdict["origin"]))
    signals = record.get("signals") or {}
    return Line(client=str(record["client"]["ip"]), ua=str(record.get("ua", "")),
                ua_class=str(signals.get("ua_class", "")), rule=str(verdict["origin"]),
                action=str(verdict["action"]),
                served=str((record.get("variant") or {}).get("kind", "")), would=would,
                bytes=int(record.get("bytes") or 0))


_LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def _logfmt(text: str) -> dict[str, Any]:
    """The fields of a text-format line (proxy/logs.py TextFormatter)."""
    return {k: json.loads(v) if v.startswith('"') else v for k, v in _LOGFMT.findall(text)}


def access_lines(stream: Iterable[str], summary: Summary) -> Iterator[Line]:
    for text in stream:
        try:
            if text.lstrip().startswith("{"):
                fields = orjson.loads(text)
            elif " event=access " in text:
                fields = _logfmt(text.split(": ", 1)[1])
            else:
                summary.skipped += 1
                continue
            if fields.get("event") != "access":
                summary.skipped += 1
                continue
            yield _access_line(fields)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
            summary.skipped += 1


def evidence_lines(folder: Path, summary: Summary) -> Iterator[Line]:
    records, bad = read_records(folder)
    summary.skipped += bad
    for record in records:
        if record.get("kind") != "exchange":
            continue
        try:
            yield _evidence_line(record)
        except (KeyError, TypeError, ValueError):
            summary.skipped += 1


def summarise(lines: Iterable[Line], summary: Summary) -> Summary:
    for line in lines:
        summary.lines += 1
        summary.by_rule.setdefault(line.rule, Tally()).add(line, line.served or line.action)
        if line.would is not None:
            action, origin = line.would
            summary.would.setdefault((origin, action), Tally()).add(line, action)
        key = (line.client, line.ua_class or "-")
        summary.by_client.setdefault(key, Tally()).add(line, line.served or line.action)
        summary.client_uas.setdefault(key, line.ua)
        rules = summary.client_rules.setdefault(key, collections.Counter())
        rules[_rule_name(line.would[1] if line.would else line.rule)] += 1
    return summary


def _rule_name(origin: str) -> str:
    """"rules/30-disguised.yaml:23 trapped-audio" -> "trapped-audio"."""
    return origin.rsplit(" ", 1)[-1]


def _counts(counter: collections.Counter[str]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counter.most_common())


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [head, *rows]]


def render(summary: Summary, top: int) -> str:
    out = [f"{summary.lines} requests" + (f" ({summary.skipped} other lines skipped)"
                                          if summary.skipped else "")]
    out += ["", "by deciding rule"]
    rows = [[rule, str(t.requests), str(len(t.clients)), str(t.bytes), _counts(t.served)]
            for rule, t in sorted(summary.by_rule.items(), key=lambda kv: -kv[1].requests)]
    out += _table(["rule", "requests", "clients", "bytes", "served"], rows)
    out += ["", "would have been served, had shadow mode been off"]
    if summary.would:
        rows = [[origin, action, str(t.requests), str(len(t.clients))]
                for (origin, action), t in sorted(summary.would.items(),
                                                  key=lambda kv: -kv[1].requests)]
        out += _table(["rule", "action", "requests", "clients"], rows)
    else:
        out.append("  (nothing: no rule ran in shadow mode, or none matched)")
    out += ["", f"by client (the {top} with most requests)"]
    clients = sorted(summary.by_client.items(), key=lambda kv: -kv[1].requests)[:top]
    rows = [[ip, ua_class, str(t.requests), _counts(t.served),
             _counts(summary.client_rules[(ip, ua_class)]),
             summary.client_uas[(ip, ua_class)][:60]]
            for (ip, ua_class), t in clients]
    out += _table(["client", "class", "requests", "served", "rules (shadow: would)",
                   "user agent"], rows)
    return "\n".join(out) + "\n"


def summary_of(sources: list[str], stdin: TextIO | None = None) -> Summary:
    """Read every source (files, `-`, evidence folders) into one summary. OSError for a
    source that cannot be read."""
    summary = Summary()
    for source in sources:
        if source == "-":
            summarise(access_lines(stdin or sys.stdin, summary), summary)
            continue
        path = Path(source)
        if path.is_dir():
            summarise(evidence_lines(path, summary), summary)
            continue
        with path.open(encoding="utf-8", errors="replace") as f:
            summarise(access_lines(f, summary), summary)
    return summary
