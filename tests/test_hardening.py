"""Hostile and broken clients, a failing store, hostile input: each refused or survived, with
one log line and no traceback. All traffic stays on loopback; every loop is bounded."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from proxy.rules import LiveRules, load_rules
from proxy.settings import AudioSettings
from proxy.state import ClientStore

from .conftest import ROOT, metric_sum, proxy_settings

FIXTURES = Path(__file__).parent / "fixtures"

# each a whole request head (and body) that a front end and a back end could frame
# differently, or that no well-formed client sends
PROBES = {
    "CL and TE": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "two Content-Lengths": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                           b"Content-Length: 5\r\n\r\nabcde",
    "TE xchunked": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
                   b"0\r\n\r\n",
    "TE space before colon": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n"
                             b"\r\n0\r\n\r\n",
    "TE twice": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "TE chunked, identity": b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                            b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "TE vertical tab": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n"
                       b"0\r\n\r\n",
    "TE in HTTP/1.0": b"POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"0\r\n\r\n",
    "obs-fold": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
    "bare LF": b"GET /echo HTTP/1.1\nHost: x\n\n",
    "NUL in a header": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    "NUL in the path": b"GET /ec\x00ho HTTP/1.1\r\nHost: x\r\n\r\n",
    "NUL in a chunk extension": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                                b"\r\n\r\n1;a\x00\r\nx\r\n0\r\n\r\n",
    "negative Content-Length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "signed Content-Length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
    "space in a header name": b"GET /echo HTTP/1.1\r\nHost: x\r\nX Space: y\r\n\r\n",
    "two Hosts": b"GET /echo HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "oversized request line": b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "oversized header": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n",
    "too many headers": b"GET /echo HTTP/1.1\r\nHost: x\r\n"
                        + b"".join(b"X-%d: y\r\n" % i for i in range(120)) + b"\r\n",
}


def exchange_raw(port: int, data: bytes, within: float = 10.0) -> bytes:
    """Send `data`, return everything the proxy sends until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=within) as s:
        s.sendall(data)
        got = b""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            piece = s.recv(65536)
            if not piece:
                return got
            got += piece
    raise AssertionError(f"the connection stayed open after {got[:80]!r}")


def test_smuggling_probes_and_malformed_heads_are_refused(spawn_proxy, upstream_process):
    proxy = spawn_proxy(upstream_process, extra=(
        "limits: {max_request_line: 2048, max_header_field: 4096, max_headers: 100}\n"))
    for name, data in PROBES.items():
        answer = exchange_raw(proxy.port, data)
        status_line = answer.split(b"\r\n", 1)[0]
        # refused, and the connection closed: nothing after it is read as a second request
        assert status_line.split()[1:2] == [b"400"], (name, answer[:200])
    # a well-formed request on the same proxy is served
    assert exchange_raw(proxy.port, b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close"
                                    b"\r\n\r\n").startswith(b"HTTP/1.1 200 OK")
    proxy.stop()
    assert proxy.log.count('"event":"bad-request"') == len(PROBES)  # one line each
    assert "Traceback" not in proxy.log
    assert '"reason":"Transfer-Encoding can\'t be present with Content-Length"' in proxy.log
    assert '"reason":"Transfer-Encoding in an HTTP/1.0 request"' in proxy.log


def test_a_slow_body_is_cut_at_the_idle_deadline(spawn_proxy, upstream_process):
    proxy = spawn_proxy(upstream_process, extra="timeouts: {client_idle: 1}\n")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                  + b"x" * 100)  # ... and nothing more
        started = time.monotonic()
        answer = b""
        while piece := s.recv(65536):  # until the proxy closes (the socket timeout bounds it)
            answer += piece
        waited = time.monotonic() - started
    assert waited < 14, "the proxy kept a stalled upload open"
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    proxy.stop()
    assert '"error":"client-timeout"' in proxy.log
    assert "Traceback" not in proxy.log


def test_an_upstream_reset_mid_body_cuts_the_client_short(spawn_proxy, upstream_process):
    proxy = spawn_proxy(upstream_process)

    async def fetch() -> tuple[int, int, bool]:
        async with aiohttp.ClientSession() as s, s.get(proxy.url + "/reset") as r:
            got, cut = 0, False
            try:
                async for piece in r.content.iter_any():
                    got += len(piece)
            except aiohttp.ClientPayloadError:
                cut = True
            return r.status, got, cut

    status, got, cut = asyncio.run(fetch())
    # the promised length never arrives, and the client is told (the connection is cut, so
    # a truncated file is never taken for a whole one)
    assert (status, cut) == (200, True)
    assert got < 1 << 20
    assert asyncio.run(_ok(proxy.url + "/echo"))  # and the proxy goes on
    proxy.stop()
    assert "Traceback" not in proxy.log


async def _ok(url: str) -> bool:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status == 200


def test_tarpits_are_bounded(spawn_proxy, upstream_process):
    """More tarpitted requests than `limits.tarpits` at once: the rest get a plain 403 at
    once, so a swarm cannot hold the proxy's connections."""
    proxy = spawn_proxy(upstream_process, extra="limits: {tarpits: 2}\n",
                        rules_dir=FIXTURES / "tarpit-pages")

    async def swarm() -> tuple[list[int], int]:
        async with aiohttp.ClientSession() as s:
            async def one(i: int) -> int:
                async with s.get(f"{proxy.url}/page-{i}",
                                 timeout=aiohttp.ClientTimeout(total=4)) as r:
                    await r.read()
                    return r.status

            tasks = [asyncio.ensure_future(one(i)) for i in range(6)]
            done, pending = await asyncio.wait(tasks, timeout=3)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            return sorted(t.result() for t in done), len(pending)

    finished, held = asyncio.run(swarm())
    assert finished == [403, 403, 403, 403]  # beyond the two tarpits: refused, at once
    assert held == 2  # the two tarpits still dribbling
    proxy.stop()
    assert "Traceback" not in proxy.log


def test_admin_is_its_own_listener_and_mutations_need_the_token(spawn_proxy, upstream_process):
    token = "t" * 32
    proxy = spawn_proxy(upstream_process, admin=True, admin_token=token)
    admin = f"http://127.0.0.1:{proxy.admin_port}"

    async def probe() -> dict[str, object]:
        async with aiohttp.ClientSession() as s:
            out: dict[str, object] = {}
            # the public listener has no admin endpoints: these go to the store like any path
            async with s.get(proxy.url + "/echo/metrics") as r:
                out["public metrics"] = "sonicshield_requests_total" in await r.text()
            async with s.post(proxy.url + "/rules/reload") as r:
                out["public reload"] = r.status
            for name, headers in (("no token", {}), ("wrong token", {
                    "Authorization": "Bearer " + "x" * 32}), ("basic", {
                    "Authorization": "Basic " + token})):
                async with s.post(admin + "/rules/reload", headers=headers) as r:
                    out[name] = r.status
            async with s.post(admin + "/rules/reload",
                              headers={"Authorization": "Bearer " + token}) as r:
                out["token"] = r.status
            for path in ("/../metrics", "/%2e%2e/etc/passwd", "/metrics/../../etc/passwd"):
                async with s.get(admin + path) as r:
                    out[path] = (r.status, "root:" in await r.text())
            return out

    out = asyncio.run(probe())
    assert out["public metrics"] is False
    assert out["public reload"] == 404  # the store's answer: it has no such path
    assert (out["no token"], out["wrong token"], out["basic"], out["token"]) == (401, 401, 401,
                                                                                 200)
    for path in ("/../metrics", "/%2e%2e/etc/passwd", "/metrics/../../etc/passwd"):
        status, leaked = out[path]  # type: ignore[misc]
        assert not leaked
        assert status in (200, 404), path  # /../metrics normalises to /metrics; nothing else
    proxy.stop()
    assert proxy.log.count('"event":"rules-reloaded"') == 1


async def test_path_traversal_never_leaves_the_variant_cache(run_proxy, aiohttp_server,
                                                             tmp_path):
    """A crawler asking for '../' paths that climb above the root, or hide a '/' in %2F, is
    refused (400) before the store or the variant cache hears of it (proxy/inbound.py)."""
    from aiohttp import web

    seen: list[str] = []

    async def store(request: web.Request) -> web.Response:
        if "X-Request-Id" in request.headers:  # a client's, not the proxy's robots.txt or probe
            seen.append(request.raw_path)
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", store)
    upstream = await aiohttp_server(app)
    cache = tmp_path / "variants"
    settings = proxy_settings(str(upstream.make_url("")).rstrip("/"), rules_dir=ROOT / "rules",
                              audio=AudioSettings(cache_dir=cache, workers=1))
    proxy = await run_proxy(settings, LiveRules(load_rules(ROOT / "rules")))
    outside = tmp_path / "outside.mp3"
    async with aiohttp.ClientSession() as s:
        for path in ("/stream/..%2F..%2Foutside.mp3", "/stream/%2e%2e/%2e%2e/outside.mp3",
                     "/../../../../etc/passwd.mp3"):
            async with s.get(URL(f"{proxy}{path}", encoded=True),
                             headers={"User-Agent": "GPTBot/1.2"}) as r:
                assert r.status == 400, path
                assert "root:" not in await r.text()
    assert not outside.exists()
    assert seen == []  # never forwarded
    assert all(p.resolve().is_relative_to(cache.resolve()) for p in cache.rglob("*"))


def test_an_address_rotation_flood_stays_under_the_cap(spawn_proxy, upstream_process):
    """10,000 requests from 10,000 addresses (X-Forwarded-For from a trusted proxy) into a
    store capped at 1,000: the store holds at most 1,000; the store itself takes 100,000
    distinct addresses without growing (its memory is allocated once)."""
    proxy = spawn_proxy(upstream_process, admin=True, extra=(
        "trusted_proxies: [127.0.0.1/32]\nlimits: {tracked_clients: 1000}\n"
        "log: {access_log: false}\n"), rules_dir=ROOT / "rules")

    async def flood() -> str:
        async with aiohttp.ClientSession() as s:
            async def client(k: int) -> None:
                for i in range(k, 10_000, 8):
                    address = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
                    async with s.get(f"{proxy.url}/echo/t.mp3", headers={
                            "X-Forwarded-For": address, "Range": "bytes=0-"}) as r:
                        await r.read()

            await asyncio.gather(*(client(k) for k in range(8)))
            async with s.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as r:
                return await r.text()

    rss_before = proxy.rss()
    metrics = asyncio.run(flood())
    assert metric_sum(metrics, "sonicshield_tracked_clients") == 1000
    assert proxy.rss() - rss_before < 64 << 20
    proxy.stop()

    store = ClientStore(1000)
    size = len(store._view)
    for i in range(100_000):
        store.row(f"i:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", float(i))
    assert (len(store), len(store._view)) == (1000, size)


@pytest.mark.parametrize(("text", "error"), [
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
     "bad.yaml:2:8: YAML aliases (*name) are not allowed here; write the value out"),
    ("version: 1\nrules:\n  - name: x\n    match: {path: [",
     "bad.yaml:5:1: invalid YAML: did not find expected node content"),
    ("\x00\x01\x02", "bad.yaml:1:1: invalid YAML: unacceptable character #x0000: control "
     "characters are not allowed"),
])
def test_hostile_rule_files_are_refused(tmp_path, text, error, capsys):
    """Alias bombs, truncated and binary files: `check` (and so every load and reload, which
    run the same loader) refuses them with a position; test_config.py covers the huge ones."""
    from proxy.cli import main

    (tmp_path / "bad.yaml").write_text(text)
    assert main(["check", str(tmp_path)]) == 2
    assert error in capsys.readouterr().err


def test_slow_readers_keep_the_proxy_memory_bounded(spawn_proxy, upstream_process):
    """Eight clients ask for 100 MB each and then read nothing: the proxy stops reading from
    the store when a client's socket is full, instead of buffering the tracks."""
    proxy = spawn_proxy(upstream_process, extra="timeouts: {client_idle: 30}\n")
    baseline = proxy.rss()
    sockets = []
    try:
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            s.sendall(b"GET /bytes/100000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            sockets.append(s)
        peak = baseline
        deadline = time.monotonic() + 3  # sampled while nobody reads
        while time.monotonic() < deadline:
            peak = max(peak, proxy.rss())
            time.sleep(0.1)
    finally:
        for s in sockets:
            s.close()
    assert peak - baseline < 40 << 20, f"proxy RSS grew {(peak - baseline) >> 20} MiB"
    assert asyncio.run(_ok(proxy.url + "/echo"))
    proxy.stop()
    assert "Traceback" not in proxy.log
