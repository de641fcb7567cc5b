"""Command line: `sonicshield run|demo|check` (also `python -m proxy`)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .yamlsource import ConfigError

PACKAGED_RULES = Path(__file__).resolve().parent.parent / "rules"


def default_rules_dir() -> Path:
    """./rules when the working directory has one, else the rules shipped beside the package."""
    local = Path("rules")
    return local if local.is_dir() else PACKAGED_RULES


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sonicshield"


def _cmd_run(args: argparse.Namespace) -> int:
    from .server import run
    from .settings import load_settings

    overrides: dict[str, tuple[str, Any]] = {}
    if args.upstream:
        overrides["upstream.url"] = ("--upstream", args.upstream)
    if args.listen:
        overrides["listen"] = ("--listen", list(args.listen))
    if args.rules:
        overrides["rules_dir"] = ("--rules", str(Path(args.rules).resolve()))
    elif args.config is None:
        overrides["rules_dir"] = ("--rules", str(default_rules_dir().resolve()))
    if args.workers is not None:
        overrides["workers"] = ("--workers", args.workers)
    try:
        settings = load_settings(args.config, overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return run(settings)


def _cmd_check(args: argparse.Namespace) -> int:
    from .rules import load_rules

    directory = Path(args.dir) if args.dir else default_rules_dir()
    try:
        ruleset = load_rules(directory)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        n = len(exc.problems)
        print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return 2  # as `run` does for the same files
    print(f"ok: {len(ruleset.rules)} rules in {len(ruleset.files)} files ({directory})")
    return 0


def _cmd_agents_update(args: argparse.Namespace) -> int:
    from .agents import update_agents

    out = Path(args.out) if args.out else default_rules_dir() / "agents"
    try:
        left_out = update_agents(args.ai_robots, args.crawlers, out,
                                 args.ai_robots_source or f"robots.json ({args.ai_robots.name})",
                                 args.crawlers_source or f"crawler-user-agents.json "
                                                         f"({args.crawlers.name})")
    except (OSError, ValueError, KeyError) as exc:
        print(f"sonicshield agents update: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out / 'ai-robots.yaml'} and {out / 'crawlers.yaml'}")
    for pattern in left_out:
        print(f"left out (not reducible to literal tokens): {pattern}")
    return 0


def _cmd_ranges_import(args: argparse.Namespace) -> int:
    from .ranges import RANGES_DIR, parse_published, render_list

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", args.name):
        print(f"sonicshield ranges import: a list name is lower-case letters, digits, '_' and "
              f"'-' (it becomes FILE.yaml and the name rules use), got {args.name!r}",
              file=sys.stderr)
        return 2
    if args.name == "datacenters":
        print("sonicshield ranges import: 'datacenters' is the ASN list's file; choose another "
              "name", file=sys.stderr)
        return 2
    try:
        networks, created = parse_published(args.file.read_bytes())
    except (OSError, ValueError) as exc:
        print(f"sonicshield ranges import: {args.file}: {exc}", file=sys.stderr)
        return 1
    folder = (Path(args.rules) if args.rules else default_rules_dir()) / RANGES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{args.name}.yaml"
    out.write_text(render_list(args.name, networks, args.source or str(args.file), created))
    print(f"wrote {out}: {len(networks)} prefixes; rules name it as cidr: [{args.name}]")
    return 0


def _cmd_rights_export(args: argparse.Namespace) -> int:
    from .rights import load_rights

    directory = Path(args.rules) if args.rules else default_rules_dir()
    try:
        rights = load_rights(directory / "rights.yaml", f"{directory.name}/rights.yaml")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if rights is None:
        print(f"sonicshield rights export: no {directory / 'rights.yaml'}", file=sys.stderr)
        return 1
    sys.stdout.write(rights.export(args.format))
    return 0


def _same_decoy(original: Path, track: str, folder: Path) -> Path:
    """The decoy SonicShield serves for `original` (decoys are deterministic)."""
    from .audio.codec import CodecError, decoy
    from .audio.formats import SNIFF_BYTES, sniff
    from .audio.service import variant_seed

    with original.open("rb") as f:
        fmt = sniff(f.read(SNIFF_BYTES))
    if fmt is None:
        raise CodecError(f"{original} is not audio SonicShield reads")
    out = folder / f"decoy.{fmt.value}"
    decoy(original, out, fmt, variant_seed(track))
    return out


def _cmd_trace(args: argparse.Namespace) -> int:
    import hashlib
    import json
    import tempfile

    from .audio.codec import CodecError
    from .audio.watermark import BITS, detect
    from .keys import load_or_create_key
    from .settings import Settings, load_settings

    try:
        settings = load_settings(args.config) if args.config else None
        key_file = args.key or (settings or Settings()).audio.key_file
        evidence = args.evidence or (settings.evidence.dir if settings else None)
        if not key_file.exists():
            print(f"sonicshield trace: no watermark key at {key_file} (give --key or --config)",
                  file=sys.stderr)
            return 2
        secret = load_or_create_key(key_file, "watermark key")
        track = hashlib.sha256(args.original.read_bytes()).hexdigest()
        with tempfile.TemporaryDirectory() as tmp:
            # a marked decoy is read against the same decoy, made again
            reference = (_same_decoy(args.original, track, Path(tmp)) if args.decoy
                         else args.original)
            found = detect(args.suspect, reference, secret, track)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (OSError, ValueError, CodecError) as exc:
        print(f"sonicshield trace: {exc}", file=sys.stderr)
        return 1
    print(f"suspect   {args.suspect}: {found.segments} segments of the original, from "
          f"{found.offset:.2f} s")
    if not found.marked:
        reason = (f"too short: {found.segments} of the {BITS} segments a payload needs"
                  if found.segments < BITS else f"no mark (strength {found.z:.1f}, a marked "
                                                f"copy shows 6 or more)")
        print(f"result    not traced: {reason}")
        return 3
    mark = f"{found.payload:016x}"
    print(f"payload   {mark} (strength {found.z:.1f})")
    if evidence is None:
        return 0
    from .evidence.chain import chain_files, lines

    matches = 0
    for files in chain_files(evidence).values():
        for f in files:
            for number, line, _ in lines(f.path):
                if mark.encode() not in line:
                    continue
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if (r.get("variant") or {}).get("watermark") == mark:
                    matches += 1
                    print(f"served    {r['t']} to {r['client']['ip']} {r['method']} "
                          f"{r['url']} ua={r.get('ua', '')!r} variant={r['variant']['kind']} "
                          f"id={r['id']} ({f.path.name}:{number}, record {r['seq']})")
    print(f"matches   {matches} in {evidence}")
    return 0


def _evidence_place(args: argparse.Namespace) -> tuple[Path, bytes | None] | None:
    """The evidence folder and the chain key (None when there is none to read); None, with
    the problem printed, when the config or the key cannot be read."""
    from .settings import EvidenceSettings, load_settings

    try:
        if args.config is not None:
            ev = load_settings(args.config).evidence
            folder, key = args.dir or ev.dir, args.key or ev.key
        else:
            folder = args.dir or Path("evidence")
            key = args.key or EvidenceSettings(dir=folder).key
        if args.key is None and not key.exists():
            return folder, None
        return folder, key.read_bytes()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
    except OSError as exc:
        print(f"sonicshield evidence: cannot read the key: {exc}", file=sys.stderr)
    return None


def _cmd_evidence_verify(args: argparse.Namespace) -> int:
    from .evidence.verify import describe, verify_dir

    place = _evidence_place(args)
    if place is None:
        return 2
    folder, key = place
    text, ok = describe(verify_dir(folder, key, args.weak), folder, key is not None)
    print(text)
    return 0 if ok else 1


def _cmd_evidence_report(args: argparse.Namespace) -> int:
    from .evidence.report import build_report, render
    from .evidence.verify import verify_dir

    place = _evidence_place(args)
    if place is None:
        return 2
    folder, key = place
    checks = verify_dir(folder, key, args.weak)
    if not checks:
        print(f"sonicshield evidence report: no evidence log files in {folder}", file=sys.stderr)
        return 1
    text = render(build_report(folder, checks), args.format)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from .summary import render, summary_of

    try:
        summary = summary_of(args.sources)
    except OSError as exc:
        print(f"sonicshield summary: {exc}", file=sys.stderr)
        return 2
    if not summary.lines:
        print(f"sonicshield summary: no access-log line or evidence record in "
              f"{', '.join(args.sources)} ({summary.skipped} other lines)", file=sys.stderr)
        return 1
    sys.stdout.write(render(summary, args.top))
    return 0


def _cmd_catalog_build(args: argparse.Namespace) -> int:
    import asyncio

    from .catalog import build, read_url_list
    from .rules import load_rules
    from .settings import load_settings

    try:
        settings = load_settings(args.config)
        ruleset = load_rules(settings.rules_dir)
        paths = read_url_list(args.urls, settings.upstream.url) if args.urls else None
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sonicshield catalog build: {exc}", file=sys.stderr)
        return 2
    done, failed = asyncio.run(build(settings, ruleset, paths, args.max_pages))
    print(f"{done} variants ready in {settings.audio.cache_dir}, {failed} failed")
    return 1 if failed else 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain, spec_from_log_line, spec_from_url
    from .rules import load_rules

    directory = Path(args.rules) if args.rules else default_rules_dir()
    try:
        ruleset = load_rules(directory)
        if args.log_line is not None:
            line = sys.stdin.readline() if args.log_line == "-" else args.log_line
            spec = spec_from_log_line(line)
        elif args.url:
            spec = spec_from_url(args.method, args.url, args.header or [], args.client)
        else:
            print("sonicshield explain: give a URL, or --log-line JSON", file=sys.stderr)
            return 2
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"sonicshield explain: {exc}", file=sys.stderr)
        return 2
    print(explain(spec, ruleset))
    return 0


def _cmd_test_rules(args: argparse.Namespace) -> int:
    from .fixtures import run_fixtures
    from .rules import load_rules

    rules = Path(args.rules) if args.rules else default_rules_dir()
    fixtures = Path(args.dir) if args.dir else rules / "fixtures"
    try:
        outcomes = run_fixtures(fixtures, load_rules(rules))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        print(f"{o.where}: expected {o.expected}, got {o.got}")
    print(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo

    return run_demo(args)


def _cmd_audit(args: argparse.Namespace) -> int:
    import asyncio

    from .audit import render
    from .audit.checks import run_audit

    try:
        audit = asyncio.run(run_audit(args.url, max_requests=args.max_requests, rate=args.rate,
                                      request_timeout=args.timeout))
    except ValueError as exc:
        print(f"sonicshield audit: {exc}", file=sys.stderr)
        return 2
    out = {"text": render.text, "json": render.as_json, "html": render.html}[args.format](audit)
    if args.out:
        args.out.write_text(out)
        print(f"audit of {audit.target}: score {audit.score}/100 ({audit.grade}), "
              f"written to {args.out}")
    else:
        sys.stdout.write(out)
    return 0


def _positive(kind: type[int] | type[float], ceiling: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0 < value <= ceiling:
            raise argparse.ArgumentTypeError(f"must be above 0 and at most {ceiling:g}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sonicshield",
        description="A reverse proxy that shields musicians' master recordings from AI crawlers.",
    )
    parser.add_argument("--version", action="version", version=f"sonicshield {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the proxy in front of a store")
    run.add_argument("--config", type=Path, help="YAML config file (see sonicshield.example.yaml)")
    run.add_argument("--upstream", help="upstream store URL, e.g. http://127.0.0.1:8081")
    run.add_argument("--listen", action="append", metavar="HOST:PORT",
                     help="address to listen on (repeatable)")
    run.add_argument("--rules", metavar="DIR", help="rules directory")
    run.add_argument("--workers", type=int, help="worker processes (SO_REUSEPORT)")
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="start the demo store with SonicShield in front of it")
    demo.add_argument("--host", default="127.0.0.1", help="address for all three listeners")
    demo.add_argument("--port", type=int, default=8080, help="proxy port (default 8080)")
    demo.add_argument("--store-port", type=int, default=8081, help="store port (default 8081)")
    demo.add_argument("--admin-port", type=int, default=9180, help="admin port (default 9180)")
    demo.add_argument("--cache", type=Path, default=None,
                      help="where the generated catalogue goes (default ~/.cache/sonicshield/demo)")
    demo.add_argument("--rules", metavar="DIR", help="rules directory")
    demo.add_argument("--store-only", action="store_true",
                      help="run only the demo store, on --host and --store-port")
    demo.set_defaults(func=_cmd_demo)

    explain = sub.add_parser(
        "explain", help="show every signal of a request and which rule decides it, and why")
    explain.add_argument("url", nargs="?", help="the URL or path requested")
    explain.add_argument("-X", "--method", default="GET")
    explain.add_argument("-H", "--header", action="append", metavar="'NAME: VALUE'",
                         help="a request header (repeatable)")
    explain.add_argument("--client", default="203.0.113.10", help="client address")
    explain.add_argument("--log-line", metavar="JSON",
                         help="a JSON access-log line instead of a URL ('-': read stdin)")
    explain.add_argument("--rules", metavar="DIR", help="rules directory")
    explain.set_defaults(func=_cmd_explain)

    test_rules = sub.add_parser(
        "test-rules", help="run rule fixtures: request sequences with expected verdicts")
    test_rules.add_argument("dir", nargs="?", help="fixtures folder (default RULES/fixtures)")
    test_rules.add_argument("--rules", metavar="DIR", help="rules directory")
    test_rules.set_defaults(func=_cmd_test_rules)

    agents = sub.add_parser("agents", help="the vendored user-agent lists")
    agents_sub = agents.add_subparsers(dest="agents_command", required=True)
    update = agents_sub.add_parser(
        "update", help="regenerate rules/agents/ from newer robots.json and crawler lists")
    update.add_argument("--ai-robots", type=Path, required=True,
                        help="robots.json from github.com/ai-robots-txt/ai.robots.txt")
    update.add_argument("--crawlers", type=Path, required=True,
                        help="crawler-user-agents.json from github.com/monperrus/"
                             "crawler-user-agents")
    update.add_argument("--ai-robots-source", help="provenance text: repository, path, commit")
    update.add_argument("--crawlers-source", help="provenance text: repository, path, commit")
    update.add_argument("--out", help="output folder (default rules/agents)")
    update.set_defaults(func=_cmd_agents_update)

    ranges = sub.add_parser("ranges", help="published crawler address ranges")
    ranges_sub = ranges.add_subparsers(dest="ranges_command", required=True)
    imp = ranges_sub.add_parser(
        "import", help="turn an operator's published ranges JSON (googlebot.json, "
                       "bingbot.json, gptbot.json...) into rules/networks/NAME.yaml")
    imp.add_argument("name", help="the list's name, as rules will use it (cidr: [NAME])")
    imp.add_argument("file", type=Path, help="the published JSON file")
    imp.add_argument("--source", help="provenance text: the URL it was fetched from, and when")
    imp.add_argument("--rules", metavar="DIR", help="rules directory (default ./rules)")
    imp.set_defaults(func=_cmd_ranges_import)

    rights = sub.add_parser("rights", help="the rights declarations of rules/rights.yaml")
    rights_sub = rights.add_subparsers(dest="rights_command", required=True)
    export = rights_sub.add_parser("export", help="the declarations keyed by ISRC, for a "
                                                  "rights registry")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    export.add_argument("--rules", metavar="DIR", help="rules directory (default ./rules)")
    export.set_defaults(func=_cmd_rights_export)

    trace = sub.add_parser("trace", help="read the watermark of a suspect copy of a track")
    trace.add_argument("suspect", type=Path, help="the suspect file (any format ffmpeg reads)")
    trace.add_argument("--original", type=Path, required=True,
                       help="the track as the store serves it")
    trace.add_argument("--config", type=Path, help="config file (for audio.watermark_key)")
    trace.add_argument("--key", type=Path, help="the watermark key file")
    trace.add_argument("--evidence", type=Path, metavar="DIR",
                       help="the evidence log folder to find the encounter in (default: "
                            "evidence.dir of --config)")
    trace.add_argument("--decoy", action="store_true",
                       help="the suspect is a marked decoy of the original (decoy with "
                            "watermark: true)")
    trace.set_defaults(func=_cmd_trace)

    catalog = sub.add_parser("catalog", help="the store's audio variants")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    cbuild = catalog_sub.add_parser(
        "build", help="make every audio variant the rules can give, before crawlers ask")
    cbuild.add_argument("--config", type=Path, required=True, help="the proxy's config file")
    cbuild.add_argument("--urls", type=Path,
                        help="a file of audio URLs or paths (default: found through the "
                             "store's sitemap and feed)")
    cbuild.add_argument("--max-pages", type=int, default=500,
                        help="pages of the sitemap/feed fetched to find audio links")
    cbuild.set_defaults(func=_cmd_catalog_build)

    evidence = sub.add_parser("evidence", help="the hash-chained evidence log")
    evidence_sub = evidence.add_subparsers(dest="evidence_command", required=True)
    for name, func, text in (
            ("verify", _cmd_evidence_verify, "check that no record was edited, deleted, "
                                             "inserted or reordered, and say where"),
            ("report", _cmd_evidence_report, "what the log shows, per crawler and per client "
                                             "network (HTML, CSV or JSON)")):
        cmd = evidence_sub.add_parser(name, help=text)
        cmd.add_argument("--config", type=Path, help="the proxy's config file (for evidence.dir "
                                                     "and evidence.key_file)")
        cmd.add_argument("--dir", type=Path, help="the evidence folder (default ./evidence)")
        cmd.add_argument("--key", type=Path, help="the chain key file, to check signatures "
                                                  "(default: evidence.key_file, or "
                                                  "DIR-chain.key beside DIR, when present)")
        cmd.add_argument("--weak", action="store_true",
                         help="let a missing head, records after the signed head and missing "
                              "checkpoints pass as notes (a copy of a log taken while it was "
                              "written); never for evidence you rely on")
        cmd.set_defaults(func=func)
        if name == "report":
            cmd.add_argument("--format", choices=("html", "csv", "json"), default="html")
            cmd.add_argument("--out", type=Path, help="write here instead of standard output")

    audit = sub.add_parser(
        "audit", help="the Sonic-Sovereignty audit: how exposed a site's recordings are to AI "
        "scraping, and what to fix")
    audit.add_argument("url", help="the site, e.g. https://music.example.org")
    audit.add_argument("--format", choices=("text", "json", "html"), default="text")
    audit.add_argument("--out", type=Path, help="write the report here instead of stdout")
    audit.add_argument("--max-requests", type=_positive(int, 500), default=40,
                       help="requests the audit may send in all (default 40)")
    audit.add_argument("--rate", type=_positive(float, 20), default=4.0,
                       help="requests per second at most (default 4)")
    audit.add_argument("--timeout", type=_positive(float, 120), default=10.0,
                       help="seconds per request (a tarpit is reported when it runs out)")
    audit.set_defaults(func=_cmd_audit)
    summary = sub.add_parser(
        "summary", help="what the rules did and would have done (shadow mode), by rule and by "
        "client, from access logs or an evidence folder")
    summary.add_argument("sources", nargs="+",
                         help="access-log files (the proxy's JSON lines), - for standard "
                              "input, or evidence folders")
    summary.add_argument("--top", type=_positive(int, 10_000), default=20,
                         help="clients to list (default 20)")
    summary.set_defaults(func=_cmd_summary)
    check = sub.add_parser("check", help="validate rule files; every error with file:line:col")
    check.add_argument("dir", nargs="?", help="rules directory (default ./rules)")
    check.set_defaults(func=_cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
