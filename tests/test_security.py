"""The red-team findings, each reproduced as the attacker sent it (raw sockets where a client
library would tidy the request up), on loopback only, every loop bounded.

One test (or table) per finding of docs/threat-model.md: an open forward proxy, dot-segment
paths past the rules, evidence forgeries, oversized request heads, a client address spoofed
behind a trusted proxy, evidence lost to kill -9, hostile rule files and reloads, and the small
leaks (transfer codings, late 413, Host injection, a lying health gauge, talkative errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from proxy.clientip import resolve_client
from proxy.evidence.chain import chain_files, seal
from proxy.evidence.verify import verify_dir
from proxy.inbound import Refused, parse_target, site_authorities
from proxy.rules import LiveRules, load_rules
from proxy.settings import EvidenceSettings

from .conftest import PASSTHROUGH_RULES as PASSTHROUGH
from .conftest import (
    ROOT,
    ProxyProcess,
    free_port,
    metric_sum,
    proxy_settings,
    wait_for_port,
)
from .test_evidence import exchange, write_log

EVIDENCE_RULES = ROOT / "tests" / "fixtures" / "evidence-rules"
TOKEN = "s3cret-admin-token-for-tests"


async def raw(port: int, data: bytes, within: float = 10.0) -> bytes:
    """Send `data` as it is; everything the proxy answers until it closes (or `within`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        got = b""
        async with asyncio.timeout(within):
            while piece := await reader.read(65536):
                got += piece
                if b"Connection: close" not in data and _complete(got):
                    break
        return got
    finally:
        writer.close()


def _complete(got: bytes) -> bool:
    head, sep, body = got.partition(b"\r\n\r\n")
    m = re.search(rb"\r\nContent-Length: (\d+)", head, re.I)
    return bool(sep) and m is not None and len(body) >= int(m[1])


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


class Recorder:
    """A store on loopback that records the raw target of every request it is asked."""

    url = ""  # set once it listens

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.headers: list[CIMultiDict[str]] = []
        self.master = hashlib.sha256(b"master").digest() * 4096  # 128 KiB, "the master"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if "X-Request-Id" in request.headers:  # a client's request, not the proxy's own
            self.seen.append(request.raw_path)  # robots.txt fetch or health probe
            self.headers.append(CIMultiDict(request.headers))
        if request.path.endswith(".mp3"):
            return web.Response(body=self.master, content_type="audio/mpeg")
        return web.Response(text=f"store page {request.raw_path}")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def store(aiohttp_server):
    recorder = Recorder()
    server = await aiohttp_server(recorder.app())
    recorder.url = str(server.make_url("")).rstrip("/")
    return recorder


# ---- 1. no open proxy ------------------------------------------------------------------------

async def test_the_proxy_never_connects_anywhere_but_the_store(run_proxy, store,
                                                               aiohttp_server):
    """`curl -x PROXY http://127.0.0.2:PORT/secret.txt` and `//127.0.0.1:PORT/metrics` reached
    an internal server and the admin listener: the request target named the host."""
    secret = Recorder()
    inside = await aiohttp_server(secret.app(), host="127.0.0.2")
    proxy = await run_proxy(proxy_settings(store.url))
    port = int(proxy.rsplit(":", 1)[1])
    inner = f"127.0.0.2:{inside.port}"
    absolute = await raw(port, f"GET http://{inner}/secret.txt HTTP/1.1\r\nHost: {inner}\r\n"
                               "Connection: close\r\n\r\n".encode())
    assert status_of(absolute) == 400
    assert b"not a forward proxy" in absolute
    doubled = await raw(port, f"GET //{inner}/secret.txt HTTP/1.1\r\nHost: x\r\n"
                              "Connection: close\r\n\r\n".encode())
    assert status_of(doubled) == 200
    assert secret.seen == []  # the internal server was never asked
    assert store.seen == [f"/{inner}/secret.txt"]  # '//' is one '/', asked of the store
    # absolute-form naming the store itself is served from the store, as origin-form
    own = store.url.removeprefix("http://")
    mine = await raw(port, f"GET http://{own}/page?x=1 HTTP/1.1\r\nHost: {own}\r\n"
                           "Connection: close\r\n\r\n".encode())
    assert status_of(mine) == 200
    assert store.seen[-1] == "/page?x=1"


def test_only_the_sites_own_authorities_are_accepted_in_absolute_form():
    names = site_authorities("http://127.0.0.1:8080", "https://Music.Example")
    assert names == {"127.0.0.1:8080", "music.example:443", "music.example"}
    assert parse_target("http://MUSIC.example/a", names).upstream == "/a"
    assert parse_target("https://music.example:443?q", names).upstream == "/?q"
    for other in ("http://music.example.evil/a", "http://user@music.example/a",
                  "http://127.0.0.1:9180/metrics", "ftp://music.example/a", "*"):
        with pytest.raises(Refused):
            parse_target(other, names)


# ---- 2. one path for rules, cache and store ----------------------------------------------------

@pytest.mark.parametrize(("raw_target", "path", "wire"), [
    ("/stream/track1.mp3", "/stream/track1.mp3", "/stream/track1.mp3"),
    ("/.well-known/../stream/track1.mp3", "/stream/track1.mp3", "/stream/track1.mp3"),
    ("/.well-known/%2e%2E/stream/track1.mp3", "/stream/track1.mp3", "/stream/track1.mp3"),
    ("/x/..;/stream/track1.mp3", "/stream/track1.mp3", "/stream/track1.mp3"),
    ("/stream/./track1.mp3;jsessionid=1", "/stream/track1.mp3", "/stream/track1.mp3"),
    ("//stream///track1.mp3", "/stream/track1.mp3", "/stream/track1.mp3"),
    ("/stream/%74rack1.mp3", "/stream/track1.mp3", "/stream/track1.mp3"),
    ("/album/a%20b%e2%99%aa/", "/album/a b\u266a/", "/album/a%20b%E2%99%AA/"),
    ("/album/x/.", "/album/x/", "/album/x/"),
    ("/album/x/y/..?q=%2F", "/album/x/", "/album/x/"),
    ("/a|b", "/a|b", "/a%7Cb"),
])
def test_every_spelling_of_a_path_is_one_path(raw_target, path, wire):
    target = parse_target(raw_target, frozenset())
    assert (target.path, target.wire) == (path, wire)


@pytest.mark.parametrize(("raw_target", "reason"), [
    ("/../stream/track1.mp3", "the path climbs above the root ('..')"),
    ("/a/../../b", "the path climbs above the root ('..')"),
    ("/.well-known%2F..%2Fstream/track1.mp3", "an encoded '/' in the path"),
    ("/stream%5ctrack1.mp3", "an encoded '\\' in the path"),
    ("/a%00.mp3", "an encoded NUL in the path"),
    ("/a%zz", "a malformed percent-encoding in the path"),
    ("/a%4", "a malformed percent-encoding in the path"),
    ("/a\\..\\stream", "a backslash or control character in the path"),
    ("/a%ff.mp3", "the path is not UTF-8 once decoded"),
])
def test_a_path_that_cannot_be_normalised_is_refused(raw_target, reason):
    with pytest.raises(Refused) as refused:
        parse_target(raw_target, frozenset())
    assert (refused.value.status, refused.value.reason) == (400, reason)


async def test_an_ai_crawler_never_gets_a_master_through_a_dot_segment(run_proxy, store):
    """`curl --path-as-is -A GPTBot PROXY/.well-known/../stream/track1.mp3` was the master:
    the rules saw a declaration, the store resolved the track."""
    rules = LiveRules(load_rules(ROOT / "rules"))
    proxy = await run_proxy(proxy_settings(store.url, rules_dir=ROOT / "rules",
                                           verdict_header=True), rules)
    port = int(proxy.rsplit(":", 1)[1])
    verdicts = set()
    for spelling in ("/.well-known/../stream/track1.mp3", "/.well-known/%2e%2e/stream/track1.mp3",
                     "/x/..;/stream/track1.mp3", "//stream/track1.mp3;x",
                     "/stream/%74rack1.mp3"):
        answer = await raw(port, f"GET {spelling} HTTP/1.1\r\nHost: s\r\nUser-Agent: "
                                 "GPTBot/1.2\r\nConnection: close\r\n\r\n".encode(), within=60)
        body = answer.partition(b"\r\n\r\n")[2]
        assert store.master not in body, spelling
        verdicts.add(re.search(rb"X-SonicShield-Verdict: ([^\r]*)", answer)[1])
    assert len(verdicts) == 1
    assert b"ai-crawler-audio" in verdicts.pop()
    # the store is only ever asked for the one spelling
    assert set(store.seen) <= {"/stream/track1.mp3"}


# ---- 3. evidence forgeries ---------------------------------------------------------------------

def _rehash(folder: Path, keep: Callable[[dict], bool]) -> str:
    """Rewrite the chain keeping only the records `keep` accepts, with every hash, seq and
    prev recomputed (what a forger without the key can do); the new last hash."""
    prev, seq = None, 0
    for f in chain_files(folder)["main"]:
        out = []
        for line in f.path.read_bytes().splitlines():
            record = json.loads(line)
            if not keep(record):
                continue
            del record["h"]
            record["seq"] = seq
            sealed, prev = seal(record, prev if prev is not None else record["prev"])
            out.append(sealed)
            seq += 1
        f.path.write_bytes(b"".join(out))
    return str(prev)


async def test_a_chain_rebuilt_without_its_checkpoints_and_head_fails(tmp_path):
    folder = tmp_path / "evidence"
    await write_log(folder, [exchange(i) for i in range(60)], checkpoint_interval=0.0001)
    key = EvidenceSettings(dir=folder).key.read_bytes()
    (check,) = verify_dir(folder, key)
    assert check.ok, check.problem
    assert check.checkpoints >= 3
    _rehash(folder, lambda r: r["kind"] not in ("checkpoint", "close"))
    (folder / "main.head").unlink()
    (check,) = verify_dir(folder, key)
    assert not check.ok
    assert check.problem.startswith("no main.head: the chain's end is not signed")
    (weak,) = verify_dir(folder, key, weak=True)
    assert weak.ok
    assert weak.notes[0].startswith("weak check: no main.head")


async def test_a_chain_without_the_checkpoints_its_interval_promises_fails(tmp_path):
    """Each open record states the checkpoint interval; a stretch longer than it allows
    with no signed record is checkpoints removed, even with a head that checks."""
    folder = tmp_path / "evidence"
    await write_log(folder, [exchange(i) for i in range(30)], checkpoint_interval=60.0)
    key = EvidenceSettings(dir=folder).key.read_bytes()
    files = chain_files(folder)["main"]
    assert json.loads(files[0].path.read_bytes().splitlines()[0])["checkpoint_interval"] == 60.0
    # the same records two hours apart: no checkpoint in between, as if they were removed
    path = files[-1].path
    lines = path.read_bytes().splitlines()
    i = next(n for n, line in enumerate(lines) if b'"kind":"exchange"' in line)
    record = json.loads(lines[i])
    record["t"] = "2099-01-01T00:00:00.000000Z"
    del record["h"]
    lines[i] = seal(record, record["prev"])[0].rstrip(b"\n")
    path.write_bytes(b"\n".join(lines) + b"\n")
    (check,) = verify_dir(folder, key)
    # the edit itself breaks the next record's prev; what matters is that the time check
    # comes first: the record two hours late is named
    assert re.search(r"comes after no signed checkpoint since .*, though the chain promises "
                     r"one every 60 s: checkpoints were removed", check.problem), check.problem


async def test_records_forged_after_the_signed_head_fail(tmp_path):
    folder = tmp_path / "evidence"
    await write_log(folder, [exchange(i) for i in range(20)])
    key = EvidenceSettings(dir=folder).key.read_bytes()
    last = chain_files(folder)["main"][-1].path
    tail = json.loads(last.read_bytes().splitlines()[-1])
    forged, h = [], tail["h"]
    for seq in (tail["seq"] + 1, tail["seq"] + 2):
        line, h = seal({"seq": seq, "t": tail["t"], "kind": "exchange", "id": "forged"}, h)
        forged.append(line)
    last.write_bytes(last.read_bytes() + b"".join(forged))
    (check,) = verify_dir(folder, key)
    assert check.problem == (
        f"records {tail['seq'] + 1} to {tail['seq'] + 2} follow the record the signed head "
        f"names ({tail['seq']}): they were appended by someone else, or the log was copied "
        "while its writer was between a write and its head (then use --weak)")


async def test_an_edit_after_the_last_checkpoint_with_the_head_deleted_fails(tmp_path, capsys):
    from proxy.cli import main

    folder = tmp_path / "evidence"
    await write_log(folder, [exchange(i) for i in range(20)])
    last = chain_files(folder)["main"][-1].path
    lines = last.read_bytes().splitlines(keepends=True)
    last.write_bytes(b"".join(lines[:-4]))  # the tail cut, the head that would tell deleted
    (folder / "main.head").unlink()
    assert main(["evidence", "verify", "--dir", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out
    assert "first break: no main.head" in out
    assert main(["evidence", "verify", "--dir", str(folder), "--weak"]) == 0


async def test_the_chain_key_is_kept_out_of_the_log_folder(tmp_path):
    from proxy.settings import load_settings

    config = tmp_path / "etc" / "sonicshield.yaml"
    config.parent.mkdir()
    config.write_text("upstream: {url: 'http://127.0.0.1:1'}\nevidence: {dir: /var/tmp/ev}\n")
    assert load_settings(config).evidence.key == tmp_path / "etc" / "evidence-chain.key"
    folder = tmp_path / "evidence"
    await write_log(folder, [exchange(1)])
    assert not (folder / "chain.key").exists()
    assert (tmp_path / "evidence-chain.key").stat().st_mode & 0o077 == 0


def test_a_key_inside_the_log_folder_is_warned_about(tmp_path, caplog):
    from proxy.evidence.writer import ChainWriter

    folder = tmp_path / "evidence"
    writer = ChainWriter(EvidenceSettings(dir=folder, key_file=folder / "chain.key"), "main",
                         None)
    writer.take_chain()
    writer.release()
    assert [r.msg for r in caplog.records if r.levelname == "WARNING"] == [
        "evidence-key-in-log-folder"]


# ---- 4. bounded request heads ------------------------------------------------------------------

def _big_head(headers: int = 98, size: int = 8000) -> bytes:
    return (b"GET /page HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * size) for i in range(headers)))


async def test_a_head_over_the_limit_gets_431_and_the_store_never_hears(run_proxy, store):
    proxy = await run_proxy(proxy_settings(store.url))
    port = int(proxy.rsplit(":", 1)[1])
    # 98 headers of 8,000 bytes: under every per-line limit, 790 KB in all
    answer = await raw(port, _big_head() + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Connection: close" in answer
    # just under the limit is served; a body after a small head is not counted as head
    fits = await raw(port, _big_head(3, 8000) + b"Connection: close\r\n\r\n")
    assert status_of(fits) == 200
    body = b"b" * 200_000
    upload = await raw(port, b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (len(body), body))
    assert status_of(upload) == 200
    assert store.seen == ["/page", "/up"]


def test_memory_returns_after_a_burst_of_huge_unfinished_heads(spawn_proxy, upstream_process):
    """300 connections each sending 790 KB of head and never finishing it took the proxy
    from 138 MB to 588 MB, and kept it there after they closed."""
    proxy = spawn_proxy(upstream_process)
    baseline = proxy.rss()
    chunk = _big_head()  # no blank line: the head never ends
    socks = []
    refused = 0
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        socks.append(s)
        try:
            s.sendall(chunk)
        except OSError:  # the proxy closed it once the head passed the limit
            refused += 1
    peak = proxy.rss()
    for s in socks:
        with contextlib.suppress(OSError):
            refused += s.recv(64).startswith(b"HTTP/1.1 431")
        s.close()
    deadline = time.monotonic() + 20
    while proxy.rss() > baseline + 16 << 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    after = proxy.rss()
    assert refused >= 300
    assert peak < baseline + (64 << 20), (baseline, peak)  # was +450 MB
    assert after < baseline + (16 << 20), (baseline, after)
    assert proxy.log.count('"status":431') == 300


# ---- 5. X-Forwarded-For over several lines -----------------------------------------------------

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(("lines", "client"), [
    (["203.0.113.7"], "203.0.113.7"),
    (["6.6.6.6", "203.0.113.7"], "203.0.113.7"),  # HAProxy's own line after the client's
    (["6.6.6.6, 203.0.113.7"], "203.0.113.7"),
    (["6.6.6.6", "203.0.113.7, 10.0.0.2"], "203.0.113.7"),  # a trusted hop skipped
    (["203.0.113.7", "garbage"], "10.0.0.1"),  # garbage: stop at the last trusted address
    ([], "10.0.0.1"),
])
def test_the_client_is_the_rightmost_untrusted_hop_of_every_line(lines, client):
    headers = CIMultiDict([("Host", "s")] + [("X-Forwarded-For", v) for v in lines])
    assert resolve_client("10.0.0.1", headers, TRUSTED, "http").ip == client


async def test_a_client_cannot_spoof_its_address_behind_haproxy(run_proxy, store, caplog):
    caplog.set_level(logging.INFO)
    proxy = await run_proxy(proxy_settings(
        store.url, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)))
    port = int(proxy.rsplit(":", 1)[1])
    answer = await raw(port, b"GET /p HTTP/1.1\r\nHost: s\r\nX-Forwarded-For: 6.6.6.6\r\n"
                             b"X-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 200
    sent = store.headers[-1]
    assert sent["X-Forwarded-For"] == "6.6.6.6, 203.0.113.7, 127.0.0.1"  # no line dropped
    assert sent["X-Real-IP"] == "203.0.113.7"
    access = [r.fields for r in caplog.records if r.msg == "access"]
    assert [a["client"] for a in access] == ["203.0.113.7"]


# ---- 6. kill -9 and the evidence it loses ------------------------------------------------------

async def _hammer(url: str, seconds: float, answered: dict[str, float]) -> None:
    """Blocked requests (each one evidence) from 8 clients for `seconds`, at most 20,000:
    the request id of every answer and when it came."""
    deadline = time.monotonic() + seconds

    async def one(s: aiohttp.ClientSession, n: int) -> None:
        while time.monotonic() < deadline and n < 20_000:
            n += 8
            try:
                async with s.get(f"{url}/blocked/{n}") as r:
                    m = re.search(r"(?i)request ([0-9a-f]{16})", await r.text())
            except aiohttp.ClientError:
                return  # the proxy is gone
            if m:
                answered[m[1]] = time.time()

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(one(s, i) for i in range(8)))


def test_kill_9_leaves_a_gap_record_that_bounds_what_was_lost(spawn_proxy, upstream_process,
                                                               tmp_path):
    folder, key_file = tmp_path / "evidence", tmp_path / "chain.key"
    extra = f"evidence: {{dir: {folder}, key_file: {key_file}}}\n"
    first = spawn_proxy(upstream_process, rules_dir=EVIDENCE_RULES, extra=extra)
    answered: dict[str, float] = {}

    async def load_then_kill() -> float:
        task = asyncio.create_task(_hammer(first.url, 10.0, answered))
        while len(answered) < 500:  # polled, bounded by the hammer's own deadline
            if task.done():
                break
            await asyncio.sleep(0.01)
        first.proc.send_signal(signal.SIGKILL)  # mid-flow, with rows queued
        killed = time.time()
        await task
        return killed

    killed = asyncio.run(load_then_kill())
    first.kill()
    assert len(answered) >= 500
    second = spawn_proxy(upstream_process, rules_dir=EVIDENCE_RULES, extra=extra)
    second.wait_for_log('"event":"listening"')
    assert second.stop() == 0
    (check,) = verify_dir(folder, key_file.read_bytes())
    assert check.ok, check.problem
    gaps = [g for g in check.gaps if "records may be missing after record" in g]
    assert len(gaps) == 1, check.gaps
    records = [json.loads(line) for f in chain_files(folder)["main"]
               for line in f.path.read_bytes().splitlines()]
    gap = next(r for r in records if r["kind"] == "gap")
    written = {r["id"] for r in records if r["kind"] == "exchange"}
    missing = {i: t for i, t in answered.items() if i not in written}
    since = datetime.fromisoformat(gap["from"]).timestamp()
    # what is missing was all answered in the loss window: after the last record that landed
    # (less the 0.1 s batch interval and a request's time), before the kill
    assert all(since - 0.5 <= t <= killed + 0.5 for t in missing.values()), (
        since, killed, sorted(missing.values())[:3])
    assert gap["after"] == max(r["seq"] for r in records if r["seq"] < gap["seq"] and
                               r["kind"] != "open")


# ---- 7. hostile rule files, and reloads that keep the proxy serving ----------------------------

DEEP = "version: 1\nrules:\n  - name: deep\n    match: " + "{a: " * 350 + "1" + "}" * 350 + "\n"
HUGE_INT = "version: 1\nrules:\n  - name: big\n    match: {asn: " + "9" * 5001 + "}\n"


@pytest.mark.parametrize(("text", "error"), [
    (DEEP, "rules/bad.yaml:4:253: nested more than 64 levels deep"),
    (HUGE_INT, "rules/bad.yaml:4:18: an integer with too many digits"),
])
def test_deep_and_huge_rule_files_get_a_position_and_exit_2(tmp_path, text, error, capsys):
    from proxy.cli import main

    rules = tmp_path / "rules"
    shutil.copytree(PASSTHROUGH, rules)
    (rules / "bad.yaml").write_text(text)
    assert main(["check", str(rules)]) == 2
    err = capsys.readouterr().err
    assert error in err, err
    config = tmp_path / "sonicshield.yaml"
    config.write_text(f"upstream: {{url: 'http://127.0.0.1:1'}}\nrules_dir: {rules}\n")
    run = subprocess.run([sys.executable, "-m", "proxy", "run", "--config", str(config)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert error in run.stderr


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_fifo_or_a_device_as_rights_yaml_is_refused_at_once(tmp_path, kind, capsys):
    from proxy.cli import main

    rules = tmp_path / "rules"
    shutil.copytree(PASSTHROUGH, rules)
    if kind == "fifo":
        os.mkfifo(rules / "rights.yaml")
    else:
        (rules / "rights.yaml").symlink_to("/dev/zero")
    assert main(["check", str(rules)]) == 2  # returns at all: it used to wait, or fill memory
    assert ("rules/rights.yaml:1:1: not a regular file (a FIFO, device or socket)"
            in capsys.readouterr().err)


def test_a_reload_compiles_off_the_event_loop_and_bad_files_are_counted(
        spawn_proxy, upstream_process, tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(PASSTHROUGH, rules)
    proxy = spawn_proxy(upstream_process, admin=True, admin_token=TOKEN, rules_dir=rules)
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # a valid rule file of 80,000 globs (about 1 MB): seconds of compiling
    globs = ", ".join(f"/g{i}/*" for i in range(80_000))
    (rules / "50-many.yaml").write_text("version: 1\nrules:\n  - name: many\n"
                                        f"    match: {{path: [{globs}]}}\n    action: block\n")
    assert (rules / "50-many.yaml").stat().st_size < 1 << 20

    async def reload_while_serving() -> int:
        answered = 0
        async with aiohttp.ClientSession() as s:
            proxy.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 120
            while proxy.log.count('"event":"rules-reloaded"') == 0:
                assert time.monotonic() < deadline, proxy.log
                async with s.get(proxy.url + "/echo") as r:
                    answered += r.status == 200
            async with s.get(proxy.url + "/g7/a.mp3") as r:
                assert r.status == 403  # the new rules hold
            for text in (DEEP, HUGE_INT):
                (rules / "50-many.yaml").write_text(text)
                async with s.post(admin + "/rules/reload", headers=auth) as r:
                    assert r.status == 422
                    assert "rules/50-many.yaml:4:" in (await r.json())["errors"][0]
            proxy.proc.send_signal(signal.SIGHUP)
            proxy.wait_for_log('"event":"rules-reload-failed"', count=3)
            async with s.get(admin + "/metrics") as r:
                failed = metric_sum(await r.text(), "sonicshield_rule_reloads_total",
                                    result="failed")
            assert failed == 3
            async with s.get(admin + "/healthz") as r:
                assert r.status == 200
        return answered

    answered = asyncio.run(reload_while_serving())
    assert answered >= 3  # the proxy served while the big rule set compiled
    assert "Traceback" not in proxy.log


# ---- 8. the small leaks ------------------------------------------------------------------------

async def test_framing_host_and_body_limits_are_decided_before_the_store(run_proxy, store):
    proxy = await run_proxy(proxy_settings(store.url))
    port = int(proxy.rsplit(":", 1)[1])
    cases = {
        b"POST /up HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n": 501,
        b"POST /up HTTP/1.1\r\nHost: s\r\nContent-Length: 2000000000000\r\n\r\n": 413,
        b'GET /p HTTP/1.1\r\nHost: a";for=6.6.6.6;host="b\r\nConnection: close\r\n\r\n': 400,
        b"GET /p HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n": 400,
        b"GET /p HTTP/1.1\r\nConnection: close\r\n\r\n": 400,
    }
    for request, status in cases.items():
        answer = await raw(port, request)
        assert status_of(answer) == status, (request, answer[:200])
    assert store.seen == []  # none of them reached the store
    ok = await raw(port, b"GET /p HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n")
    assert status_of(ok) == 200
    assert 'host="[::1]:8080"' in store.headers[-1]["Forwarded"]


async def test_error_pages_say_what_a_visitor_needs_and_nothing_of_the_machine(run_proxy,
                                                                                 caplog):
    caplog.set_level(logging.WARNING)
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = await run_proxy(proxy_settings(dead))
    async with aiohttp.ClientSession() as s, s.get(proxy + "/x") as r:
        page = await r.text()
        assert r.status == 502
        assert r.headers["Server"] == "SonicShield"
    assert dead.removeprefix("http://") not in page
    assert "Errno" not in page
    assert re.search(r"Request [0-9a-f]{16}", page)
    failed = [r.fields for r in caplog.records if r.msg == "upstream-failed"]
    assert failed
    assert dead.rsplit(":", 1)[1] in failed[0]["detail"]


def test_upstream_up_follows_the_health_probe_with_no_traffic(tmp_path, request):
    port, listen, admin_port = free_port(), free_port(), free_port()
    proxy = ProxyProcess(tmp_path, f"listen: 127.0.0.1:{listen}\nupstream: {{url: "
                         f"'http://127.0.0.1:{port}', health_interval: 0.2}}\nrules_dir: "
                         f"{PASSTHROUGH}\nadmin: {{listen: '127.0.0.1:{admin_port}'}}\n",
                         listen, admin_port)
    request.addfinalizer(proxy.kill)

    def gauge() -> float:
        async def read() -> float:
            async with aiohttp.ClientSession() as s, s.get(
                    f"http://127.0.0.1:{proxy.admin_port}/metrics") as r:
                return metric_sum(await r.text(), "sonicshield_upstream_up")
        return asyncio.run(read())

    def wait_for(value: float) -> None:
        deadline = time.monotonic() + 20
        while gauge() != value:
            assert time.monotonic() < deadline, f"sonicshield_upstream_up never became {value}"
            time.sleep(0.1)

    wait_for(0.0)  # the store is down and nobody asked
    store = subprocess.Popen([sys.executable, "-m", "tests.upstream", str(port)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, proc=store)
        wait_for(1.0)  # it came back, still with no request through the proxy
    finally:
        store.terminate()
        store.wait(10)
    wait_for(0.0)  # and went away again
