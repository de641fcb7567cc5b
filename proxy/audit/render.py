"""The audit as a terminal report, JSON, or a self-contained HTML page."""

from __future__ import annotations

import json
from html import escape

from .checks import Audit

AREAS = (("declarations", "Declarations: what the site tells machines"),
         ("exposure", "Exposure: what each kind of client received"),
         ("files", "Files: what travels inside the audio"))


def text(audit: Audit) -> str:
    out = [f"Sonic-Sovereignty audit of {audit.target}",
           f"score {audit.score}/100: {audit.grade} ({audit.requests} requests, "
           f"{audit.seconds} s, {audit.started})", ""]
    fixes = audit.fixes()[:3]
    if fixes:
        out.append("Fix first:")
        for i, f in enumerate(fixes, 1):
            out += [f"  {i}. {f.title} (-{f.weight})", f"     fix: {f.fix}"]
        out.append("")
    for area, title in AREAS:
        found = [f for f in audit.findings if f.area == area]
        if not found:
            continue
        out.append(title)
        for f in found:
            mark = "ok  " if f.ok else f"-{f.weight:<3}"
            out += [f"  {mark} {f.title}", f"        {f.detail}"]
        out.append("")
    if audit.probes:
        out.append("Probes (one track, three clients)")
        for p in audit.probes:
            out.append(f"  {p.who:20} HTTP {p.status or '-':<4} {p.bytes:>9} bytes  "
                       f"{p.received:9} {p.note}")
        out.append(f"  track: {audit.probes[0].url}")
        out.append("")
    out.append(f"Audio found: {len(audit.audio_found)}; pages read: {len(audit.pages_read)}")
    out.append(audit.disclosure)
    return "\n".join(out) + "\n"


def as_json(audit: Audit) -> str:
    return json.dumps(audit.to_json(), indent=2) + "\n"


def html(audit: Audit) -> str:
    colour = ("#2e7d32" if audit.score >= 85 else "#f9a825" if audit.score >= 60
              else "#e65100" if audit.score >= 30 else "#c62828")
    parts = [f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Sonic-Sovereignty audit of {escape(audit.target)}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
       color: #222; }}
.score {{ font-size: 3em; font-weight: 700; color: {colour}; }}
table {{ border-collapse: collapse; width: 100%; margin: .5em 0 1.5em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .35em .5em; text-align: left;
          vertical-align: top; }}
.ok {{ color: #2e7d32; }} .bad {{ color: #c62828; font-weight: 600; }}
li {{ margin-bottom: .6em; }} small {{ color: #666; }}
</style></head><body>
<h1>Sonic-Sovereignty audit</h1>
<p>{escape(audit.target)}<br><small>{escape(audit.started)}, {audit.requests} requests,
{audit.seconds} s</small></p>
<p><span class="score">{audit.score}</span>/100 &mdash; {escape(audit.grade)}</p>
"""]
    fixes = audit.fixes()[:3]
    if fixes:
        parts.append("<h2>Fix first</h2><ol>")
        parts += [f"<li><b>{escape(f.title)}</b> (&minus;{f.weight})<br>{escape(f.fix)}</li>"
                  for f in fixes]
        parts.append("</ol>")
    for area, title in AREAS:
        found = [f for f in audit.findings if f.area == area]
        if not found:
            continue
        parts.append(f"<h2>{escape(title)}</h2><table>")
        for f in found:
            mark = '<span class="ok">ok</span>' if f.ok else (
                f'<span class="bad">&minus;{f.weight}</span>')
            parts.append(f"<tr><td>{mark}</td><td><b>{escape(f.title)}</b><br>"
                         f"<small>{escape(f.detail)}</small></td></tr>")
        parts.append("</table>")
    if audit.probes:
        parts.append(f"<h2>Probes</h2><p><small>{escape(audit.probes[0].url)}</small></p>"
                     "<table><tr><th>client</th><th>HTTP</th><th>bytes</th><th>received</th>"
                     "<th>why</th></tr>")
        parts += [f"<tr><td>{escape(p.who)}</td><td>{p.status or '-'}</td><td>{p.bytes}</td>"
                  f"<td>{escape(p.received)}</td><td><small>{escape(p.note)}</small></td></tr>"
                  for p in audit.probes]
        parts.append("</table>")
    parts.append(f"<p><small>{escape(audit.disclosure)}</small></p></body></html>\n")
    return "".join(parts)
