"""The evidence log's on-disk shape: hash-chained JSON Lines, one chain per writer.

A record is one line, a JSON object whose last two members are "prev" (the previous record's
hash) and "h", the SHA-256 of the line's text without its "h" member:

    {"seq":7,"t":"2026-11-22T07:31:02.123456Z","kind":"exchange",...,"prev":"ab12…"}
    -> h = sha256 of exactly those bytes, appended as ,"h":"<64 hex>"}

so any edit to a record breaks its own hash, and any deletion, insertion or reordering breaks
the next record's "prev" and the running "seq". Files are named CHAIN-SEQ-DAY.jsonl (SEQ the
first record's number, twelve digits), rotate by size and by UTC day, and the chain runs on
across them: each file opens with an "open" record whose "prev" is the last record of the file
before. CHAIN.head holds the newest record's seq and hash, signed with the chain key, so cutting
records off the end is seen too. Checkpoint, close and gap records carry an HMAC of the chain so
far: a forger without the key cannot rebuild the chain after an edit, and cannot hide that
checkpoints are missing (each "open" record states the chain's checkpoint interval).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson

GENESIS = "0" * 64
_SUFFIX_LEN = len(',"h":"') + 64 + len('"}')
_FILE = re.compile(
    r"^(?P<chain>[a-z0-9_]+)-(?P<seq>\d{12})-(?P<day>\d{8})(?:\.(?P<n>\d{1,3}))?\.jsonl$")
CHAIN_NAME = re.compile(r"^[a-z0-9_]{1,32}$")


def seal(record: dict[str, Any], prev: str) -> tuple[bytes, str]:
    """The record's line (with its newline) and its hash."""
    record["prev"] = prev
    body = orjson.dumps(record)
    h = hashlib.sha256(body).hexdigest()
    return b"%s,\"h\":\"%s\"}\n" % (body[:-1], h.encode()), h


class Broken(ValueError):
    """A line that is not a sealed record, or whose hash does not match its content."""


def unseal(line: bytes) -> dict[str, Any]:
    """Parse one line (without its newline) and check its own hash."""
    if len(line) <= _SUFFIX_LEN or not line.endswith(b'"}') or line[-_SUFFIX_LEN:][:6] != b',"h":"':
        raise Broken("not a sealed record (no hash at its end)")
    body = line[:-_SUFFIX_LEN] + b"}"
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise Broken("not valid JSON") from None
    if not isinstance(record, dict):
        raise Broken("not a JSON object")
    if hashlib.sha256(body).hexdigest() != record.get("h"):
        raise Broken("its content does not match its hash (the record was edited)")
    if not isinstance(record.get("seq"), int) or not isinstance(record.get("prev"), str):
        raise Broken("it has no seq or prev")
    return record


def iso(ts: float) -> str:
    return f"{_second(int(ts))}.{int(ts % 1 * 1e6):06d}Z"


@functools.lru_cache(maxsize=8)  # the records of one batch mostly share their second
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def day_of(ts: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(ts))


def file_name(chain: str, seq: int, ts: float, n: int = 0) -> str:
    """CHAIN-SEQ-DAY.jsonl; .N before .jsonl when that name is taken (a file holding only the
    torn start of a record, from a writer that stopped, keeps its name and its bytes)."""
    return f"{chain}-{seq:012d}-{day_of(ts)}{f'.{n}' if n else ''}.jsonl"


class LogFile(NamedTuple):
    path: Path
    chain: str
    first_seq: int
    n: int


def chain_files(directory: Path) -> dict[str, list[LogFile]]:
    """The log files in `directory`, by chain, in chain order."""
    chains: dict[str, list[LogFile]] = {}
    if not directory.is_dir():
        return chains
    for path in directory.iterdir():
        m = _FILE.match(path.name)
        if m and path.is_file():
            chains.setdefault(m["chain"], []).append(
                LogFile(path, m["chain"], int(m["seq"]), int(m["n"] or 0)))
    for files in chains.values():
        files.sort(key=lambda f: (f.first_seq, f.n))
    return chains


def lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line without newline, complete) for every line of a file; only the last
    can be incomplete (no newline: the writer stopped in the middle of it)."""
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            complete = line.endswith(b"\n")
            yield number, line[:-1] if complete else line, complete


def head_path(directory: Path, chain: str) -> Path:
    return directory / f"{chain}.head"


def head_mac(key: bytes, chain: str, seq: int, h: str) -> str:
    return hmac.new(key, f"head\x00{chain}\x00{seq}\x00{h}".encode(), hashlib.sha256).hexdigest()


SIGNED_KINDS = ("checkpoint", "close", "gap")  # records that carry a "mac"


def record_mac(key: bytes, kind: str, chain: str, seq: int, prev: str) -> str:
    """The signature of a checkpoint, close or gap record: its kind, place and the chain
    before it."""
    return hmac.new(key, f"{kind}\x00{chain}\x00{seq}\x00{prev}".encode(),
                    hashlib.sha256).hexdigest()


def read_head(directory: Path, chain: str) -> dict[str, Any] | None:
    try:
        head = json.loads(head_path(directory, chain).read_text())
    except (OSError, ValueError):
        return None
    return head if isinstance(head, dict) else None
