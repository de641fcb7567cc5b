"""`sonicshield explain`: every signal of one request, and why each rule did or did not match.

The request is judged by the same classify and decide code the proxy runs, on a fresh client
state: robots.txt compliance and behaviour are those of a client seen for the first time, which
the output says. From a JSON access-log line only what the line records is known (method, path,
client, User-Agent); header checks are then left out, and the output says that too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from multidict import CIMultiDict

from .classify import classify
from .clientip import client_key
from .exchange import Client, Exchange, Signals
from .ladder import rung
from .robots import build_canonical
from .rules import ALL_SIGNALS, RuleSet
from .signals.behaviour import BehaviourTracker
from .signals.network import AsnDatabase
from .state import ClientStore


@dataclass(frozen=True, slots=True)
class RequestSpec:
    method: str
    path: str
    headers: Mapping[str, str]
    client: str
    scheme: str = "https"
    host: str = "store.example"
    headers_known: bool = True  # False when rebuilt from an access-log line


def spec_from_url(method: str, url: str, headers: list[str], client: str) -> RequestSpec:
    parts = urlsplit(url)
    if not parts.path.startswith("/"):
        raise ValueError(f"not a URL or path: {url!r}")
    values: CIMultiDict[str] = CIMultiDict()
    for line in headers:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"a header is 'Name: value', got {line!r}")
        values.add(name.strip(), value.strip())
    host = parts.netloc or values.get("Host", "store.example")
    values.setdefault("Host", host)
    return RequestSpec(method=method.upper(), path=parts.path, headers=values, client=client,
                       scheme=parts.scheme or "https", host=host)


def spec_from_log_line(line: str) -> RequestSpec:
    try:
        fields = json.loads(line)
        return RequestSpec(
            method=str(fields["method"]), path=str(fields["path"]),
            headers=CIMultiDict({"User-Agent": str(fields.get("ua", ""))}),
            client=str(fields["client"]), headers_known=False,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a SonicShield access-log line ({exc})") from None


class Judge:
    """Classify and decide requests offline, with the proxy's own code and a client store that
    lives as long as the judge (so a sequence of requests builds up robots.txt and behaviour
    state as it would in the proxy)."""

    def __init__(self, ruleset: RuleSet, asn_db: AsnDatabase | None = None) -> None:
        self.ruleset = ruleset
        self.robots = build_canonical("", list(ruleset.robots_disallowed))
        self.tracker = BehaviourTracker(ClientStore(10_000))
        self.asn_db = asn_db or AsnDatabase(None)

    def judge(self, spec: RequestSpec, now: float) -> Exchange:
        ruleset = self.ruleset
        ex = Exchange(id="offline", client=Client(spec.client, spec.client, False, spec.scheme,
                                                  spec.host, client_key(spec.client, spec.headers)),
                      method=spec.method, path=spec.path, query="")
        # every signal, for the explanation; offline, no DNS: verification is left out (the
        # signal stays ""); an access-log line does not record headers
        needs = ALL_SIGNALS if spec.headers_known else ALL_SIGNALS - {"headers"}
        ex.signals = classify(spec.headers, ex, ruleset, self.robots, self.tracker, 0, now,
                              self.asn_db, None, needs)
        ex.verdict = ruleset.decide(ex)
        if spec.path == "/robots.txt" and spec.method in ("GET", "HEAD"):
            clients = self.tracker.store
            clients.robots_read(clients.row(ex.client.key, now), now or 1.0)
        return ex


def explain(spec: RequestSpec, ruleset: RuleSet) -> str:
    ex = Judge(ruleset).judge(spec, 0.0)
    assert ex.signals is not None
    verdict = ex.verdict
    out = [f"request   {spec.method} {spec.path} from {spec.client}", "signals"]
    out += [f"  {name:16} {value}" for name, value in _signal_lines(ex.signals)]
    out.append("  (robots and behaviour as for a client seen for the first time)")
    if not spec.headers_known:
        out.append("  (header checks left out: an access-log line does not record headers)")
    out.append("rules     (first match wins)")
    for rule in ruleset.rules:
        failed = [c for c in rule.conditions if not c.test(ex)]
        if not failed:
            out.append(f"  MATCH  {rule.origin} -> {rule.verdict.action.value}")
            break
        c = failed[0]
        wanted = ", ".join(str(v) for v in c.values)
        out.append(f"  no     {rule.origin}: {c.key} is not {wanted}")
    out.append(f"rung      {rung(ex.signals).describe()}")
    out.append(f"verdict   {verdict.action.value} ({verdict.origin}"
               + (f", rule hash {verdict.rule_hash})" if verdict.rule_hash else ")"))
    return "\n".join(out)


def _signal_lines(s: Signals) -> list[tuple[str, str]]:
    return [
        ("content", s.content.value), ("user-agent", s.ua or "(none)"),
        ("ua_class", s.ua_class), ("agent", s.agent or "-"), ("operator", s.operator or "-"),
        ("purpose", s.purpose or "-"), ("robots", s.robots or "(not used by any rule)"),
        ("headers", ", ".join(s.headers) or "consistent"),
        ("behaviour_score", f"{s.behaviour_score:g}"),
        ("behaviour_flags", ", ".join(s.behaviour_flags) or "-"),
    ]
