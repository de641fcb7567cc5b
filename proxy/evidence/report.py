"""`sonicshield evidence report`: what the log proves, per crawler and per client network.

For each operator/agent (and each client cluster: the /24 or /64 network, with its ASN
organisation): first and last seen, requests recorded, verdicts, audio fetched by variant,
robots.txt fetched and then violated (the two timestamps side by side), the declarations that
were served, and the watermark payloads handed out. As a self-contained HTML page (inline SVG
charts, no script, no external file), CSV or JSON.
"""

from __future__ import annotations

import collections
import csv
import html
import io
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .chain import chain_files, lines
from .verify import ChainCheck


@dataclass
class Violation:
    client: str
    group: str
    robots_fetched: str  # time the client fetched robots.txt
    robots_sha256: str
    violated: str  # time of its first request robots.txt forbade it, after that
    url: str
    verdict: str
    count: int = 1  # forbidden requests after reading


@dataclass
class Handout:
    t: str
    group: str
    client: str
    url: str
    variant: str
    watermark: str
    sha256: str
    exchange: str


@dataclass
class Group:
    scope: str  # agent | cluster
    name: str
    first: str = ""
    last: str = ""
    requests: int = 0
    clients: set[str] = field(default_factory=set)
    actions: collections.Counter[str] = field(default_factory=collections.Counter)
    audio: collections.Counter[str] = field(default_factory=collections.Counter)
    robots_fetches: int = 0
    violations: int = 0  # requests robots.txt forbade, read first or not
    after_reading: int = 0  # of those, after the client had fetched robots.txt
    declarations: set[str] = field(default_factory=set)
    watermarks: list[str] = field(default_factory=list)

    def add(self, r: dict[str, Any]) -> None:
        t = r["t"]
        self.first = min(self.first or t, t)
        self.last = max(self.last, t)
        self.requests += 1
        self.clients.add(r["client"]["ip"])
        self.actions[r["verdict"]["action"]] += 1
        variant = r.get("variant") or {}
        if (r.get("signals") or {}).get("content") == "audio":
            self.audio[variant.get("kind", "?")] += 1
        if variant.get("watermark"):
            self.watermarks.append(variant["watermark"])
        decl = r.get("declarations") or {}
        if decl.get("robots_sha256"):
            self.declarations.add(f"robots.txt {decl['robots_sha256'][:12]}")
        if decl.get("tdmrep_sha256"):
            self.declarations.add(f"tdmrep.json {decl['tdmrep_sha256'][:12]}")
        for name, value in (decl.get("headers") or {}).items():
            self.declarations.add(f"{name}: {value}")

    def row(self) -> dict[str, Any]:
        return {
            "scope": self.scope, "name": self.name, "first_seen": self.first,
            "last_seen": self.last, "requests": self.requests, "clients": len(self.clients),
            "actions": dict(self.actions.most_common()),
            "audio_by_variant": dict(self.audio.most_common()),
            "robots_txt_fetches": self.robots_fetches,
            "robots_violations": self.violations,
            "violations_after_reading": self.after_reading,
            "declarations": sorted(self.declarations),
            "watermarks": sorted(set(self.watermarks)),
        }


@dataclass
class Report:
    directory: Path
    checks: list[ChainCheck]
    records: int = 0
    unreadable: int = 0
    first: str = ""
    last: str = ""
    agents: dict[str, Group] = field(default_factory=dict)
    clusters: dict[str, Group] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    handouts: list[Handout] = field(default_factory=list)
    texts: dict[str, tuple[str, str]] = field(default_factory=dict)  # sha256 -> (name, text)
    gaps: list[str] = field(default_factory=list)
    hourly: dict[str, collections.Counter[str]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "folder": str(self.directory), "from": self.first, "to": self.last,
            "records": self.records, "unreadable_lines": self.unreadable,
            "chains": [{"chain": c.chain, "ok": c.ok, "records": c.records,
                        "problem": c.problem, "gaps": c.gaps, "notes": c.notes}
                       for c in self.checks],
            "agents": [g.row() for g in _ranked(self.agents)],
            "clusters": [g.row() for g in _ranked(self.clusters)],
            "fetched_then_violated": [v.__dict__ for v in self.violations],
            "watermarks": [h.__dict__ for h in self.handouts],
            "declarations": {sha: {"name": n, "text": t} for sha, (n, t) in self.texts.items()},
        }


def agent_name(r: dict[str, Any]) -> str:
    """Who the client says it is: the known agent and its operator, else its UA class and UA."""
    s = r.get("signals") or {}
    if s.get("agent"):
        return f"{s['agent']} ({s['operator']})" if s.get("operator") else str(s["agent"])
    ua = str(r.get("ua") or "")
    if not ua:
        return "(no User-Agent)"
    return f"{s.get('ua_class', 'unknown')}: {ua[:80]}"


def cluster_name(r: dict[str, Any]) -> str:
    ip = r["client"]["ip"]
    try:
        addr = ipaddress.ip_address(ip)
        net = ipaddress.ip_network(f"{ip}/{24 if addr.version == 4 else 64}", strict=False)
        name = str(net)
    except ValueError:
        name = ip
    asn, org = r["client"].get("asn"), r["client"].get("org")
    return f"{name} (AS{asn} {org})" if asn else name


def read_records(directory: Path) -> tuple[list[dict[str, Any]], int]:
    """Every record of every chain (not checked: that is verify's job), and the number of
    lines that were not JSON."""
    out, bad = [], 0
    for files in chain_files(directory).values():
        for f in files:
            for _, line, complete in lines(f.path):
                if not complete:
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    bad += 1
                    continue
                if isinstance(record, dict) and isinstance(record.get("t"), str):
                    out.append(record)
                else:
                    bad += 1
    return out, bad


def build_report(directory: Path, checks: list[ChainCheck]) -> Report:
    records, bad = read_records(directory)
    report = Report(directory, checks, unreadable=bad)
    # several chains (workers) interleave: time order, for "fetched, then violated"
    records.sort(key=lambda r: r["t"])
    # a client is an address and the User-Agent it gives: (first robots.txt fetch, sha256)
    robots_read: dict[tuple[str, str], tuple[str, str]] = {}
    open_violations: dict[tuple[str, str], Violation] = {}
    for r in records:
        kind = r.get("kind")
        if kind == "declarations":
            report.texts[str(r.get("sha256"))] = (str(r.get("name")), str(r.get("text")))
            continue
        if kind == "gap":
            report.gaps.append(f"{r.get('dropped')} records lost from {r.get('from')} to "
                               f"{r.get('to')}: {r.get('reason')}")
            continue
        if kind != "exchange" or not isinstance(r.get("client"), dict):
            continue
        report.records += 1
        t, ip = r["t"], r["client"]["ip"]
        client = (ip, str(r.get("ua", "")))
        report.first = report.first or t
        report.last = t
        name = agent_name(r)
        groups = (report.agents.setdefault(name, Group("agent", name)),
                  report.clusters.setdefault(cluster_name(r), Group("cluster", cluster_name(r))))
        for g in groups:
            g.add(r)
        report.hourly.setdefault(t[:13], collections.Counter())[name] += 1
        path = str(r.get("url", "")).split("?", 1)[0]
        if path == "/robots.txt" and r.get("status") == 200:
            for g in groups:
                g.robots_fetches += 1
            robots_read.setdefault(client, (t, str((r.get("robots") or {}).get("sha256", ""))))
        elif (r.get("robots") or {}).get("disallowed"):
            for g in groups:
                g.violations += 1
            if client in robots_read:
                for g in groups:
                    g.after_reading += 1
                seen = open_violations.get(client)
                if seen is None:
                    fetched, sha = robots_read[client]
                    seen = open_violations[client] = Violation(
                        ip, name, fetched, sha, t, str(r.get("url")), r["verdict"]["action"],
                        count=0)
                    report.violations.append(seen)
                seen.count += 1
        variant = r.get("variant") or {}
        if variant.get("watermark"):
            report.handouts.append(Handout(t, name, ip, str(r.get("url")),
                                           str(variant.get("kind")), variant["watermark"],
                                           str(variant.get("sha256")), str(r.get("id"))))
    return report


def _ranked(groups: dict[str, Group]) -> list[Group]:
    return sorted(groups.values(), key=lambda g: (-g.requests, g.name))


# ---- CSV ----------------------------------------------------------------------------------

def to_csv(report: Report) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["scope", "name", "first_seen", "last_seen", "requests", "clients", "actions",
                "audio_by_variant", "robots_txt_fetches", "robots_violations",
                "violations_after_reading", "robots_fetched_at", "violated_at",
                "declarations", "watermarks"])
    first_violation: dict[str, Violation] = {}
    for v in report.violations:
        first_violation.setdefault(v.group, v)
    for groups in (report.agents, report.clusters):
        for g in _ranked(groups):
            row = g.row()
            first = first_violation.get(g.name) if g.scope == "agent" else None
            w.writerow([g.scope, g.name, g.first, g.last, g.requests, row["clients"],
                        _pairs(g.actions), _pairs(g.audio), g.robots_fetches, g.violations,
                        g.after_reading, first.robots_fetched if first else "",
                        first.violated if first else "",
                        "; ".join(row["declarations"]), " ".join(row["watermarks"])])
    return out.getvalue()


def _pairs(counts: collections.Counter[str]) -> str:
    return " ".join(f"{k}={n}" for k, n in counts.most_common())


# ---- HTML ---------------------------------------------------------------------------------

_COLOURS = {"allow": "#4c9a2a", "block": "#c0392b", "tarpit": "#8e44ad", "truncate": "#e67e22",
            "decoy": "#2980b9", "poison": "#7f8c8d", "watermark": "#16a085"}


def to_html(report: Report) -> str:
    e = html.escape
    ok = all(c.ok for c in report.checks)
    chain_rows = "".join(
        f"<tr><td>{e(c.chain)}</td><td class={'ok' if c.ok else 'bad'}>"
        f"{'whole' if c.ok else 'BROKEN'}</td><td>{c.records}</td>"
        f"<td>{e(c.problem or '; '.join(c.gaps + c.notes) or '-')}</td></tr>"
        for c in report.checks)
    agents = _ranked(report.agents)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>SonicShield evidence report</title><style>", _CSS, "</style></head><body>",
        "<h1>SonicShield evidence report</h1>",
        f"<p>Log folder <code>{e(str(report.directory))}</code>: {report.records} recorded "
        f"encounters from {e(report.first or '-')} to {e(report.last or '-')}. "
        f"Chain check: <b class={'ok' if ok else 'bad'}>"
        f"{'every chain is whole' if ok else 'a chain is BROKEN'}</b>.</p>",
        "<table><tr><th>chain</th><th>state</th><th>records</th><th>detail</th></tr>",
        chain_rows, "</table>",
        "<h2>Requests by agent and verdict</h2>", _bars(agents[:15]),
        "<h2>Recorded encounters per hour</h2>", _timeline(report),
        "<h2>robots.txt fetched, then violated</h2>",
        _table(["client", "agent", "fetched robots.txt", "then requested", "first forbidden URL",
                "answered with", "forbidden requests", "robots.txt served (sha256)"],
               [[v.client, v.group, v.robots_fetched, v.violated, v.url, v.verdict,
                 str(v.count), v.robots_sha256[:16]] for v in report.violations])
        or "<p>No client fetched robots.txt and then requested what it forbids.</p>",
        "<h2>By operator / agent</h2>", _group_table(agents),
        "<h2>By client network</h2>", _group_table(_ranked(report.clusters)),
        "<h2>Watermarked copies handed out</h2>",
        _table(["time", "agent", "client", "URL", "variant", "payload", "sha256 of the copy",
                "exchange"],
               [[h.t, h.group, h.client, h.url, h.variant, h.watermark, h.sha256[:16],
                 h.exchange] for h in report.handouts])
        or "<p>No watermarked copy was handed out.</p>",
        "<h2>Declarations served</h2>",
    ]
    for sha, (name, text) in sorted(report.texts.items(), key=lambda kv: kv[1][0]):
        parts.append(f"<details><summary>{e(name)} <code>{e(sha)}</code></summary>"
                     f"<pre>{e(text)}</pre></details>")
    if report.gaps:
        parts.append("<h2>Gaps</h2><ul>" + "".join(f"<li>{e(g)}</li>" for g in report.gaps)
                     + "</ul>")
    parts.append("</body></html>\n")
    return "".join(parts)


_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#f3f3f3}.ok{color:#2e7d32}.bad{color:#c62828}
code,pre{font:12px ui-monospace,monospace}pre{background:#f7f7f7;padding:.5em;overflow:auto}
svg text{font:11px system-ui,sans-serif}"""


def _table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return ""
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                      for row in rows) + "</table>")


def _group_table(groups: list[Group]) -> str:
    return _table(
        ["name", "first seen", "last seen", "requests", "clients", "verdicts", "audio by variant",
         "robots.txt fetches", "forbidden requests (after reading)", "declarations served",
         "watermarks"],
        [[g.name, g.first, g.last, str(g.requests), str(len(g.clients)), _pairs(g.actions),
          _pairs(g.audio), str(g.robots_fetches), f"{g.violations} ({g.after_reading})",
          "; ".join(sorted(g.declarations)), " ".join(sorted(set(g.watermarks)))]
         for g in groups]) or "<p>Nothing recorded.</p>"


def _bars(groups: list[Group]) -> str:
    """Horizontal bars, one per agent, stacked by verdict action."""
    if not groups:
        return "<p>Nothing recorded.</p>"
    e = html.escape
    width, label, row = 720, 300, 22
    most = max(g.requests for g in groups)
    legend = 70
    out = [f'<svg width="{max(width + 60, label + legend * len(_COLOURS))}" '
           f'height="{row * len(groups) + 30}" role="img">']
    for i, g in enumerate(groups):
        y = i * row
        out.append(f'<text x="{label - 6}" y="{y + 15}" text-anchor="end">'
                   f'{e(g.name[:48])}</text>')
        x = float(label)
        for action, n in g.actions.most_common():
            w = (width - label) * n / most
            out.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
                       f'fill="{_COLOURS.get(action, "#999")}"><title>{e(action)}: {n}'
                       '</title></rect>')
            x += w
        out.append(f'<text x="{x + 4:.1f}" y="{y + 15}">{g.requests}</text>')
    legend_y = row * len(groups) + 20
    for i, (action, colour) in enumerate(_COLOURS.items()):
        x = label + i * legend
        out.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 14}" y="{legend_y}">{action}</text>')
    out.append("</svg>")
    return "".join(out)


def _timeline(report: Report) -> str:
    """Columns per hour (UTC), one per hour that has records."""
    if not report.hourly:
        return "<p>Nothing recorded.</p>"
    e = html.escape
    hours = sorted(report.hourly)[-72:]
    most = max(sum(report.hourly[h].values()) for h in hours)
    col, height = max(8, min(40, 720 // len(hours))), 160
    right = max(40 + col * len(hours), 260)
    out = [f'<svg width="{right + 20}" height="{height + 40}" role="img">']
    for i, hour in enumerate(hours):
        n = sum(report.hourly[hour].values())
        h = height * n / most
        top = ", ".join(f"{k}: {v}" for k, v in report.hourly[hour].most_common(3))
        out.append(f'<rect x="{40 + i * col}" y="{height - h:.1f}" width="{col - 2}" '
                   f'height="{h:.1f}" fill="#2980b9"><title>{e(hour)}:00 UTC, {n} '
                   f'records ({e(top)})</title></rect>')
    out.append(f'<text x="0" y="12">{most}</text><text x="40" y="{height + 16}">from '
               f'{e(hours[0])}:00 UTC</text><text x="{right}" y="{height + 32}" '
               f'text-anchor="end">to {e(hours[-1])}:59 UTC</text></svg>')
    return "".join(out)


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.as_json(), indent=1, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return to_csv(report)
    return to_html(report)
