"""Forensic watermarks: A/B splices per client, read back after re-encoding and from an
excerpt, never found in unmarked audio; served with their own HTTP semantics; traced."""

from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from proxy.audio import codec, watermark
from proxy.audio.formats import AudioFormat
from proxy.audio.service import WATERMARK_BUCKET
from proxy.cli import main
from proxy.rules import LiveRules, load_rules
from proxy.settings import AudioSettings, EvidenceSettings

from .audio_tools import decode_errors, make_sources
from .conftest import proxy_settings, wait_for_records

RULES = Path(__file__).resolve().parent / "fixtures" / "countermeasures"
SECRET = b"a test secret of 32 bytes, fixed"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    """A 60 s track (encoded by ffmpeg) and its marked pair."""
    folder = tmp_path_factory.mktemp("wm")
    original = make_sources(folder, seconds=60.0, seed=5)["mp3"]
    track = hashlib.sha256(original.read_bytes()).hexdigest()
    a, b = folder / "a.mp3", folder / "b.mp3"
    layout = watermark.make_pair(original, AudioFormat.MP3, a, b, SECRET, track, 192000)
    return original, track, a.read_bytes(), b.read_bytes(), layout, folder


def splice(a: bytes, b: bytes, layout: watermark.Layout, mark: int) -> bytes:
    """The copy carrying `mark`, as the proxy sends it: A's or B's bytes, segment by segment."""
    return b"".join((a, b)[v][s:e] for v, s, e in layout.parts(watermark.bits_of(mark)))


def copy_for(pair, client: str) -> tuple[bytes, int]:
    _, track, a, b, layout, _ = pair
    mark = watermark.payload(SECRET, track, client, 1)
    return splice(a, b, layout, mark), mark


def traced(pair, path: Path) -> watermark.Trace:
    original, track, *_ = pair
    return watermark.detect(path, original, SECRET, track)


async def file_store(aiohttp_server, path: Path) -> str:
    """A store that answers every path with `path` (ETag, Range and HEAD included)."""

    async def store(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/{tail:.*}", store)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


def reencode(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True)
    return dst


def test_every_copy_is_a_valid_mp3_of_the_same_length(pair):
    original = pair[0]
    one, mark_one = copy_for(pair, "198.51.100.1")
    two, mark_two = copy_for(pair, "198.51.100.2")
    assert mark_one != mark_two
    assert len(one) == len(two) == pair[4].sizes[0]  # MP3: every copy the same length
    assert one != two
    folder = pair[5]
    (folder / "one.mp3").write_bytes(one)
    assert decode_errors(folder / "one.mp3") == ""
    assert codec.probe(folder / "one.mp3", AudioFormat.MP3).duration == pytest.approx(
        codec.probe(original, AudioFormat.MP3).duration, abs=0.05)


def test_the_payload_survives_reencoding_and_excerpts(pair):
    folder = pair[5]
    body, mark = copy_for(pair, "203.0.113.77")
    copy = folder / "copy.mp3"
    copy.write_bytes(body)
    lame = folder / "lame128.mp3"
    subprocess.run(["lame", "--quiet", "--cbr", "-b", "128", str(copy), str(lame)], check=True)
    aac = reencode(copy, folder / "aac.m4a", "-c:a", "aac", "-b:a", "128k")
    aac_back = reencode(aac, folder / "aac-back.mp3", "-c:a", "libmp3lame", "-b:a", "128k")
    excerpt = reencode(lame, folder / "excerpt.mp3", "-ss", "21.7", "-t", "30",
                       "-c:a", "libmp3lame", "-b:a", "128k")
    for suspect in (copy, lame, aac, aac_back, excerpt):
        found = traced(pair, suspect)
        assert found.marked, suspect.name
        assert found.payload == mark, (suspect.name, sum(
            x != y for x, y in zip(found.bits, watermark.bits_of(mark), strict=True)))
    assert traced(pair, excerpt).offset == pytest.approx(21.7, abs=0.05)


def test_unmarked_audio_matches_no_payload(pair):
    original, *_, folder = pair
    plain = folder / "plain128.mp3"
    subprocess.run(["lame", "--quiet", "--cbr", "-b", "128", str(original), str(plain)],
                   check=True)
    found = traced(pair, plain)
    assert not found.marked
    rng = random.Random(3)
    for _ in range(1000):
        candidate = watermark.bits_of(rng.getrandbits(64))
        assert sum(x != y for x, y in zip(found.bits, candidate, strict=True)) > 8


def test_the_mark_is_faint(pair):
    """Quality: the marked copy against the original, as a signal-to-noise ratio."""
    original, *_, folder = pair
    body, _ = copy_for(pair, "198.51.100.5")
    (folder / "q.mp3").write_bytes(body)
    x, _ = codec.decode(original)
    y, _ = codec.decode(folder / "q.mp3")
    n = min(len(x), len(y))
    snr = 10 * np.log10(np.sum(x[:n] ** 2) / np.sum((x[:n] - y[:n]) ** 2))
    assert snr > 20  # both MP3 encodes' own noise counts here too; the mark alone is 32 dB down


async def test_marked_copies_through_the_proxy_and_their_trace(
        aiohttp_server, run_proxy, tmp_path, capsys):
    original = make_sources(tmp_path / "src", seconds=40.0, seed=9)["mp3"]

    upstream = await file_store(aiohttp_server, original)
    key = tmp_path / "watermark.key"
    settings = proxy_settings(upstream, rules_dir=RULES,
                              audio=AudioSettings(cache_dir=tmp_path / "v", workers=1,
                                                  watermark_key=key),
                              evidence=EvidenceSettings(dir=tmp_path / "evidence"))
    base = await run_proxy(settings, LiveRules(load_rules(RULES)))
    bodies = {}
    for source in ("127.0.0.2", "127.0.0.3"):
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with aiohttp.ClientSession(connector=connector) as s:
            async with s.get(base + "/mark/track.mp3") as r:
                assert r.status == 200
                body = await r.read()
                etag = r.headers["ETag"]
            # two ranged reads of one client's copy stitch into that same copy
            half = len(body) // 2
            url = base + "/mark/track.mp3"
            async with s.get(url, headers={"Range": f"bytes=0-{half}"}) as r:
                first = await r.read()
            async with s.get(url, headers={"Range": f"bytes={half + 1}-"}) as r:
                assert r.headers["ETag"] == etag
                second = await r.read()
            assert first + second == body
            bodies[source] = body
    assert bodies["127.0.0.2"] != bodies["127.0.0.3"]
    assert len(bodies["127.0.0.2"]) == len(bodies["127.0.0.3"])
    assert original.read_bytes() not in bodies.values()
    await wait_for_records(tmp_path / "evidence", "watermark", 6)  # 2 clients, 3 GETs each
    suspect = tmp_path / "leak.mp3"
    suspect.write_bytes(bodies["127.0.0.3"])
    leak = reencode(suspect, tmp_path / "leak128.mp3", "-c:a", "libmp3lame", "-b:a", "128k")
    capsys.readouterr()
    assert main(["trace", str(leak), "--original", str(original), "--key", str(key),
                 "--evidence", str(tmp_path / "evidence")]) == 0
    out = capsys.readouterr().out
    # the leak is traced to the encounters that received it: 127.0.0.3's whole GET and its
    # two ranged reads of the same copy
    served = [line for line in out.splitlines() if line.startswith("served")]
    assert len(served) == 3
    assert all(" to 127.0.0.3 GET /mark/track.mp3 " in line for line in served)
    assert all(" variant=watermark " in line for line in served)
    assert "matches   3 in" in out


def test_trace_says_when_nothing_is_found(pair, tmp_path, capsys):
    original, *_ = pair
    key = tmp_path / "k"
    key.write_bytes(SECRET)
    plain = reencode(original, tmp_path / "plain.mp3", "-c:a", "libmp3lame", "-b:a", "128k")
    assert main(["trace", str(plain), "--original", str(original), "--key", str(key)]) == 3
    assert "not traced: no mark" in capsys.readouterr().out
    short = reencode(original, tmp_path / "short.mp3", "-t", "10")
    assert main(["trace", str(short), "--original", str(original), "--key", str(key)]) == 3
    assert "too short" in capsys.readouterr().out
    assert main(["trace", str(plain), "--original", str(original),
                 "--key", str(tmp_path / "missing")]) == 2


def test_a_truncated_preview_can_be_marked_too(pair, tmp_path):
    from proxy.audio.service import make_variant

    original, track, *_ = pair
    dst = tmp_path / "preview.mp3"
    layout = watermark.Layout.from_json(make_variant(
        "truncate", {"seconds": 40, "watermark": True}, str(original), str(dst), "mp3", 1, {},
        SECRET, track))
    a, b = dst.read_bytes(), Path(f"{dst}.b").read_bytes()
    mark = watermark.payload(SECRET, track, "192.0.2.44", 3)
    copy = tmp_path / "copy.mp3"
    copy.write_bytes(splice(a, b, layout, mark))
    assert codec.probe(copy, AudioFormat.MP3).duration == pytest.approx(40.0, abs=0.1)
    leak = reencode(copy, tmp_path / "leak.mp3", "-c:a", "libmp3lame", "-b:a", "128k")
    found = traced(pair, leak)  # traced against the store's original, as for any copy
    assert found.marked
    assert found.payload == mark


@pytest.mark.parametrize("ext", ["flac", "wav", "opus", "m4a"])
def test_flac_wav_opus_and_m4a_copies_are_marked_and_traced(tmp_path, ext):
    folder = tmp_path / ext
    original = make_sources(folder, seconds=40.0, seed=6)[ext]
    fmt = {"flac": AudioFormat.FLAC, "wav": AudioFormat.WAV, "opus": AudioFormat.OPUS,
           "m4a": AudioFormat.M4A}[ext]
    track = hashlib.sha256(original.read_bytes()).hexdigest()
    a, b = folder / f"a.{ext}", folder / f"b.{ext}"
    watermark.encode_pair(original, fmt, a, b, SECRET, track, 0)
    codec.write_tags(a, fmt, {"isrc": "GBXXX2600001"})  # tags move the frames: re-read them
    codec.write_tags(b, fmt, {"isrc": "GBXXX2600001"})
    layout = watermark.layout_of(a, b, fmt, track)
    data = (a.read_bytes(), b.read_bytes())
    mark = watermark.payload(SECRET, track, "198.51.100.23", 9)
    copy = folder / f"copy.{ext}"
    copy.write_bytes(splice(*data, layout, mark))
    if fmt is AudioFormat.FLAC:
        subprocess.run(["flac", "-t", "-s", str(copy)], check=True)  # every frame's CRC holds
    assert decode_errors(copy) == ""
    assert codec.probe(copy, fmt).duration == pytest.approx(40.0, abs=0.05)
    leak = reencode(copy, folder / "leak.mp3", "-c:a", "libmp3lame", "-b:a", "128k")
    for suspect in (copy, leak):
        found = watermark.detect(suspect, original, SECRET, track)
        assert found.marked, suspect.name
        assert found.payload == mark, suspect.name


async def test_flac_copies_through_the_proxy(aiohttp_server, run_proxy, tmp_path):
    original = make_sources(tmp_path / "src", seconds=30.0, seed=4)["flac"]

    upstream = await file_store(aiohttp_server, original)
    settings = proxy_settings(upstream, rules_dir=RULES,
                              audio=AudioSettings(cache_dir=tmp_path / "v", workers=1,
                                                  watermark_key=tmp_path / "k"))
    base = await run_proxy(settings, LiveRules(load_rules(RULES)))
    for n, source in enumerate(("127.0.0.4", "127.0.0.5")):
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with aiohttp.ClientSession(connector=connector) as s:
            async with s.get(base + "/mark/master.flac") as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "audio/flac"
                body = await r.read()
            async with s.get(base + "/mark/master.flac", headers={"Range": "bytes=1000-"}) as r:
                assert r.status == 206
                assert await r.read() == body[1000:]
        copy = tmp_path / f"copy{n}.flac"
        copy.write_bytes(body)
        check = await asyncio.create_subprocess_exec("flac", "-t", "-s", str(copy))
        assert await check.wait() == 0  # every frame's CRC holds in each client's copy
    assert (tmp_path / "copy0.flac").read_bytes() != (tmp_path / "copy1.flac").read_bytes()


@pytest.mark.parametrize(("ext", "content_type"), [("ogg", "audio/ogg; codecs=opus"),
                                                   ("m4a", "audio/mp4")])
async def test_vorbis_and_m4a_copies_through_the_proxy(aiohttp_server, run_proxy, tmp_path, ext,
                                                      content_type):
    """M4A copies are fragmented MP4 spliced by fragment; an Ogg Vorbis original's copies are
    Ogg Opus (the same container and MIME type: Vorbis packet layouts follow the signal)."""
    original = make_sources(tmp_path / "src", seconds=30.0, seed=5)[ext]

    upstream = await file_store(aiohttp_server, original)
    key = tmp_path / "k"
    settings = proxy_settings(upstream, rules_dir=RULES,
                              audio=AudioSettings(cache_dir=tmp_path / "v", workers=1,
                                                  watermark_key=key))
    base = await run_proxy(settings, LiveRules(load_rules(RULES)))
    track = hashlib.sha256(original.read_bytes()).hexdigest()
    for source in ("127.0.0.6", "127.0.0.7"):
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with aiohttp.ClientSession(connector=connector) as s, \
                s.get(f"{base}/mark/track.{ext}") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == content_type
            body = await r.read()
        copy = tmp_path / f"{source}.{ext}"
        copy.write_bytes(body)
        assert decode_errors(copy) == ""
        expected = watermark.payload(key.read_bytes(), track, source,
                                     int(time.time() // WATERMARK_BUCKET))
        leak = reencode(copy, tmp_path / f"{source}.mp3", "-c:a", "libmp3lame", "-b:a", "128k",
                        "-ar", "44100")
        for suspect in (copy, leak):
            found = watermark.detect(suspect, original, key.read_bytes(), track)
            assert found.marked, suspect.name
            assert found.payload == expected, suspect.name


def test_a_marked_decoy_is_traced_against_the_same_decoy(pair, tmp_path, capsys):
    from proxy.audio.service import make_variant, variant_seed

    original, track, *_ = pair
    dst = tmp_path / "decoy.mp3"
    layout = watermark.Layout.from_json(make_variant(
        "decoy", {"watermark": True}, str(original), str(dst), "mp3", variant_seed(track), {},
        SECRET, track))
    a, b = dst.read_bytes(), Path(f"{dst}.b").read_bytes()
    mark = watermark.payload(SECRET, track, "203.0.113.200", 5)
    copy = tmp_path / "copy.mp3"
    copy.write_bytes(splice(a, b, layout, mark))
    leak = reencode(copy, tmp_path / "leak.m4a", "-c:a", "aac", "-b:a", "128k")
    key = tmp_path / "key"
    key.write_bytes(SECRET)
    capsys.readouterr()
    assert main(["trace", str(leak), "--original", str(original), "--key", str(key),
                 "--decoy"]) == 0
    assert f"payload   {mark:016x}" in capsys.readouterr().out
    # read against the original itself, a decoy shows no mark: it is other music
    assert main(["trace", str(leak), "--original", str(original), "--key", str(key)]) == 3
