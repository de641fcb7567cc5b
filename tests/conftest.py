"""Shared fixtures: real servers on loopback, polled with deadlines (never slept for)."""

from __future__ import annotations

import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from proxy.app import build_app, start_runner
from proxy.demo.catalogue import ensure_catalogue
from proxy.rules import LiveRules, RuleSet, load_rules
from proxy.settings import (
    AdminSettings,
    AudioSettings,
    EvidenceSettings,
    Listen,
    Settings,
    Timeouts,
    UpstreamSettings,
)

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
# audio variants made by in-process proxies (one folder for the run, removed at its end)
VARIANTS = Path(tempfile.mkdtemp(prefix="sonicshield-test-variants-"))


@pytest.fixture(scope="session", autouse=True)
def _remove_variants() -> Iterator[None]:
    yield
    shutil.rmtree(VARIANTS, ignore_errors=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`, from a /metrics
    page (0.0 when there are none)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name
               and all(sample.labels.get(k) == v for k, v in labels.items()))


async def wait_for_records(folder: Path, what: str, count: int, within: float = 20.0
                           ) -> list[dict]:
    """The evidence records whose variant kind (or "watermark" for marked copies) is `what`,
    once there are `count` of them: the writer writes every 0.1 s, off the request path."""
    import asyncio

    from proxy.evidence.report import read_records

    deadline = time.monotonic() + within
    found: list[dict] = []
    while time.monotonic() < deadline:
        found = [r for r in read_records(folder)[0] if r["kind"] == "exchange" and (
            r["variant"].get("kind") == what or what in r["variant"])]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{len(found)} of {count} '{what}' evidence records after {within} s")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo catalogue, rendered once per test session."""
    return ensure_catalogue(tmp_path_factory.mktemp("demo-media"))


def proxy_settings(upstream: str, **changes: object) -> Settings:
    base = Settings(
        listen=(Listen("127.0.0.1", 0),),
        upstream=UpstreamSettings(url=upstream),
        rules_dir=PASSTHROUGH_RULES,
        admin=AdminSettings(listen=None),
        audio=AudioSettings(cache_dir=VARIANTS, workers=1),
        # every proxy its own evidence folder (a chain has one writer), removed at the end
        evidence=EvidenceSettings(dir=Path(tempfile.mkdtemp(dir=VARIANTS, prefix="evidence-"))),
        timeouts=Timeouts(
            upstream_connect=2.0, upstream_response=5.0, upstream_idle=5.0, shutdown_grace=2.0
        ),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


PASSTHROUGH_RULES = Path(__file__).resolve().parent / "fixtures" / "passthrough"


@functools.cache
def _ruleset(directory: Path) -> RuleSet:
    return load_rules(directory)


def default_rules() -> LiveRules:
    """For tests of the proxy core: forward everything (compiled once; a RuleSet is immutable)."""
    return LiveRules(_ruleset(PASSTHROUGH_RULES))


def shipped_rules() -> LiveRules:
    """The rules SonicShield ships in rules/."""
    return LiveRules(_ruleset(RULES_DIR))


@pytest.fixture
async def run_proxy() -> AsyncIterator:
    """Start the proxy app in this loop exactly as production runs it (same runner settings)."""
    runners: list[web.AppRunner] = []

    async def start(settings: Settings, rules: LiveRules | None = None) -> str:
        app = build_app(settings, rules or default_rules())
        runner = await start_runner(app, settings)
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


class ProxyProcess:
    """`python -m proxy run` in a subprocess, for memory, signal and socket-level tests."""

    def __init__(self, tmp: Path, config: str, port: int, admin_port: int | None = None,
                 preexec: Callable[[], None] | None = None) -> None:
        self.config = tmp / "sonicshield.yaml"
        self.config.write_text(config)
        self.stderr_path = tmp / "proxy.stderr"
        self.port = port
        self.admin_port = admin_port
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "run", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            cwd=ROOT,
            preexec_fn=preexec,
        )
        try:
            wait_for_port("127.0.0.1", port, proc=self.proc)
            if admin_port:
                wait_for_port("127.0.0.1", admin_port, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            raise RuntimeError(f"{exc}; its stderr:\n{self.log}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_log(self, text: str, count: int = 1, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while self.log.count(text) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} x {text!r} not in the log after {within} s:\n"
                                   f"{self.log}")
            time.sleep(0.05)

    def rss(self) -> int:
        import psutil

        proc = psutil.Process(self.proc.pid)
        return int(proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children()))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._stderr.close()


def proxy_config(
    upstream: str, port: int, *, admin_port: int | None = None, admin_token: str | None = None,
    rules_dir: Path = PASSTHROUGH_RULES, extra: str = "",
) -> str:
    admin_listen = f"127.0.0.1:{admin_port}" if admin_port else "null"
    admin = f"admin:\n  listen: {admin_listen}\n"
    if admin_token:
        admin += f"  token: {admin_token}\n"
    return (
        f"listen: 127.0.0.1:{port}\nupstream:\n  url: {upstream}\nrules_dir: {rules_dir}\n"
        f"{admin}{extra}"
    )


@pytest.fixture
def spawn_proxy(tmp_path: Path) -> Iterator:
    started: list[ProxyProcess] = []

    def spawn(
        upstream: str, extra: str = "", admin: bool = False, admin_token: str | None = None,
        rules_dir: Path = PASSTHROUGH_RULES, preexec: Callable[[], None] | None = None,
    ) -> ProxyProcess:
        port = free_port()
        admin_port = free_port() if admin else None
        config = proxy_config(upstream, port, admin_port=admin_port, admin_token=admin_token,
                              rules_dir=rules_dir, extra=extra)
        home = tmp_path / f"p{len(started)}"
        home.mkdir()
        p = ProxyProcess(home, config, port, admin_port, preexec)
        started.append(p)
        return p

    yield spawn
    for p in started:
        p.kill()


@pytest.fixture(scope="session")
def upstream_process() -> Iterator[str]:
    """The scriptable upstream in its own process, so its memory is not the proxy's."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.upstream", str(port)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", port, proc=proc)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ text/plain txt; audio/mpeg mp3; text/html html; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        gzip on;
        gzip_types text/plain;
        gzip_min_length 1;
        etag on;
        max_ranges 8;
    }}
}}
"""


class Nginx:
    def __init__(self, tmp: Path, root: Path) -> None:
        self.port = free_port()
        conf = tmp / "nginx.conf"
        # as root, nginx workers would drop to `nobody`, who cannot read pytest's private tmp
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(NGINX_CONF.format(user=user, tmp=tmp, port=self.port, root=root))
        self.proc = subprocess.Popen(
            [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", str(tmp)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # nginx writes its errors to {tmp}/error.log
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, proc=self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def nginx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nginx-root")
    rng = random.Random(7)
    (root / "track.mp3").write_bytes(bytes(rng.getrandbits(8) for _ in range(300_000)))
    (root / "notes.txt").write_text("liner notes, repeated for compression\n" * 2000)
    (root / "index.html").write_text("<!doctype html><title>store</title><p>hello</p>\n")
    return root


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, nginx_root: Path) -> Iterator[Nginx]:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.fail("nginx is required (apt-get install nginx-light); make test installs it")
    server = Nginx(tmp_path_factory.mktemp("nginx"), nginx_root)
    yield server
    server.stop()
