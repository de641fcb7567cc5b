"""The proxy answers exactly as the upstream does: real nginx as the upstream, each request sent
directly and through SonicShield, bodies and the headers that matter compared byte for byte."""

from __future__ import annotations

import gzip
import re

import aiohttp
import pytest

from .conftest import proxy_settings

COMPARED = ("Content-Type", "Content-Length", "Content-Range", "ETag", "Last-Modified",
            "Content-Encoding", "Accept-Ranges", "Vary")


@pytest.fixture
async def via(run_proxy, nginx):
    return await run_proxy(proxy_settings(nginx.url))


async def fetch(base: str, method: str, path: str, headers: dict[str, str] | None = None):
    async with aiohttp.ClientSession(
        auto_decompress=False, skip_auto_headers=("Accept-Encoding",)
    ) as s, s.request(
        method, base + path, headers=headers or {}, allow_redirects=False
    ) as r:
        body = await r.read()
        return r.status, {h: r.headers.get(h) for h in COMPARED}, body


def _normalise_boundary(headers: dict, body: bytes) -> tuple[dict, bytes]:
    ctype = headers.get("Content-Type") or ""
    m = re.search(r"boundary=(\S+)", ctype)
    if not m:
        return headers, body
    boundary = m.group(1).encode()
    headers = dict(headers, **{"Content-Type": ctype.replace(m.group(1), "B")})
    return headers, body.replace(boundary, b"B")


async def assert_same(direct: str, via: str, method: str, path: str, headers=None) -> tuple:
    d = await fetch(direct, method, path, headers)
    p = await fetch(via, method, path, headers)
    d_headers, d_body = _normalise_boundary(d[1], d[2])
    p_headers, p_body = _normalise_boundary(p[1], p[2])
    assert p[0] == d[0], f"status {p[0]} != {d[0]}"
    assert p_headers == d_headers
    assert p_body == d_body
    return d[0], d_headers, d_body


async def test_get_is_byte_identical(nginx, nginx_root, via):
    status, _headers, body = await assert_same(nginx.url, via, "GET", "/track.mp3")
    assert status == 200
    assert body == (nginx_root / "track.mp3").read_bytes()


async def test_head_matches_get_headers_without_body(nginx, via):
    status, headers, body = await assert_same(nginx.url, via, "HEAD", "/track.mp3")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == "300000"


@pytest.mark.parametrize(
    ("range_header", "expected"),
    [
        ("bytes=0-99", slice(0, 100)),
        ("bytes=1000-", slice(1000, None)),
        ("bytes=-500", slice(-500, None)),
    ],
)
async def test_single_ranges(nginx, nginx_root, via, range_header, expected):
    status, _headers, body = await assert_same(
        nginx.url, via, "GET", "/track.mp3", {"Range": range_header}
    )
    assert status == 206
    assert body == (nginx_root / "track.mp3").read_bytes()[expected]


async def test_multi_range_passes_through(nginx, nginx_root, via):
    status, headers, body = await assert_same(
        nginx.url, via, "GET", "/track.mp3", {"Range": "bytes=0-9,200-209"}
    )
    data = (nginx_root / "track.mp3").read_bytes()
    assert status == 206
    assert headers["Content-Type"].startswith("multipart/byteranges")
    assert data[0:10] in body
    assert data[200:210] in body


async def test_if_range_current_and_stale(nginx, via):
    _, headers, _ = await fetch(nginx.url, "GET", "/track.mp3")
    etag = headers["ETag"]
    status, _, body = await assert_same(
        nginx.url, via, "GET", "/track.mp3", {"Range": "bytes=0-9", "If-Range": etag}
    )
    assert (status, len(body)) == (206, 10)
    status, _, body = await assert_same(
        nginx.url, via, "GET", "/track.mp3", {"Range": "bytes=0-9", "If-Range": '"stale"'}
    )
    assert (status, len(body)) == (200, 300_000)


async def test_conditional_304(nginx, via):
    _, headers, _ = await fetch(nginx.url, "GET", "/track.mp3")
    status, _, body = await assert_same(
        nginx.url, via, "GET", "/track.mp3", {"If-None-Match": headers["ETag"]}
    )
    assert (status, body) == (304, b"")
    status, _, _ = await assert_same(
        nginx.url, via, "GET", "/track.mp3", {"If-Modified-Since": headers["Last-Modified"]}
    )
    assert status == 304


async def test_unsatisfiable_range_416(nginx, via):
    status, headers, _ = await assert_same(
        nginx.url, via, "GET", "/track.mp3", {"Range": "bytes=999999-"}
    )
    assert status == 416
    assert headers["Content-Range"] == "bytes */300000"


async def test_gzip_passed_through_unchanged(nginx, nginx_root, via):
    _, headers, body = await assert_same(
        nginx.url, via, "GET", "/notes.txt", {"Accept-Encoding": "gzip"}
    )
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == (nginx_root / "notes.txt").read_bytes()
    # and a client that does not accept gzip gets it plain: the header was forwarded as sent
    _status, headers, body = await assert_same(nginx.url, via, "GET", "/notes.txt")
    assert headers["Content-Encoding"] is None
    assert body == (nginx_root / "notes.txt").read_bytes()


async def test_not_found_passes_through(nginx, via):
    status, _, _ = await assert_same(nginx.url, via, "GET", "/nope.mp3")
    assert status == 404
