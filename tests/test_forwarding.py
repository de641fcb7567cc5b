"""Forwarding behaviour over real loopback sockets: headers, trust, errors, streaming, WebSocket."""

from __future__ import annotations

import asyncio
import hashlib
import io
import ipaddress
import logging
import time
from dataclasses import replace

import aiohttp
import pytest
from yarl import URL

from proxy.forward import make_session
from proxy.settings import Limits, Timeouts

from .conftest import free_port, proxy_settings
from .upstream import EVENTS, build_upstream, pattern


@pytest.fixture
async def upstream(aiohttp_server):
    return await aiohttp_server(build_upstream())


@pytest.fixture
def make_proxy(run_proxy, upstream):
    async def make(**changes):
        return await run_proxy(proxy_settings(f"http://127.0.0.1:{upstream.port}", **changes))

    return make


async def get_json(url: str | URL, **kwargs) -> dict:
    async with aiohttp.ClientSession() as s, s.get(url, **kwargs) as r:
        assert r.status == 200
        return await r.json()


def header_values(echoed: dict, name: str) -> list[str]:
    return [v for k, v in echoed["headers"] if k.lower() == name.lower()]


def access_lines(caplog) -> list[dict]:
    return [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "access"]


def no_tracebacks(caplog) -> None:
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


async def test_request_hop_by_hop_and_connection_named_headers_stripped(make_proxy):
    base = await make_proxy()
    echoed = await get_json(
        base + "/echo",
        headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "Keep-Alive": "300",
            "TE": "trailers",
            "Proxy-Authorization": "Basic eDp5",
            "X-Kept": "yes",
        },
    )
    names = {k.lower() for k, _ in echoed["headers"]}
    assert {"x-secret-hop", "keep-alive", "te", "proxy-authorization"}.isdisjoint(names)
    assert header_values(echoed, "X-Kept") == ["yes"]


async def test_response_hop_by_hop_stripped_and_set_cookie_repeats_kept(make_proxy):
    base = await make_proxy()
    async with aiohttp.ClientSession() as s, s.get(base + "/hop") as r:
        assert r.status == 200
        assert r.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
        assert "X-Upstream-Private" not in r.headers
        assert "Keep-Alive" not in r.headers
        assert r.headers["X-Kept"] == "yes"


async def test_no_headers_added_that_the_client_did_not_send(make_proxy):
    base = await make_proxy()
    async with aiohttp.ClientSession(
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding")
    ) as s, s.get(base + "/echo") as r:
        echoed = await r.json()
    names = {k.lower() for k, _ in echoed["headers"]}
    assert {"user-agent", "accept-encoding", "accept", "content-type"}.isdisjoint(names)


async def test_spoofed_forwarding_headers_from_untrusted_peer_are_overwritten(make_proxy, caplog):
    caplog.set_level(logging.INFO, "sonicshield.access")
    base = await make_proxy()
    echoed = await get_json(
        base + "/echo",
        headers={
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
            "X-Real-IP": "6.6.6.6",
        },
    )
    assert header_values(echoed, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(echoed, "X-Forwarded-Proto") == ["http"]
    assert header_values(echoed, "X-Real-IP") == ["127.0.0.1"]
    assert "6.6.6.6" not in header_values(echoed, "Forwarded")[0]
    assert "evil.example" not in header_values(echoed, "X-Forwarded-Host")[0]
    access = access_lines(caplog)
    assert access[-1]["client"] == "127.0.0.1"


async def test_trusted_proxy_is_honoured_walking_right_to_left(make_proxy, caplog):
    caplog.set_level(logging.INFO, "sonicshield.access")
    base = await make_proxy(
        trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))
    )
    echoed = await get_json(
        base + "/echo",
        headers={
            # client-written junk, then the real client, then a trusted inner proxy hop
            "X-Forwarded-For": "6.6.6.6, 203.0.113.9, 10.1.2.3",
            "X-Forwarded-Proto": "https",
        },
    )
    assert header_values(echoed, "X-Forwarded-For") == ["6.6.6.6, 203.0.113.9, 10.1.2.3, 127.0.0.1"]
    assert header_values(echoed, "X-Real-IP") == ["203.0.113.9"]
    assert header_values(echoed, "X-Forwarded-Proto") == ["https"]
    access = access_lines(caplog)
    assert access[-1]["client"] == "203.0.113.9"


async def test_host_preserved_by_default_and_rewritten_on_request(
    make_proxy, upstream, run_proxy
):
    base = await make_proxy()
    echoed = await get_json(base + "/echo", headers={"Host": "store.example"})
    assert header_values(echoed, "Host") == ["store.example"]
    settings = proxy_settings(f"http://127.0.0.1:{upstream.port}")
    settings = replace(settings, upstream=replace(settings.upstream, host_header="upstream"))
    base = await run_proxy(settings)
    echoed = await get_json(base + "/echo", headers={"Host": "store.example"})
    assert header_values(echoed, "Host") == [f"127.0.0.1:{upstream.port}"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
async def test_every_method_forwarded(make_proxy, method):
    base = await make_proxy()
    async with aiohttp.ClientSession() as s, s.request(method, base + "/echo", data=b"xyz") as r:
        echoed = await r.json()
    assert (echoed["method"], echoed["body_len"]) == (method, 3)


async def test_redirects_are_passed_to_the_client_not_followed(make_proxy):
    base = await make_proxy()
    async with aiohttp.ClientSession() as s, s.get(
        base + "/redirect", allow_redirects=False
    ) as r:
        assert r.status == 302
        assert r.headers["Location"] == "/echo?from=redirect"


async def test_path_normalised_and_query_forwarded_raw(make_proxy):
    """The path as the rules judged it (unreserved characters decoded, hex in capitals), the
    query string as the client sent it (proxy/inbound.py)."""
    base = await make_proxy()
    echoed = await get_json(URL(base + "/echo/a%62/%e2%99%aa?x=1&y=%20&z=%2f", encoded=True))
    assert echoed["path"] == "/echo/ab/%E2%99%AA?x=1&y=%20&z=%2f"


async def test_upstream_down_gives_502_page_and_one_log_line(run_proxy, caplog):
    caplog.set_level(logging.INFO)
    base = await run_proxy(proxy_settings(f"http://127.0.0.1:{free_port()}"))
    async with aiohttp.ClientSession() as s, s.get(base + "/x") as r:
        assert r.status == 502
        assert "Bad Gateway" in await r.text()
    access = access_lines(caplog)
    assert [a["error"] for a in access] == ["upstream-unreachable"]
    no_tracebacks(caplog)


async def test_hung_upstream_gives_504_within_configured_time(make_proxy, caplog):
    base = await make_proxy(timeouts=Timeouts(upstream_response=0.5))
    started = time.monotonic()
    async with aiohttp.ClientSession() as s, s.get(base + "/hang") as r:
        assert r.status == 504
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5.0
    no_tracebacks(caplog)


async def test_stream_longer_than_response_deadline_is_not_cut(make_proxy):
    # The upstream's headers arrive at once, then the body takes ~2 s: four times the response
    # deadline. Only the idle gap between reads is bounded, never the whole stream.
    base = await make_proxy(timeouts=Timeouts(upstream_response=0.5, upstream_idle=1.0))
    async with aiohttp.ClientSession() as s, s.get(base + "/slow?count=20&interval=0.1") as r:
        body = await r.read()
    assert body == b"".join(f"chunk {i}\n".encode() for i in range(20))


def test_client_session_has_no_total_timeout():
    settings = proxy_settings("http://127.0.0.1:1")

    async def check():
        session = make_session(settings)
        try:
            assert session.timeout.total is None
            assert session.auto_decompress is False
        finally:
            await session.close()

    asyncio.run(check())


async def test_upstream_stalling_mid_body_cuts_the_client_connection(make_proxy, caplog):
    caplog.set_level(logging.INFO, "sonicshield.access")
    base = await make_proxy(timeouts=Timeouts(upstream_idle=0.5))
    async with aiohttp.ClientSession() as s, s.get(base + "/stall") as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    access = access_lines(caplog)
    assert access[-1]["error"] == "upstream-idle-timeout"
    no_tracebacks(caplog)


async def test_aborted_client_releases_upstream_without_traceback(make_proxy, upstream, caplog):
    caplog.set_level(logging.INFO)
    base = await make_proxy()
    async with aiohttp.ClientSession() as s:
        r = await s.get(base + f"/bytes/{200 * 1024 * 1024}")
        await r.content.readexactly(256 * 1024)
        r.close()  # drop the connection mid-body
    # the upstream sees its own write fail: the proxy closed the upstream connection
    await asyncio.wait_for(upstream.app[EVENTS]["client_gone"].wait(), timeout=10)
    for _ in range(100):
        access = access_lines(caplog)
        if access:
            break
        await asyncio.sleep(0.05)
    assert access[-1]["error"] == "client-abort"
    no_tracebacks(caplog)


async def test_request_body_streamed_to_upstream_intact(make_proxy):
    base = await make_proxy()
    data = pattern(5 * 1024 * 1024 + 17)

    async def chunks():
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    for body in (io.BytesIO(data), chunks()):  # with Content-Length, and chunked
        async with aiohttp.ClientSession() as s, s.post(base + "/upload", data=body) as r:
            result = await r.json()
        assert result == {"body_len": len(data), "body_sha256": hashlib.sha256(data).hexdigest()}


async def test_request_body_over_the_limit_gets_413(make_proxy):
    base = await make_proxy(limits=Limits(max_request_body=1000))
    async with aiohttp.ClientSession() as s, s.post(base + "/upload", data=b"x" * 5000) as r:
        assert r.status == 413


async def test_per_client_stream_cap(make_proxy):
    base = await make_proxy(limits=Limits(streams_per_client=1))
    async with aiohttp.ClientSession() as s:
        first = await s.get(base + "/slow?count=10&interval=0.1")
        async with s.get(base + "/echo") as second:
            assert second.status == 429
            assert second.headers["Retry-After"] == "5"
        assert (await first.read()).startswith(b"chunk 0")
        async with s.get(base + "/echo") as third:
            assert third.status == 200


async def test_websocket_echo_through_proxy(make_proxy):
    base = await make_proxy()
    async with aiohttp.ClientSession() as s, s.ws_connect(
        base.replace("http", "ws") + "/ws", protocols=("echo.v1",)
    ) as ws:
        assert ws.protocol == "echo.v1"
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "echo:hello"
        await ws.send_bytes(b"\x01\x02\x03")
        assert (await ws.receive(timeout=5)).data == b"\x03\x02\x01"


async def test_verdict_header_and_access_log_line(make_proxy, caplog):
    caplog.set_level(logging.INFO, "sonicshield.access")
    base = await make_proxy(verdict_header=True)
    session = aiohttp.ClientSession(headers={"User-Agent": "t/1"})
    async with session as s, s.get(base + "/echo") as r:
        assert r.headers["X-SonicShield-Verdict"] == (
            "allow; passthrough/99-allow.yaml:4 allow-everything")
    line = caplog.records[-1].fields
    assert {k: line[k] for k in ("method", "path", "status", "verdict", "ua")} == {
        "method": "GET", "path": "/echo", "status": 200,
        "verdict": "passthrough/99-allow.yaml:4 allow-everything", "ua": "t/1",
    }
    assert line["bytes"] > 0
    assert len(line["id"]) == 16
