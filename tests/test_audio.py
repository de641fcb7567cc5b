"""Audio countermeasures: formats by content, truncated and decoy variants judged by real
tools (ffmpeg, ffprobe, flac, mutagen, Chromaprint's fpcalc), served with HTTP semantics of
their own."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

import aiohttp
import mutagen
import numpy as np
import pytest
import soundfile
from aiohttp import web

from proxy.audio import codec
from proxy.audio.formats import AudioFormat, seconds_per_byte, sniff
from proxy.rules import LiveRules, load_rules
from proxy.settings import AudioSettings

from .audio_tools import decode_errors, ffprobe_duration, make_sources, similarity
from .conftest import proxy_settings

RULES = Path(__file__).resolve().parent / "fixtures" / "countermeasures"
FORMATS = {"mp3": AudioFormat.MP3, "flac": AudioFormat.FLAC, "ogg": AudioFormat.VORBIS,
           "opus": AudioFormat.OPUS, "wav": AudioFormat.WAV, "m4a": AudioFormat.M4A}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_sources(tmp_path_factory.mktemp("audio"))


def test_formats_are_recognised_by_content(sources, tmp_path):
    for ext, fmt in FORMATS.items():
        assert sniff(sources[ext].read_bytes()[:4096]) is fmt, ext
    tagged = tmp_path / "tagged.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(sources["mp3"]), "-c", "copy",
                    "-metadata", "title=" + "x" * 5000, "-id3v2_version", "3", str(tagged)],
                   check=True)
    assert tagged.read_bytes()[:3] == b"ID3"
    assert sniff(tagged.read_bytes()[:4096]) is AudioFormat.MP3  # the tag is longer than 4 KiB
    for not_audio in (b"<!doctype html><html>", b"", b"OggS" + bytes(100), b"\xff\xfb\xff\xff"):
        assert sniff(not_audio) is None, not_audio


def test_seconds_per_byte_from_the_first_bytes(sources, tmp_path):
    """For the seconds-of-audio metric: MP3 (CBR and VBR), FLAC and WAV from their first
    8 KiB and size; the formats it cannot tell give None, never a wrong figure."""
    vbr = tmp_path / "vbr.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(sources["wav"]), "-c:a", "libmp3lame",
                    "-q:a", "2", str(vbr)], check=True)
    for path in (sources["mp3"], vbr, sources["flac"], sources["wav"]):
        data = path.read_bytes()
        rate = seconds_per_byte(data[:8192], len(data))
        assert rate is not None, path.name
        assert rate * len(data) == pytest.approx(ffprobe_duration(path), rel=0.02), path.name
    for ext in ("ogg", "opus", "m4a"):
        data = sources[ext].read_bytes()
        assert seconds_per_byte(data[:8192], len(data)) is None


@pytest.mark.parametrize("ext", list(FORMATS))
def test_truncate_is_a_valid_file_of_n_seconds(sources, tmp_path, ext):
    fmt = FORMATS[ext]
    out = tmp_path / f"short.{ext}"
    codec.truncate(sources[ext], out, fmt, 7.0)
    assert decode_errors(out) == ""
    assert ffprobe_duration(out) == pytest.approx(7.0, abs=0.05)
    tags = mutagen.File(str(out))
    assert tags is not None
    assert tags.info.length == pytest.approx(7.0, abs=0.05)
    assert sniff(out.read_bytes()[:4096]) is fmt
    if fmt is AudioFormat.FLAC:
        subprocess.run(["flac", "-t", "-s", str(out)], check=True)
    if fmt.lossless:  # the first N seconds are the source's own samples
        cut, rate = soundfile.read(out, dtype="int32")
        whole, _ = soundfile.read(sources[ext], dtype="int32")
        assert len(cut) == 7 * rate
        assert np.array_equal(cut, whole[:len(cut)])


@pytest.mark.parametrize("ext", list(FORMATS))
def test_decoy_is_shaped_like_the_source_and_sounds_nothing_like_it(sources, tmp_path, ext):
    fmt = FORMATS[ext]
    out = tmp_path / f"decoy.{ext}"
    codec.decoy(sources[ext], out, fmt, seed=12345)
    assert decode_errors(out) == ""
    assert sniff(out.read_bytes()[:4096]) is fmt
    original, decoy = codec.probe(sources[ext], fmt), codec.probe(out, fmt)
    assert decoy.duration == pytest.approx(original.duration, abs=0.1)
    assert (decoy.sample_rate, decoy.channels) == (original.sample_rate, original.channels)
    if not fmt.lossless and fmt is not AudioFormat.VORBIS:  # Vorbis has no bitrate to ask for
        assert decoy.bit_rate == pytest.approx(original.bit_rate, rel=0.2)
    assert similarity(sources[ext], out) < 0.6


def test_an_mp3_reencode_of_the_original_still_matches_its_fingerprint(sources, tmp_path):
    # the yardstick for the decoy test above: a real copy scores high
    copy = tmp_path / "copy.mp3"
    subprocess.run(["lame", "--quiet", "--cbr", "-b", "128", str(sources["wav"]), str(copy)],
                   check=True)
    assert similarity(sources["wav"], copy) > 0.95


async def store(sources: dict[str, Path], aiohttp_server):
    """A store serving the sources under /truncate/, /decoy/ and /real/ (strong ETags, as
    aiohttp's file responses give), counting its requests."""
    seen: list[str] = []

    async def track(request: web.Request) -> web.StreamResponse:
        seen.append(request.method + " " + request.path)
        return web.FileResponse(sources[request.match_info["ext"]])

    app = web.Application()
    app.router.add_get("/{folder}/track.{ext}", track)
    return await aiohttp_server(app), seen


async def get(session: aiohttp.ClientSession, url: str, **headers: str):
    async with session.get(url, headers=headers) as r:
        return r.status, r.headers, await r.read()


async def test_variants_have_http_semantics_of_their_own(sources, aiohttp_server, run_proxy,
                                                         tmp_path):
    upstream, seen = await store(sources, aiohttp_server)
    settings = proxy_settings(f"http://127.0.0.1:{upstream.port}", rules_dir=RULES,
                              verdict_header=True,
                              audio=AudioSettings(cache_dir=tmp_path / "variants", workers=1))
    base = await run_proxy(settings, LiveRules(load_rules(RULES)))
    real = sources["mp3"].read_bytes()
    async with aiohttp.ClientSession() as s:
        status, headers, body = await get(s, base + "/truncate/track.mp3")
        assert status == 200
        assert body != real
        assert len(body) < len(real) / 2
        assert headers["Content-Type"] == "audio/mpeg"
        assert headers["Cache-Control"] == "private, no-transform"
        assert headers["X-SonicShield-Verdict"].startswith("truncate;")
        etag = headers["ETag"]
        _, real_headers, _ = await get(s, base + "/real/track.mp3")
        assert etag.startswith('"')
        assert etag != real_headers["ETag"]
        assert "Last-Modified" not in headers
        (tmp_path / "got.mp3").write_bytes(body)
        assert ffprobe_duration(tmp_path / "got.mp3") == pytest.approx(5.0, abs=0.05)
        # two ranged reads stitch into the same file
        half = len(body) // 2
        status1, h1, part1 = await get(s, base + "/truncate/track.mp3", Range=f"bytes=0-{half}")
        status2, h2, part2 = await get(s, base + "/truncate/track.mp3", Range=f"bytes={half + 1}-")
        assert (status1, status2) == (206, 206)
        assert h1["Content-Range"] == f"bytes 0-{half}/{len(body)}"
        assert part1 + part2 == body
        assert h2["ETag"] == etag
        # a stale If-Range gets the whole variant; a current one the range
        status, _, whole = await get(s, base + "/truncate/track.mp3", Range="bytes=0-9",
                                     **{"If-Range": '"stale"'})
        assert (status, whole) == (200, body)
        status, _, part = await get(s, base + "/truncate/track.mp3", Range="bytes=0-9",
                                    **{"If-Range": etag})
        assert (status, part) == (206, body[:10])
        status, h, _ = await get(s, base + "/truncate/track.mp3",
                                 Range=f"bytes={len(body)}-")
        assert status == 416
        assert h["Content-Range"] == f"bytes */{len(body)}"
        status, _, _ = await get(s, base + "/truncate/track.mp3", **{"If-None-Match": etag})
        assert status == 304
        async with s.head(base + "/truncate/track.mp3") as r:
            assert r.status == 200
            assert int(r.headers["Content-Length"]) == len(body)
            assert r.headers["ETag"] == etag
        # the decoy: the same duration as the original, another sound
        status, headers, decoy = await get(s, base + "/decoy/track.flac")
        assert status == 200
        assert headers["Content-Type"] == "audio/flac"
        assert decoy != sources["flac"].read_bytes()
    # made once: the store was asked for the whole original once per variant
    assert seen.count("GET /truncate/track.mp3") == 1
    assert seen.count("GET /decoy/track.flac") == 1


async def test_without_a_variant_a_crawler_gets_a_refusal_never_the_file(
        aiohttp_server, run_proxy, tmp_path, sources):
    async def track(request: web.Request) -> web.StreamResponse:
        if request.path.endswith(".html.mp3"):
            return web.Response(text="<html>not audio</html>", content_type="audio/mpeg")
        if request.path.endswith("missing.mp3"):
            raise web.HTTPNotFound()
        await asyncio.sleep(0.5)  # a slow store: the jobs pile up
        return web.FileResponse(sources["mp3"])

    app = web.Application()
    app.router.add_get("/{tail:.*}", track)
    upstream = await aiohttp_server(app)
    settings = proxy_settings(f"http://127.0.0.1:{upstream.port}", rules_dir=RULES,
                              audio=AudioSettings(cache_dir=tmp_path / "v", workers=1,
                                                  max_jobs=2))
    base = await run_proxy(settings, LiveRules(load_rules(RULES)))
    real = sources["mp3"].read_bytes()
    async with aiohttp.ClientSession() as s:
        assert (await get(s, base + "/truncate/page.html.mp3"))[0] == 403
        assert (await get(s, base + "/truncate/missing.mp3"))[0] == 404
        # six different tracks at once against a bound of two jobs
        results = await asyncio.gather(*(get(s, base + f"/truncate/t{i}.mp3")
                                         for i in range(6)))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 200, 403, 403, 403, 403]
    assert all(body != real for _, _, body in results)


def test_audio_actions_need_an_audio_only_match(tmp_path, capsys):
    from proxy.cli import main

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10-a.yaml").write_text(
        "version: 1\nrules:\n  - name: a\n    match: {ua_class: ai-crawler}\n"
        "    action: truncate\n  - name: b\n    match: {content: [audio, page]}\n"
        "    action: decoy\n  - name: c\n    match: {content: audio}\n    action: truncate\n"
        "    params: {seconds: 0}\n")
    assert main(["check", str(rules)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "rules/10-a.yaml:5:13: rule 'a': action 'truncate' makes a variant of an audio file: "
        "the rule's match needs 'content: audio' (and no other kind)",
        "rules/10-a.yaml:8:13: rule 'b': action 'decoy' makes a variant of an audio file: "
        "the rule's match needs 'content: audio' (and no other kind)",
        "rules/10-a.yaml:12:13: rule 'c': params for 'truncate': 'seconds' must be a number "
        "from 1 to 600",
        "3 errors",
    ]


@pytest.mark.parametrize("ext", ["mp3", "flac"])
def test_poison_degrades_more_with_strength(sources, tmp_path, ext):
    fmt = FORMATS[ext]
    x, _ = codec.decode(sources[ext])
    snrs = []
    for strength in (0.2, 0.6, 1.0):
        out = tmp_path / f"p{strength}.{ext}"
        codec.poison(sources[ext], out, fmt, strength, seed=1)
        assert decode_errors(out) == ""
        assert sniff(out.read_bytes()[:4096]) is fmt
        assert codec.probe(out, fmt).duration == pytest.approx(
            codec.probe(sources[ext], fmt).duration, abs=0.1)
        y, _ = codec.decode(out)
        n = min(len(x), len(y))
        snrs.append(10 * np.log10(np.sum(x[:n] ** 2) / np.sum((x[:n] - y[:n]) ** 2)))
    assert snrs[0] > snrs[1] + 3 > snrs[2] + 6, snrs


async def test_a_client_that_leaves_does_not_cancel_the_variant(
        aiohttp_server, run_proxy, tmp_path, sources):
    fetched: list[str] = []

    async def track(request: web.Request) -> web.StreamResponse:
        if not request.path.startswith("/truncate/"):
            raise web.HTTPNotFound()  # the proxy's own robots.txt fetch
        if request.method == "GET":
            fetched.append(request.path)
            await asyncio.sleep(0.5)  # slow enough for the first client to give up
        return web.FileResponse(sources["mp3"])

    app = web.Application()
    app.router.add_get("/{tail:.*}", track)
    upstream = await aiohttp_server(app)
    settings = proxy_settings(f"http://127.0.0.1:{upstream.port}", rules_dir=RULES,
                              audio=AudioSettings(cache_dir=tmp_path / "v", workers=1))
    base = await run_proxy(settings, LiveRules(load_rules(RULES)))
    async with aiohttp.ClientSession() as s:
        with contextlib.suppress(TimeoutError):
            async with s.get(base + "/truncate/gone.mp3",
                             timeout=aiohttp.ClientTimeout(total=0.2)) as r:
                await r.read()
        # the job goes on; a later client gets the variant it made (the store asked once)
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            status, _, body = await get(s, base + "/truncate/gone.mp3")
            if status == 200 or asyncio.get_running_loop().time() > deadline:
                break
    assert status == 200
    assert len(body) < sources["mp3"].stat().st_size / 2  # the 5 s preview
    assert fetched == ["/truncate/gone.mp3"]


def test_a_damaged_layout_sidecar_means_a_miss_not_an_error(tmp_path):
    from proxy.audio.service import Countermeasures, _b_key
    from proxy.exchange import Action

    cm = Countermeasures(tmp_path / "v", 1 << 30, 1, 2, 1 << 30, tmp_path / "k")
    key = "ab" * 32
    made = cm.cache.new_tmp(".mp3")
    made.write_bytes(b"\xff\xfb\x90\x00" * 100)
    cm.cache.put(key, AudioFormat.MP3, made)
    other = cm.cache.new_tmp(".mp3")
    other.write_bytes(b"\xff\xfb\x90\x00" * 100)
    cm.cache.put(_b_key(key), AudioFormat.MP3, other)
    cm.cache.put_layout(key, '{"head": 1}')  # an older or damaged sidecar
    assert cm._cached(key, Action.WATERMARK, ()) is None
    assert cm._cached(key, Action.TRUNCATE, ()) is not None
