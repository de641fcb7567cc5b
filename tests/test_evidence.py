"""The evidence log: what the writer records, and verify finding every kind of tampering.

Logs here are written by the real writer (proxy/evidence/writer.py) from exchanges built in the
test, then changed the way someone covering their tracks would: a byte edited, a record
deleted, two swapped, the tail cut, two files spliced. Each time verify must name the first
bad record, by file and line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from proxy.cli import main
from proxy.evidence.chain import chain_files, seal
from proxy.evidence.report import build_report, render
from proxy.evidence.verify import verify_dir
from proxy.evidence.writer import Batch, ChainWriter, EvidenceError, EvidenceLog, _row
from proxy.exchange import Action, Client, ContentKind, Exchange, Signals, Verdict
from proxy.metrics import Metrics
from proxy.rights import Rights
from proxy.robots import build_canonical
from proxy.rules import load_rules
from proxy.settings import EvidenceSettings

ROBOTS = build_canonical("User-agent: *\nDisallow: /cart\n", ["GPTBot"])
GPTBOT = "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)"


def exchange(i: int, *, path: str = "", action: Action = Action.BLOCK, ip: str = "198.51.100.7",
             ua: str = GPTBOT, agent: str = "GPTBot", status: int = 403) -> Exchange:
    ex = Exchange(id=f"x{i:05d}", client=Client(ip, ip, False, "http", "store.example"),
                  method="GET", path=path or f"/stream/track-{i % 7}.mp3", query="")
    ex.signals = Signals(content=ContentKind.AUDIO, ua=ua, ua_class="ai-crawler", agent=agent,
                         operator="OpenAI" if agent else "", purpose="training")
    ex.verdict = Verdict(action, "rules/20-ai-crawlers.yaml:10 ai-crawler-audio", "3f9a1c")
    ex.status, ex.bytes_out = status, 120
    return ex


def settings(folder: Path, **changes: object) -> EvidenceSettings:
    base = {"dir": folder, "rotate_bytes": 1 << 16, "allowed_sample": 0.0,
            "checkpoint_interval": 3600.0, "fsync": "never"}
    return EvidenceSettings(**{**base, **changes})  # type: ignore[arg-type]


async def write_log(folder: Path, exchanges: list[Exchange], **changes: object) -> EvidenceLog:
    log = EvidenceLog(settings(folder, **changes), "main", Metrics(CollectorRegistry()))
    await log.start()
    for i, ex in enumerate(exchanges, 1):
        log.submit(ex, ROBOTS, None, trapped=False)
        if i % 20 == 0:  # batches as the running writer makes them
            await log.flush()
    await log.aclose()
    return log


def problem(folder: Path, key: bytes | None = None) -> str:
    (check,) = verify_dir(folder, key)
    return check.problem


@pytest.fixture
async def log_dir(tmp_path: Path) -> Path:
    """A log of 300 blocked requests over several files (the chain crosses files)."""
    folder = tmp_path / "evidence"
    await write_log(folder, [exchange(i) for i in range(300)])
    files = chain_files(folder)["main"]
    assert len(files) >= 3, "the test needs a chain across files"
    (check,) = verify_dir(folder, settings(folder).key.read_bytes())
    assert check.ok
    assert check.records == len(
        [line for f in files for line in f.path.read_bytes().splitlines()])
    return folder


def middle(folder: Path) -> tuple[Path, list[bytes], int]:
    """The middle file of the chain, its lines, and a line index in its middle."""
    files = chain_files(folder)["main"]
    path = files[len(files) // 2].path
    lines = path.read_bytes().splitlines(keepends=True)
    return path, lines, len(lines) // 2


def test_an_edited_byte_is_named(log_dir):
    path, lines, i = middle(log_dir)
    lines[i] = lines[i].replace(b"198.51.100.7", b"198.51.100.8", 1)
    path.write_bytes(b"".join(lines))
    assert problem(log_dir) == (f"{path.name}:{i + 1}: its content does not match its hash "
                                "(the record was edited)")


def test_a_deleted_record_is_named(log_dir):
    path, lines, i = middle(log_dir)
    seq = json.loads(lines[i])["seq"]
    del lines[i]
    path.write_bytes(b"".join(lines))
    assert problem(log_dir) == (f"{path.name}:{i + 1}: expected record {seq}, found {seq + 1}: "
                                f"record {seq} is missing (deleted, or records were reordered)")


def test_two_swapped_records_are_named(log_dir):
    path, lines, i = middle(log_dir)
    seq = json.loads(lines[i])["seq"]
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    path.write_bytes(b"".join(lines))
    assert problem(log_dir).startswith(
        f"{path.name}:{i + 1}: expected record {seq}, found {seq + 1}")


@pytest.mark.parametrize("cut", ["whole-records", "mid-record", "whole-file"])
def test_a_cut_tail_is_seen(log_dir, cut):
    files = chain_files(log_dir)["main"]
    last = files[-1].path
    lines = last.read_bytes().splitlines(keepends=True)
    head = json.loads((log_dir / "main.head").read_text())["seq"]
    if cut == "whole-records":
        last.write_bytes(b"".join(lines[:-3]))
        end = head - 3
    elif cut == "mid-record":
        last.write_bytes(b"".join(lines[:-3]) + lines[-3][:40])
        end = head - 3
    else:
        end = json.loads(files[-2].path.read_bytes().splitlines()[-1])["seq"]
        last.unlink()
    assert problem(log_dir) == (f"main.head names record {head}, the log ends at record {end}: "
                                f"records {end + 1} to {head} were cut off the end")


def test_two_files_spliced_together_are_seen(log_dir):
    files = chain_files(log_dir)["main"]
    first, second = files[0].path, files[1].path
    first.write_bytes(first.read_bytes() + second.read_bytes())
    second.unlink()
    lines = first.read_bytes().splitlines()
    at = next(i for i, line in enumerate(lines) if b'"kind":"open"' in line and i > 0)
    assert problem(log_dir) == (f"{first.name}:{at + 1}: an 'open' record inside a file: two "
                                "files were spliced together")


async def test_records_spliced_in_from_another_log_are_seen(log_dir, tmp_path):
    other = tmp_path / "other"
    await write_log(other, [exchange(i, ip="203.0.113.9") for i in range(300)])
    path, lines, i = middle(log_dir)
    theirs = (other / path.name).read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:i] + theirs[i:]))
    seq = json.loads(lines[i])["seq"]
    assert problem(log_dir) == (
        f"{path.name}:{i + 1}: record {seq} does not follow record {seq - 1} (its prev hash "
        "differs): a record before it was replaced, or records from elsewhere were spliced in")


def test_a_rebuilt_chain_is_caught_by_the_key(log_dir):
    """A forger edits a record and recomputes every hash after it: the chain is whole again,
    but the signed checkpoints and head give it away to whoever holds the key."""
    files = chain_files(log_dir)["main"]
    prev = None
    for f in files:
        out = []
        for line in f.path.read_bytes().splitlines():
            record = json.loads(line)
            del record["h"]
            if record.get("id") == "x00010":
                record["client"]["ip"] = "192.0.2.1"
            sealed, h = seal(record, prev if prev is not None else record["prev"])
            out.append(sealed)
            prev = h
        f.path.write_bytes(b"".join(out))
    head = json.loads((log_dir / "main.head").read_text())
    head["h"] = prev
    (log_dir / "main.head").write_text(json.dumps(head))
    assert problem(log_dir, key=None) == ""  # without the key the rebuilt chain looks whole
    key = settings(log_dir).key.read_bytes()
    assert re.fullmatch(r"main-\d{12}-\d{8}\.jsonl:\d+: checkpoint \d+'s signature is wrong: "
                        r"the chain up to it was rebuilt by someone without the key",
                        problem(log_dir, key))


async def test_a_record_torn_by_a_crash_is_accounted_for(log_dir):
    last = chain_files(log_dir)["main"][-1].path
    with last.open("ab") as f:
        f.write(b'{"seq":301,"t":"2026-11-22T07:00:00.000000Z","kind":"exch')
    # the writer starts again after the crash: its first file names the torn record
    await write_log(log_dir, [exchange(i) for i in range(300, 310)])
    (check,) = verify_dir(log_dir, settings(log_dir).key.read_bytes())
    assert check.ok, check.problem
    # ... so a torn record edited afterwards is not passed off as the crash's
    with last.open("ab") as f:
        f.write(b"xx")
    assert problem(log_dir).startswith(f"{last.name}: ends in an incomplete record")


async def test_a_restarted_writer_continues_the_chain(log_dir):
    before = chain_files(log_dir)["main"][-1].path.name
    await write_log(log_dir, [exchange(i) for i in range(5)])
    (check,) = verify_dir(log_dir, settings(log_dir).key.read_bytes())
    assert check.ok, check.problem
    new = [json.loads(line) for line in chain_files(log_dir)["main"][-1].path.read_bytes()
           .splitlines()]
    assert [r["kind"] for r in new] == ["open", "declarations", *["exchange"] * 5,
                                        "checkpoint", "close"]
    assert new[0]["previous"] == before


async def test_one_writer_per_chain(tmp_path):
    first = EvidenceLog(settings(tmp_path), "main", Metrics(CollectorRegistry()))
    await first.start()
    second = EvidenceLog(settings(tmp_path), "main", Metrics(CollectorRegistry()))
    try:
        with pytest.raises(EvidenceError) as err:
            await second.start()
        assert str(err.value) == (
            f"evidence log {tmp_path}: chain 'main' is being written by another process "
            "(give each proxy its own evidence.dir)")
    finally:
        await first.aclose()


async def test_what_is_recorded(tmp_path):
    """Refusals, declaration fetches and trap hits always; a share of the rest; the rest
    counted in the checkpoint. The robots.txt text behind a hash is in the log."""
    log = EvidenceLog(settings(tmp_path, allowed_sample=0.1), "main",
                      Metrics(CollectorRegistry()))
    await log.start()
    robots_fetch = exchange(0, path="/robots.txt", action=Action.ALLOW, status=200)
    robots_fetch.variant = "robots.txt"
    log.submit(robots_fetch, ROBOTS, None, False)
    log.submit(exchange(1, path="/album/first-light", action=Action.TARPIT, status=200), ROBOTS,
               None, False)
    log.submit(exchange(2, path="/archive-complete/x", action=Action.ALLOW, status=200), ROBOTS,
               None, True)
    for i in range(3, 103):  # 100 listeners' requests: 10 sampled, 90 counted
        ex = exchange(i, action=Action.ALLOW, ua="Mozilla/5.0 Firefox/133.0", agent="",
                      status=200)
        ex.signals = ex.signals._replace(ua_class="browser", content=ContentKind.PAGE)
        log.submit(ex, ROBOTS, None, False)
    await log.aclose()
    records = [json.loads(line) for f in chain_files(tmp_path)["main"]
               for line in f.path.read_bytes().splitlines()]
    exchanges = [r for r in records if r["kind"] == "exchange"]
    reasons = [r["reason"] for r in exchanges]
    assert reasons == ["declaration", "verdict", "trap"] + ["sample"] * 10
    assert exchanges[1]["robots"] == {"sha256": ROBOTS.sha256, "disallowed": True}
    assert exchanges[2]["verdict"]["action"] == "allow"
    (checkpoint,) = [r for r in records if r["kind"] == "checkpoint"]
    assert checkpoint["allowed"] == {"page browser": 90}
    (text,) = [r for r in records if r["kind"] == "declarations"]
    assert text["sha256"] == ROBOTS.sha256 == hashlib.sha256(text["text"].encode()).hexdigest()


def test_each_record_names_the_declarations_of_its_own_rules(tmp_path):
    """Every batch brings the writer a copy of the rights in force (pickled without their
    per-path header cache): the writer keeps one while they stay the same, and a rule change
    between batches changes the tdmrep.json and headers the next records name."""
    rights = load_rules(Path(__file__).parent / "fixtures" / "rights").rights
    assert rights is not None
    opened = dataclasses.replace(rights.defaults, reservation=False)
    changed = Rights(defaults=opened, tracks=tuple(
        dataclasses.replace(t, terms=opened) for t in rights.tracks))
    writer = ChainWriter(settings(tmp_path), "main", None)
    writer.take_chain()
    copies = []
    for n, given in enumerate((rights, rights, changed)):
        copy = pickle.loads(pickle.dumps(given))  # as it reaches the writer process
        copies.append(copy)
        rows = [_row("verdict", exchange(10 * n + i, path="/real/track.mp3"), ROBOTS, given)
                for i in range(3)]
        writer.flush(Batch(b"[" + b",".join(rows) + b"]", 3, {ROBOTS.sha256: ROBOTS.text},
                           {id(given): copy}, None, 0, False))
        # the first copy is kept (with its header cache) until the rules change
        assert writer._kept(copy) is copies[0 if n < 2 else 2]
    writer.release()
    records = [json.loads(line) for f in chain_files(tmp_path)["main"]
               for line in f.path.read_bytes().splitlines()]
    tdmrep = {r["sha256"]: r["text"] for r in records
              if r["kind"] == "declarations" and r["name"] == "tdmrep.json"}
    named = [r["declarations"] for r in records if r["kind"] == "exchange"]
    assert len(named) == 9
    for declarations, given in zip(named, [rights] * 6 + [changed] * 3, strict=True):
        assert tdmrep[declarations["tdmrep_sha256"]] == given.tdmrep()
        assert declarations["headers"] == dict(given.headers("/real/track.mp3"))
    assert named[0]["headers"]["tdm-reservation"] == "1"
    assert named[-1]["headers"] == {"tdm-reservation": "0"}


async def test_report_names_the_violator_with_both_timestamps(tmp_path):
    read = exchange(0, path="/robots.txt", action=Action.ALLOW, status=200)
    read.variant = "robots.txt"
    took = exchange(1, path="/stream/track-1.mp3", action=Action.DECOY, status=200)
    took.wall = read.wall + 2.5
    listener = exchange(2, ip="192.0.2.55", ua="Mozilla/5.0 Firefox/133.0", agent="",
                        path="/cart", action=Action.BLOCK)
    await write_log(tmp_path, [read, took, listener])
    data = json.loads(render(build_report(tmp_path, verify_dir(tmp_path, None)), "json"))
    (v,) = data["fetched_then_violated"]
    assert (v["client"], v["group"], v["url"]) == ("198.51.100.7", "GPTBot (OpenAI)",
                                                  "/stream/track-1.mp3")
    assert v["robots_fetched"] < v["violated"]
    agents = {a["name"]: a for a in data["agents"]}
    assert set(agents) == {"GPTBot (OpenAI)", "ai-crawler: Mozilla/5.0 Firefox/133.0"}
    assert agents["GPTBot (OpenAI)"]["robots_txt_fetches"] == 1
    assert agents["GPTBot (OpenAI)"]["violations_after_reading"] == 1
    # the listener's forbidden /cart request was never after a robots.txt read of its own
    assert agents["ai-crawler: Mozilla/5.0 Firefox/133.0"]["violations_after_reading"] == 0
    assert [c["name"] for c in data["clusters"]] == ["198.51.100.0/24", "192.0.2.0/24"]
    html = render(build_report(tmp_path, verify_dir(tmp_path, None)), "html")
    assert "<svg" in html
    assert "GPTBot (OpenAI)" in html
    assert "<script" not in html
    csv_text = render(build_report(tmp_path, verify_dir(tmp_path, None)), "csv")
    assert csv_text.splitlines()[1].startswith("agent,GPTBot (OpenAI),")


def test_verify_command(log_dir, capsys):
    assert main(["evidence", "verify", "--dir", str(log_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("chain main: OK: ")
    path, lines, i = middle(log_dir)
    del lines[i]
    path.write_bytes(b"".join(lines))
    assert main(["evidence", "verify", "--dir", str(log_dir)]) == 1
    assert f"  first break: {path.name}:{i + 1}: expected record" in capsys.readouterr().out
    empty = log_dir.parent / "empty"
    empty.mkdir()
    assert main(["evidence", "verify", "--dir", str(empty)]) == 1
    assert capsys.readouterr().out == f"no evidence log files in {empty}\n"


def test_report_command_writes_each_format(log_dir, tmp_path, capsys):
    for fmt in ("html", "csv", "json"):
        out = tmp_path / f"report.{fmt}"
        assert main(["evidence", "report", "--dir", str(log_dir), "--format", fmt,
                     "--out", str(out)]) == 0
        assert out.stat().st_size > 0
    assert json.loads((tmp_path / "report.json").read_text())["records"] == 300
    shutil.rmtree(log_dir)
    assert main(["evidence", "report", "--dir", str(log_dir)]) == 1
