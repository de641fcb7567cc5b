"""Running the proxy: one process, or a supervisor with N SO_REUSEPORT workers.

Signals: SIGTERM/SIGINT stop accepting and let in-flight streams finish for
`timeouts.shutdown_grace` seconds; SIGHUP reloads the rule files (a bad reload keeps the old
rules). With several workers the supervisor forwards both to every worker, serves the admin
listener itself and aggregates the workers' metrics (prometheus-client multiprocess mode).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import sys
import tempfile
import weakref
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from . import logs
from .admin import build_admin_app, upstream_readiness
from .app import build_app, start_runner
from .app_keys import RULES, STREAMS, UPSTREAM
from .evidence.writer import EvidenceError
from .forward import make_session
from .logs import log_event, setup_logging
from .metrics import Metrics
from .rules import LiveRules, RuleSet, load_rules
from .settings import Listen, Settings
from .state import ClientStore, StoreError
from .yamlsource import ConfigError

log = logging.getLogger("sonicshield")
_CANNOT_START = 2  # a worker's exit status when starting again would fail the same way
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (faster in every paired run here), else the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def compile_rules(directory: Path) -> tuple[RuleSet | None, list[str]]:
    """Compile the rule files in a thread, so a large rule set (80,000 globs took 16 s) does
    not stop the event loop; (None, errors) when they do not compile. Errors that are no
    ConfigError are a bug in SonicShield: said with their traceback, and still refused.
    One compile at a time per process: a second SIGHUP waits its turn, so the newest files
    are the ones that stay."""
    async with _reload_lock():
        try:
            return await asyncio.to_thread(load_rules, directory), []
        except ConfigError as exc:
            errors = [str(p) for p in exc.problems]
        except Exception as exc:
            log.exception("compiling the rules failed")
            errors = [f"{directory}: the rules could not be compiled: {exc!r}"]
    log_event(log, logging.ERROR, "rules-reload-failed", errors=errors)
    return None, errors


_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary())


def _reload_lock() -> asyncio.Lock:
    return _locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())


async def reload_rules(
    live: LiveRules, directory: Path, metrics: Metrics
) -> tuple[bool, dict[str, object]]:
    """Swap in a freshly compiled rule set; on any error keep the old one, log and count it."""
    ruleset, errors = await compile_rules(directory)
    if ruleset is None:
        metrics.rule_reloads.labels("failed").inc()
        return False, {"reloaded": False, "errors": errors}
    live.current = ruleset
    log_event(log, logging.INFO, "rules-reloaded", files=len(ruleset.files),
              rules=len(ruleset.rules))
    metrics.rule_reloads.labels("ok").inc()
    return True, {"reloaded": True, "files": list(ruleset.files), "rules": len(ruleset.rules)}


async def _start_sites(
    runner: web.BaseRunner, listens: tuple[Listen, ...], reuse_port: bool
) -> list[str]:
    for listen in listens:
        await web.TCPSite(runner, listen.host, listen.port, reuse_port=reuse_port).start()
    out = []
    for addr in runner.addresses:
        host, port = addr[0], addr[1]
        out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return out


def _install_signals(stop: asyncio.Event, on_hup: Callable[[], Awaitable[object]]) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    reloads: set[asyncio.Task[object]] = set()  # held until done (the loop keeps weak refs)

    def hup() -> None:
        task: asyncio.Task[object] = loop.create_task(on_hup())  # type: ignore[arg-type]
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, hup)


async def serve(
    settings: Settings, rules: LiveRules, *, with_admin: bool, reuse_port: bool,
    on_ready: Callable[[list[str], list[str]], None] | None = None, chain: str = "main",
    clients: ClientStore | None = None,
) -> None:
    """Run one proxy process until SIGTERM/SIGINT, then drain."""
    metrics = Metrics(CollectorRegistry())
    app = build_app(settings, rules, metrics, chain, clients)
    runner = await start_runner(app, settings)
    admin_runner: web.AppRunner | None = None
    try:
        addresses = await _start_sites(runner, settings.listen, reuse_port)
        admin_addresses: list[str] = []
        if with_admin and settings.admin.listen is not None:
            readiness = upstream_readiness(settings, app[UPSTREAM].session)
            admin_app = build_admin_app(
                lambda: generate_latest(metrics.registry),
                readiness,
                lambda: reload_rules(app[RULES], settings.rules_dir, metrics),
                settings.admin.token,
            )
            admin_runner = web.AppRunner(admin_app, access_log=None, handle_signals=False)
            await admin_runner.setup()
            admin_addresses = await _start_sites(admin_runner, (settings.admin.listen,), False)
        log_event(log, logging.INFO, "listening", proxy=addresses, admin=admin_addresses,
                  upstream=settings.upstream.url, pid=os.getpid())
        if on_ready is not None:
            on_ready(addresses, admin_addresses)
        # what start-up built (rules, agent lists, the client store's index) lives as long as
        # the process: keep it out of the collector's scans
        gc.freeze()
        stop = asyncio.Event()
        _install_signals(stop, lambda: reload_rules(app[RULES], settings.rules_dir, metrics))
        await stop.wait()
        log_event(log, logging.INFO, "draining", grace_s=settings.timeouts.shutdown_grace,
                  in_flight=sum(app[STREAMS].open.values()))
    finally:
        if admin_runner is not None:
            await admin_runner.cleanup()
        await runner.cleanup()
    log_event(log, logging.INFO, "stopped", pid=os.getpid())


def _worker_main(settings: Settings, index: int, store: Path) -> None:
    setup_logging(settings.log)
    logs.worker = index
    live = LiveRules(load_rules(settings.rules_dir))
    try:
        clients = ClientStore.attach(store)
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(settings, live, with_admin=False, reuse_port=True,
                             chain=f"w{index}", clients=clients))
    except (EvidenceError, StoreError) as exc:
        log_event(log, logging.ERROR, "worker-cannot-start", worker=index, error=str(exc))
        sys.exit(_CANNOT_START)


async def _supervise(settings: Settings, store: Path) -> None:
    """Start the workers, serve the admin listener, forward signals, restart crashed workers.
    store: the client store's file, shared by the workers (proxy/state.py)."""
    from prometheus_client import multiprocess

    ctx = multiprocessing.get_context("spawn")
    workers: dict[int, Any] = {}

    def spawn(index: int) -> None:
        proc = ctx.Process(target=_worker_main, args=(settings, index, store),
                           name=f"worker-{index}")
        proc.start()
        workers[index] = proc

    for i in range(settings.workers):
        spawn(i)

    def aggregated_metrics() -> bytes:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    stop = asyncio.Event()

    async def forward_hup() -> tuple[bool, dict[str, object]]:
        # Check the files here first so the caller hears about errors; each worker then
        # compiles them itself (and keeps its old rules should the files change in between).
        ruleset, errors = await compile_rules(settings.rules_dir)
        if ruleset is None:
            return False, {"reloaded": False, "errors": errors}
        for proc in workers.values():
            if proc.pid and proc.is_alive():
                os.kill(proc.pid, signal.SIGHUP)
        return True, {"reloaded": True, "workers": len(workers)}

    _install_signals(stop, forward_hup)
    session = make_session(settings)
    admin_runner: web.AppRunner | None = None
    try:
        if settings.admin.listen is not None:
            admin_app = build_admin_app(aggregated_metrics, upstream_readiness(settings, session),
                                        forward_hup, settings.admin.token)
            admin_runner = web.AppRunner(admin_app, access_log=None, handle_signals=False)
            await admin_runner.setup()
            admin = await _start_sites(admin_runner, (settings.admin.listen,), False)
            log_event(log, logging.INFO, "supervisor", workers=settings.workers, admin=admin)
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            for index, proc in list(workers.items()):
                if proc.exitcode == _CANNOT_START:  # restarting would fail the same way
                    stop.set()
                    break
                if not stop.is_set() and not proc.is_alive():
                    log_event(log, logging.ERROR, "worker-died", worker=index,
                              exitcode=proc.exitcode)
                    multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
                    spawn(index)
        for proc in workers.values():
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = asyncio.get_running_loop().time() + settings.timeouts.shutdown_grace + 5
        for proc in workers.values():
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.to_thread(proc.join, remaining)
            if proc.is_alive():
                log_event(log, logging.WARNING, "worker-killed", pid=proc.pid)
                proc.kill()
    finally:
        if admin_runner is not None:
            await admin_runner.cleanup()
        await session.close()


def run(settings: Settings) -> int:
    """Run until stopped. Returns the process exit status."""
    setup_logging(settings.log)
    try:
        live = LiveRules(load_rules(settings.rules_dir))
    except ConfigError as exc:
        print(exc, flush=True, file=sys.stderr)
        return 2
    if settings.workers == 1:
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                runner.run(serve(settings, live, with_admin=True, reuse_port=False))
        except EvidenceError as exc:
            print(f"sonicshield: {exc}", flush=True, file=sys.stderr)
            return 2
        return 0
    metrics_dir = tempfile.mkdtemp(prefix="sonicshield-metrics-")
    os.environ[_MULTIPROC_ENV] = metrics_dir  # read by the spawned workers at import
    # the workers' shared client store: in memory (/dev/shm) where there is one
    shm = Path("/dev/shm")
    store_dir = Path(tempfile.mkdtemp(prefix="sonicshield-clients-",
                                      dir=shm if shm.is_dir() and os.access(shm, os.W_OK)
                                      else None))
    store = store_dir / "clients"
    ClientStore.create(store, settings.limits.tracked_clients)
    # the store indexes keys by their string hash: every worker must hash alike, with a seed
    # chosen here, at random, unless the operator set one
    os.environ.setdefault("PYTHONHASHSEED", str(secrets.randbelow(1 << 32)))
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_supervise(settings, store))
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        shutil.rmtree(store_dir, ignore_errors=True)
    return 0
