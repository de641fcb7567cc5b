"""The proxy as a real process: config errors, slowloris, SIGTERM drain, memory, workers."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from .conftest import ROOT, free_port, metric_sum
from .upstream import pattern

MiB = 1024 * 1024


def test_bad_config_exits_nonzero_with_file_line_and_starts_nothing(tmp_path: Path):
    port = free_port()
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        "upstream:\n"
        "  url: ftp://store\n"
        "timeouts:\n"
        "  client_heder: 5\n"
        "workers: many\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{config}:3:8: 'url' must be an http:// or https:// URL: got 'ftp://store'",
        f"{config}:5:3: unknown key 'client_heder' in 'timeouts' (did you mean 'client_header'?)",
        f"{config}:6:10: 'workers' must be an integer from 1 to 64",
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing was listening there


def test_missing_upstream_is_an_error(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "run"], capture_output=True, text=True, timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "<defaults>: no upstream: set upstream.url in the config file or pass --upstream"
    )


def test_slowloris_client_is_dropped_at_the_header_deadline(spawn_proxy, upstream_process):
    proxy = spawn_proxy(upstream_process, extra="timeouts:\n  client_header: 1.0\n")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed_after = None
        for i in range(40):  # one header byte every 0.25 s; bounded at 10 s
            try:
                sock.sendall(b"X-Slow-%d: y\r\n" % i if i % 4 == 0 else b"")
                sock.settimeout(0.25)
                if sock.recv(1024) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None, "slowloris connection was still open after 10 s"
    assert closed_after < 3.0


def test_sigterm_drains_in_flight_streams(spawn_proxy, upstream_process):
    proxy = spawn_proxy(upstream_process, extra="timeouts:\n  shutdown_grace: 10\n")
    result: dict[str, object] = {}

    def download() -> None:
        async def go() -> None:
            async with aiohttp.ClientSession() as s, s.get(
                proxy.url + "/slow?count=15&interval=0.1"
            ) as r:
                result["first"] = await r.content.readline()
                started.set()
                result["rest"] = await r.read()
                result["status"] = r.status

        asyncio.run(go())

    started = threading.Event()
    worker = threading.Thread(target=download)
    worker.start()
    assert started.wait(10)
    assert proxy.stop(timeout=20) == 0
    worker.join(10)
    body = result["first"] + result["rest"]  # type: ignore[operator]
    assert body == b"".join(f"chunk {i}\n".encode() for i in range(15))
    assert '"event":"draining"' in proxy.log
    assert '"event":"stopped"' in proxy.log
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread; bounded by the caller's stop()."""

    def __init__(self, proxy) -> None:
        self.proxy = proxy
        self.baseline = proxy.rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proxy.rss())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak - self.baseline


async def _warm_up(url: str) -> None:
    # one small request of each kind first, so imports and buffers are already paid for
    async with aiohttp.ClientSession() as s:
        async with s.get(url + f"/bytes/{4 * MiB}") as r:
            await r.read()
        async with s.post(url + "/upload", data=io.BytesIO(pattern(4 * MiB))) as r:
            await r.read()


@pytest.mark.slow
def test_300_mb_download_keeps_proxy_memory_flat(spawn_proxy, upstream_process):
    proxy = spawn_proxy(upstream_process, extra="log:\n  access_log: false\n")
    asyncio.run(_warm_up(proxy.url))
    sampler = PeakRss(proxy)

    async def download() -> int:
        total = 0
        async with aiohttp.ClientSession() as s, s.get(proxy.url + f"/bytes/{300 * MiB}") as r:
            async for chunk in r.content.iter_any():
                total += len(chunk)
        return total

    assert asyncio.run(download()) == 300 * MiB
    growth = sampler.stop()
    assert growth < 30 * MiB, f"proxy RSS grew {growth / MiB:.1f} MiB"


@pytest.mark.slow
def test_200_mb_upload_keeps_proxy_memory_flat(spawn_proxy, upstream_process):
    proxy = spawn_proxy(upstream_process, extra="log:\n  access_log: false\n")
    asyncio.run(_warm_up(proxy.url))
    sampler = PeakRss(proxy)
    chunk = pattern(MiB)

    async def upload() -> dict:
        async def body():
            for _ in range(200):
                yield chunk

        async with aiohttp.ClientSession() as s, s.post(proxy.url + "/upload", data=body()) as r:
            return await r.json()

    result = asyncio.run(upload())
    growth = sampler.stop()
    assert result["body_len"] == 200 * MiB
    assert growth < 20 * MiB, f"proxy RSS grew {growth / MiB:.1f} MiB"


def test_two_workers_share_the_port_and_metrics_aggregate(spawn_proxy, upstream_process):
    proxy = spawn_proxy(upstream_process, extra="workers: 2\n", admin=True)
    proxy.wait_for_log('"event":"listening"', count=2)

    async def traffic() -> str:
        async with aiohttp.ClientSession() as s:
            for _ in range(40):
                # a fresh connection each time so the kernel spreads them over both workers
                async with s.get(proxy.url + "/echo", headers={"Connection": "close"}) as r:
                    assert r.status == 200
            async with s.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as r:
                return await r.text()

    metrics = asyncio.run(traffic())
    assert metric_sum(metrics, "sonicshield_requests_total", action="allow",
                      status_class="2xx") == 40.0
    assert proxy.stop(timeout=30) == 0


def test_a_killed_proxy_leaves_no_process_behind(spawn_proxy, upstream_process):
    """SIGKILL (the OOM killer, a container stopped hard): the evidence writer and the fork
    server that started it end by themselves, instead of waiting forever for work."""
    import psutil

    proxy = spawn_proxy(upstream_process)
    asyncio.run(_get_ok(proxy.url + "/echo"))
    deadline = time.monotonic() + 20
    helpers: list[psutil.Process] = []
    while time.monotonic() < deadline and len(helpers) < 2:  # the fork server and the writer
        helpers = psutil.Process(proxy.proc.pid).children(recursive=True)
        time.sleep(0.05)
    assert len(helpers) >= 2, helpers
    proxy.proc.kill()
    proxy.proc.wait(10)
    _, alive = psutil.wait_procs(helpers, timeout=15)
    assert alive == [], [p.cmdline()[:3] for p in alive]


async def _get_ok(url: str) -> None:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
