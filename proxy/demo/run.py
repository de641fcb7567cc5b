"""`sonicshield demo`: the demo store on one port, SonicShield in front of it on another."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from ..logs import log_event, setup_logging
from ..rules import LiveRules, load_rules
from ..server import new_event_loop, serve
from ..settings import (
    AdminSettings,
    AudioSettings,
    EvidenceSettings,
    Listen,
    LogSettings,
    Settings,
    UpstreamSettings,
)
from ..yamlsource import ConfigError
from .store import prepare_store

log = logging.getLogger("sonicshield.demo")


def demo_settings(args: argparse.Namespace, rules_dir: Path) -> Settings:
    return Settings(
        listen=(Listen(args.host, args.port),),
        upstream=UpstreamSettings(url=f"http://{args.host}:{args.store_port}"),
        rules_dir=rules_dir,
        admin=AdminSettings(listen=Listen(args.host, args.admin_port)),
        log=LogSettings(format="text", level="info"),
        verdict_header=True,
        audio=AudioSettings(cache_dir=demo_cache(args) / "variants"),
        evidence=EvidenceSettings(dir=demo_cache(args) / "evidence"),
        source="<demo>",
    )


def demo_cache(args: argparse.Namespace) -> Path:
    return Path(args.cache) if args.cache else Path.home() / ".cache" / "sonicshield" / "demo"


def _banner(proxy: str, admin: str, store: str, evidence: Path) -> str:
    track = "harbour-at-dawn"
    return f"""
  SonicShield demo is running.

  Store, through SonicShield:  http://{proxy}/
  The store directly:          http://{store}/
  Metrics:                     http://{admin}/metrics
  Health / readiness:          http://{admin}/healthz  http://{admin}/readyz

  See it as a crawler does (GPTBot gets a decoy: the track's length and format, other music):
    curl -s -A 'GPTBot/1.2 (+https://openai.com/gptbot)' -o decoy.mp3 http://{proxy}/stream/{track}.mp3

  What every crawler was told and given, hash-chained in {evidence}:
    .venv/bin/sonicshield evidence verify --dir {evidence}
    .venv/bin/sonicshield evidence report --dir {evidence} --out report.html

  Stop with Ctrl-C.
"""


async def _run(args: argparse.Namespace, rules: LiveRules, settings: Settings) -> None:
    cache = demo_cache(args)
    log_event(log, logging.INFO, "preparing-catalogue", cache=str(cache))
    store_app = await asyncio.to_thread(prepare_store, cache)
    store_runner = web.AppRunner(store_app, access_log=None, handle_signals=False)
    await store_runner.setup()
    try:
        await web.TCPSite(store_runner, args.host, args.store_port).start()

        def ready(proxy: list[str], admin: list[str]) -> None:
            print(_banner(proxy[0], admin[0] if admin else "-", f"{args.host}:{args.store_port}",
                          settings.evidence.dir),
                  flush=True)

        await serve(settings, rules, with_admin=True, reuse_port=False, on_ready=ready)
    finally:
        await store_runner.cleanup()


async def _store_only(args: argparse.Namespace) -> None:
    """Only the demo store, until SIGTERM (deploy/docker-compose.yml's "store" service)."""
    cache = demo_cache(args)
    store_app = await asyncio.to_thread(prepare_store, cache)
    runner = web.AppRunner(store_app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.store_port).start()
        log_event(log, logging.INFO, "demo-store", listen=f"{args.host}:{args.store_port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def run_demo(args: argparse.Namespace) -> int:
    from ..cli import default_rules_dir

    if args.store_only:
        setup_logging(LogSettings(format="text"))
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_store_only(args))
        return 0

    rules_dir = Path(args.rules) if args.rules else default_rules_dir()
    settings = demo_settings(args, rules_dir.resolve())
    setup_logging(settings.log)
    try:
        rules = LiveRules(load_rules(settings.rules_dir))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_run(args, rules, settings))
    except OSError as exc:
        print(f"sonicshield demo: {exc.strerror} ({exc.filename or 'listening socket'}); "
              f"is another demo already running? Try --port/--store-port/--admin-port.",
              file=sys.stderr)
        return 1
    return 0
