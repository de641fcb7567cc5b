"""The evidence writer: one task and one writer process per proxy process, one chain each.

The hot path only decides whether an exchange is evidence and appends it to a bounded queue
(`submit`). A task wakes every FLUSH seconds and hands the queue to the writer process, which
builds the records, seals them into the chain (chain.py), appends them with one write per
batch and fsyncs as the policy says. A process, not a thread: building and sealing records
costs about 30 us each, and in a thread that CPU time is taken from the event loop through
the GIL (at 5,000 records a second, listeners' p50 went from 2 to 20 ms).

Recorded: every exchange whose verdict is not allow (shadow verdicts too), every fetch of
robots.txt, tdmrep.json and ai.txt, every trap-link hit, every request seen violating
robots.txt, and a sample of the rest (`allowed_sample`); the rest is counted by content kind and
UA class in the periodic checkpoint records. The full text of each robots.txt and tdmrep.json
served is written once per file, before the first record that names its hash.

A writer that was killed (kill -9, a crash, the machine's power) loses what it had not yet
written: the rows queued in the proxy (at most FLUSH seconds' worth, 0.1 s, plus the batch
being written, or up to `queue` rows when the writer had fallen behind). The chain cannot say
which requests those were, but it says that there were some: the next writer finds that the
chain does not end in its "close" record and, before anything else, writes a signed "gap"
record naming the last record that did land, its time, and the time of the new start.

Failure never stops the proxy. A full disk or an unwritable folder: the batch is lost and
counted (the part of it that did land is cut back off, so the file ends on a whole record and
no record already written is touched), the condition is logged once a minute, and when a write
succeeds again a "gap" record says how many records were lost, from when to when and why;
`evidence verify` shows it as a gap, not as tampering.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import gc
import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import socket
import time
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from protego import Protego

from .. import __version__
from ..exchange import Action, Exchange
from ..keys import load_or_create_key
from ..logs import log_event, setup_logging
from ..metrics import Metrics
from ..rights import Rights
from ..robots import CanonicalRobots
from ..settings import EvidenceSettings, LogSettings
from ..signals.network import AsnDatabase
from .chain import (
    CHAIN_NAME,
    GENESIS,
    SIGNED_KINDS,
    Broken,
    chain_files,
    day_of,
    file_name,
    head_mac,
    head_path,
    iso,
    record_mac,
    seal,
    unseal,
)

log = logging.getLogger("sonicshield.evidence")

FLUSH = 0.1  # seconds between batches
REPORT_EVERY = 60.0  # seconds between two log lines about the same failure
_TAIL = 1 << 16  # bytes read back from the newest file at start
_VARIANT_HASHES = 4096


class EvidenceError(Exception):
    """The evidence log cannot be used at all: another process writes this chain."""


class Encounter(NamedTuple):
    """An exchange as the writer process needs it: plain values. The proxy sends a batch of
    them as one orjson document (pickling an Exchange dataclass costs 28 us; a row's share of
    one orjson.dumps well under a microsecond)."""

    reason: str  # why it is evidence: verdict, declaration, trap, robots-violation, sample
    id: str
    wall: float
    ms: float
    ip: str
    host: str
    method: str
    path: str
    query: str
    status: int
    bytes: int
    error: str | None
    variant: str
    served: Any  # Served's fields (key, mark, pieces), or None
    verdict: Any  # action, origin, rule hash, shadow, (a shadow rule's action, origin) or None
    signals: Any  # Signals' fields, content as its value; None when not classified
    robots: str  # the SHA-256 of the robots.txt in force
    rights: int  # the id() of the Rights in force, a key of the batch's rights; 0 for none




class Batch(NamedTuple):
    encounters: bytes  # a JSON array of Encounter rows
    n: int  # how many rows
    robots: dict[str, str]  # the robots.txt texts the encounters name, by SHA-256
    rights: dict[int, Rights]  # the rights the encounters name, by id()
    summary: dict[str, int] | None  # allowed requests not recorded, for a checkpoint
    queue_dropped: int
    closing: bool


def _row(reason: str, ex: Exchange, robots: CanonicalRobots, rights: Rights | None) -> bytes:
    """An Encounter as JSON: one C call per record on the event loop, and the batch is then
    a join."""
    s, v = ex.signals, ex.verdict
    return orjson.dumps((
        reason, ex.id, ex.wall, ex.duration_ms, ex.client.ip, ex.client.host, ex.method,
        ex.path, ex.query, ex.status, ex.bytes_out, ex.error, ex.variant,
        None if ex.served is None else tuple(ex.served),
        (v.action.value, v.origin, v.rule_hash, v.shadow,
         None if v.shadowed is None else (v.shadowed.action.value, v.shadowed.origin)),
        None if s is None else (s.content.value, *s[1:]), robots.sha256, id(rights) if rights
        is not None else 0))


class EvidenceLog:
    """The proxy's side: decides what is evidence, queues it, and hands it in batches to the
    writer process."""

    def __init__(self, settings: EvidenceSettings, chain: str, metrics: Metrics,
                 asn_database: Path | None = None, log_settings: LogSettings | None = None
                 ) -> None:
        if not CHAIN_NAME.match(chain):
            raise ValueError(f"bad chain name {chain!r}")
        self.settings, self.chain, self.metrics = settings, chain, metrics
        self._init_args = (settings, chain, asn_database, log_settings or LogSettings())
        self._queue: collections.deque[bytes] = collections.deque()
        # what the queued rows name, sent with them
        self._robots_texts: dict[str, str] = {}
        self._rights: dict[int, Rights] = {}
        self._sample_every = round(1 / settings.allowed_sample) if settings.allowed_sample else 0
        self._allowed = 0
        self._summary: collections.Counter[str] = collections.Counter()
        self._queue_dropped = 0
        self._queue_full = metrics.evidence_dropped.labels("queue-full")
        self._write_failed = metrics.evidence_dropped.labels("write-failed")
        self._channel: _Channel | None = None
        self._calls = asyncio.Lock()  # one request to the writer at a time
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_checkpoint = time.monotonic()
        self.seq = 0  # the chain's next record number, as of the last batch

    # ---- the hot path ------------------------------------------------------------------

    def submit(self, ex: Exchange, robots: CanonicalRobots, rights: Rights | None,
               trapped: bool) -> None:
        """Queue `ex` if it is evidence; count it otherwise."""
        signals = ex.signals
        if trapped:
            reason = "trap"
        elif ex.variant in ("robots.txt", "declaration"):
            reason = "declaration"
        elif ex.verdict.action is not Action.ALLOW or ex.verdict.shadowed is not None:
            reason = "verdict"
        elif signals is not None and signals.robots.startswith("violated"):
            reason = "robots-violation"
        else:
            self._allowed += 1
            if self._sample_every and self._allowed % self._sample_every == 0:
                reason = "sample"
            else:
                kind = "other" if signals is None else f"{signals.content} {signals.ua_class}"
                self._summary[kind] += 1
                return
        if len(self._queue) >= self.settings.queue:
            self._queue_dropped += 1
            self._queue_full.inc()
            return
        self._queue.append(_row(reason, ex, robots, rights))
        if robots.sha256 not in self._robots_texts:
            self._robots_texts[robots.sha256] = robots.text
        if rights is not None and id(rights) not in self._rights:
            self._rights[id(rights)] = rights
        if len(self._queue) >= 1024:
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ---- the task ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer process, which takes the chain and finds where it ended;
        EvidenceError when another process holds it. Any other trouble (an unwritable folder)
        is logged and retried at every batch."""
        try:
            self.seq = await self._call("start")
        except BaseException:
            if self._channel is not None:
                await self._channel.aclose()
                self._channel = None
            raise
        self._task = asyncio.create_task(self._run(), name="evidence-writer")

    async def _call(self, op: str, *args: Any) -> Any:
        async with self._calls:
            if self._channel is None:
                self._channel = await _Channel.open(self._init_args)
            return await self._channel.call(op, *args)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH)
            self._wake.clear()
            try:
                await self.flush()
            except EvidenceError as exc:  # the chain was taken while the writer restarted
                log_event(log, logging.ERROR, "evidence-writer-failed", error=str(exc))
            except Exception:  # a bug: said with its traceback, and the next batch tries again
                log.exception("evidence batch failed")

    def _take(self, closing: bool) -> Batch:
        rows = b"[" + b",".join(self._queue) + b"]"
        n = len(self._queue)
        self._queue.clear()
        texts, self._robots_texts = self._robots_texts, {}
        rights, self._rights = self._rights, {}
        summary = None
        now = time.monotonic()
        if closing or now - self._last_checkpoint >= self.settings.checkpoint_interval:
            summary, self._summary = dict(sorted(self._summary.items())), collections.Counter()
            self._last_checkpoint = now
        dropped, self._queue_dropped = self._queue_dropped, 0
        return Batch(rows, n, texts, rights, summary, dropped, closing)

    async def flush(self, closing: bool = False) -> None:
        """Write what is queued now (the task does this every FLUSH seconds anyway)."""
        batch = self._take(closing)
        try:
            written: Written = await self._call("flush", batch)
        except WriterGone:
            # the writer process died (killed, out of memory): this batch is lost; a new
            # process finds the chain's end on disk
            log_event(log, logging.ERROR, "evidence-writer-died", lost=batch.n)
            self._write_failed.inc(batch.n)
            if self._channel is not None:
                self._channel.close()
            self._channel = None
            self.seq = await self._call("start")
            return
        self.seq = written.seq
        for kind, n in written.kinds.items():
            self.metrics.evidence_records.labels(kind).inc(n)
        if written.failed:
            self._write_failed.inc(written.failed)

    async def aclose(self) -> None:
        """Write what is queued, a last checkpoint and a "close" record."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush(closing=True)
        if self._channel is not None:
            with contextlib.suppress(WriterGone):
                await self._call("release")
            await self._channel.aclose()
            self._channel = None

class Written(NamedTuple):
    seq: int  # the chain's next record number
    kinds: dict[str, int]  # records written, by kind
    failed: int  # records lost to a failed write


class ChainWriter:
    """The writer process's side: builds, seals, appends and syncs; one per chain."""

    def __init__(self, settings: EvidenceSettings, chain: str, asn: AsnDatabase | None) -> None:
        self.settings, self.chain, self.asn = settings, chain, asn
        self.dir = settings.dir
        self._lock_fd = -1
        self._fd = -1
        self._file = ""
        self._day = ""
        self._size = 0
        self._full = False  # the file system refuses to let the current file grow
        self._opening: dict[str, Any] | None = None  # the "open" record not yet on disk
        self.seq = 0  # the next record's number
        self.h = GENESIS  # the newest record's hash
        self._key = b""
        self._torn: dict[str, Any] | None = None
        # the chain did not end in a "close": where it did end (record, time), for a gap record
        self._unclean: tuple[int, str] | None = None
        self._since_checkpoint = 0
        self._last_fsync = time.monotonic()
        self._published: set[str] = set()  # declaration texts already in the current file
        self._variant_hashes: dict[tuple[tuple[str, int, int], ...], str | None] = {}
        self._tdmrep: tuple[Rights | None, str, str] = (None, "", "")  # rights, text, sha256
        self._robots_seen: dict[str, CanonicalRobots] = {}
        self._lost = 0  # records lost since the last successful write
        self._lost_since = 0.0
        self._lost_reason = ""
        self._last_report = float("-inf")
        self._failed = 0  # records lost in this batch

    def take_chain(self) -> int:
        """Take the chain and find its end: the next record's number. A chain that did not
        end cleanly gets its gap record now, not with the first batch."""
        try:
            self._lock()
        except OSError as exc:
            self._lose(0, f"cannot use the evidence folder: {exc.strerror or exc}", time.time())
        if self._unclean is not None and self._lock_fd >= 0:
            self._write([], time.time())
        return self.seq

    def _lock(self) -> None:
        """One writer per chain (flock), the chain key, and where the chain ended."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / f".{self.chain}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EvidenceError(
                f"evidence log {self.dir}: chain '{self.chain}' is being written by another "
                "process (give each proxy its own evidence.dir)") from None
        key = self.settings.key
        try:
            self._key = load_or_create_key(key, "evidence chain key")
        except ValueError as exc:  # a short key file: the chain is written, unsigned
            log_event(log, logging.ERROR, "evidence-key-unusable", error=str(exc),
                      effect="checkpoints and the head are not signed")
        if key.resolve().is_relative_to(self.dir.resolve()):
            log_event(log, logging.WARNING, "evidence-key-in-log-folder", key=str(key),
                      effect="whoever can rewrite the log can also re-sign it: move the key "
                      "out of the folder and set evidence.key_file, keep a copy elsewhere")
        self._recover()
        self._lock_fd = fd

    def _recover(self) -> None:
        files = chain_files(self.dir).get(self.chain, [])
        if not files:
            return
        last = files[-1]
        self._file = last.path.name
        with last.path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
        end = tail.rfind(b"\n")
        if end + 1 < len(tail):  # the writer stopped in the middle of a record
            fragment = tail[end + 1:]
            self._torn = {"file": last.path.name, "offset": size - len(fragment),
                          "bytes": len(fragment), "sha256": hashlib.sha256(fragment).hexdigest()}
            tail = tail[:end + 1]
        if not tail:  # nothing whole in the newest file: it was opened for this seq
            self.seq = last.first_seq
            self._unclean = (self.seq - 1, "")
            return
        start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
        try:
            record = unseal(tail[start:-1])
        except Broken as exc:
            log_event(log, logging.ERROR, "evidence-chain-unreadable", file=str(last.path),
                      error=str(exc), effect="the chain goes on from an unknown record; "
                      "'sonicshield evidence verify' will show the break")
            self.seq = last.first_seq
            self._unclean = (self.seq - 1, "")
            return
        self.seq, self.h = record["seq"] + 1, record["h"]
        if record.get("kind") != "close":
            self._unclean = (record["seq"], str(record.get("t", "")))

    def flush(self, batch: Batch) -> Written:
        # a batch makes some 40,000 short-lived dicts and lists and no reference cycles: the
        # collector, run every 700 allocations, would walk them all for nothing (it cost
        # about a third of the writer's CPU time)
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._flush(batch)
        finally:
            if collecting:
                gc.enable()

    def _flush(self, batch: Batch) -> Written:
        now = time.time()
        self._failed, kinds = 0, {}
        summary, closing = batch.summary, batch.closing
        if batch.queue_dropped:
            self._lose(batch.queue_dropped, "the writer's queue was full", now, counted=True)
        records: list[dict[str, Any]] = []
        rights_of = {key: self._kept(rights) for key, rights in batch.rights.items()}
        for row in orjson.loads(batch.encounters):
            e = Encounter(*row)
            try:
                rights = rights_of.get(e.rights)
                records.append(self._exchange_record(e, self._robots(e.robots, batch.robots),
                                                     rights))
            except Exception as exc:  # a bug must cost one record, never the log
                log.exception("evidence record for exchange %s failed", e.id)
                self._lose(1, f"a record could not be built: {exc!r}", now)
        if summary is not None:
            records.append({"kind": "checkpoint", "records": self._since_checkpoint
                            + len(records), "allowed": summary})
        if closing:
            records.append({"kind": "close"})
        if records or self._lost:
            kinds = self._write(records, now)
        return Written(self.seq, kinds, self._failed)

    def _write(self, records: list[dict[str, Any]], now: float) -> dict[str, int]:
        """Seal and append the batch; on failure lose it whole and keep the chain as it was."""
        try:
            if self._lock_fd < 0:
                self._lock()
            self._rotate(now)
        except (OSError, EvidenceError) as exc:
            self._lose(len(records), getattr(exc, "strerror", None) or str(exc), now)
            return {}
        first: list[dict[str, Any]] = []
        if self._opening is not None:
            first.append(self._opening)
        if self._unclean is not None:
            after, since = self._unclean
            first.append({"kind": "gap", "dropped": None, "after": after, "from": since,
                          "to": iso(now), "reason": "the writer before this one stopped without "
                          "closing the chain (killed or crashed): what it had not yet written "
                          "is missing"})
        if self._lost:
            first.append({"kind": "gap", "dropped": self._lost, "from": iso(self._lost_since),
                          "to": iso(now), "reason": self._lost_reason})
        seq, h = self.seq, self.h
        published = set(self._published)
        lines: list[bytes] = []
        kinds: collections.Counter[str] = collections.Counter()
        for record in first + records:
            if record["kind"] == "exchange":
                for text in self._texts(record.pop("_texts"), published):
                    line, h = self._seal(text, seq, h, now)
                    lines.append(line)
                    seq += 1
                    kinds["declarations"] += 1
            line, h = self._seal(record, seq, h, now)
            lines.append(line)
            seq += 1
            kinds[record["kind"]] += 1
        try:
            self._append(b"".join(lines))
        except OSError as exc:
            # a file-size limit (EFBIG, RLIMIT_FSIZE) is this file's: the next batch starts
            # another; a full disk waits for room
            self._full = exc.errno == errno.EFBIG
            self._lose(len(records), exc.strerror or str(exc), now)
            return {}
        self.seq, self.h, self._published, self._opening = seq, h, published, None
        self._unclean = None
        self._since_checkpoint += kinds["exchange"]
        if kinds["checkpoint"]:
            self._since_checkpoint = 0
        if self._lost:
            log_event(log, logging.WARNING, "evidence-writing-again", dropped=self._lost,
                      since=iso(self._lost_since))
            self._lost = 0
        self._sync()
        return dict(kinds)

    def _seal(self, record: dict[str, Any], seq: int, prev: str, now: float
              ) -> tuple[bytes, str]:
        if "seq" in record:  # an exchange record, made with its place
            record["seq"] = seq
        else:
            record = {"seq": seq, "t": record.get("t") or iso(now), **record}
        if record["kind"] in SIGNED_KINDS and self._key:
            record["mac"] = record_mac(self._key, record["kind"], self.chain, seq, prev)
        return seal(record, prev)

    def _rotate(self, now: float) -> None:
        """A new file when there is none, the current one is full or the UTC day changed;
        its "open" record waits in self._opening until it is on disk."""
        s = self.settings
        day = day_of(now)
        if self._fd >= 0 and not self._full and (
                self._size < s.rotate_bytes or self._opening is not None) and (
                not s.rotate_daily or day == self._day):
            return
        self._full = False
        for n in range(1000):
            name = file_name(self.chain, self.seq, now, n)
            try:
                fd = os.open(self.dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL,
                             0o644)
                break
            except FileExistsError:
                continue
        else:
            raise OSError(f"no free file name for record {self.seq} in {self.dir}")
        if self._fd >= 0:
            self._sync(force=True)
            os.close(self._fd)
        previous, self._file = self._file or None, name
        self._fd, self._day, self._size = fd, day, 0
        self._published = set()
        self._opening = {"kind": "open", "chain": self.chain, "file": name,
                         "previous": previous, "pid": os.getpid(), "version": __version__,
                         "checkpoint_interval": s.checkpoint_interval}
        if self._torn is not None:
            self._opening["torn"], self._torn = self._torn, None

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError:
            # cut off what part of the batch did land: the file ends on a whole record again
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)

    def _sync(self, force: bool = False) -> None:
        policy, mono = self.settings.fsync, time.monotonic()
        if force or policy == "always" or (
                policy == "interval" and mono - self._last_fsync >= self.settings.fsync_interval):
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._report(f"fsync failed: {exc.strerror}", time.time())
            self._last_fsync = mono
        self._write_head()

    def _write_head(self) -> None:
        """CHAIN.head: the newest record, signed; replaced whole (a failure keeps the old)."""
        seq = self.seq - 1
        head: dict[str, Any] = {"chain": self.chain, "seq": seq, "h": self.h,
                                "file": self._file}
        if self._key:
            head["mac"] = head_mac(self._key, self.chain, seq, self.h)
        path = head_path(self.dir, self.chain)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(json.dumps(head) + "\n")
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _lose(self, n: int, reason: str, now: float, counted: bool = False) -> None:
        """Records that will never be written: counted as failed writes (unless `counted`
        already, as queue drops are by submit), reported, and named by the next gap record."""
        if n and not self._lost:
            self._lost_since = now
        self._lost += n
        self._lost_reason = reason
        if not counted:
            self._failed += n
        self._report(reason, now)

    def _report(self, reason: str, now: float) -> None:
        if now - self._last_report >= REPORT_EVERY:
            self._last_report = now
            log_event(log, logging.ERROR, "evidence-write-failed", error=reason,
                      dropped=self._lost, folder=str(self.dir),
                      effect="records are counted as dropped until writing works again")

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # ---- records ---------------------------------------------------------------------

    def _robots(self, sha256: str, texts: dict[str, str]) -> CanonicalRobots:
        robots = self._robots_seen.get(sha256)
        if robots is None:
            if len(self._robots_seen) >= 16:
                self._robots_seen.clear()
            text = texts[sha256]
            robots = self._robots_seen[sha256] = CanonicalRobots(text, sha256,
                                                                 Protego.parse(text))
        return robots

    def _exchange_record(self, e: Encounter, robots: CanonicalRobots, rights: Rights | None
                         ) -> dict[str, Any]:
        action, origin, rule, shadow, shadowed = e.verdict
        record: dict[str, Any] = {
            "seq": 0, "t": iso(e.wall), "kind": "exchange", "reason": e.reason, "id": e.id,
            "client": None, "ua": "", "method": e.method,
            "url": e.path + "?" + e.query if e.query else e.path, "host": e.host,
            "status": e.status, "bytes": e.bytes, "ms": round(e.ms, 1),
            "verdict": {"action": action, "origin": origin, "rule": rule, "shadow": shadow},
        }
        if shadowed is not None:  # what a shadow rule would have done
            record["verdict"]["shadowed"] = {"action": shadowed[0], "origin": shadowed[1]}
        agent, asn, org, verified, declaration = "", 0, "", "", False
        if e.signals is not None:
            (content, ua, ua_class, agent, operator, purpose, robots_state, headers, score,
             flags, asn, org, datacenter, verified, trapped) = e.signals
            record["ua"] = ua
            record["signals"] = {
                "content": content, "ua_class": ua_class, "agent": agent, "operator": operator,
                "purpose": purpose, "robots": robots_state, "headers": headers,
                "behaviour": score, "flags": flags, "datacenter": datacenter,
                "trapped": trapped,
            }
            declaration = content == "declaration"
        if not asn and self.asn is not None:
            asn, org = self.asn.lookup(e.ip)
        record["client"] = {"ip": e.ip, "asn": asn, "org": org, "verified": verified}
        # what the client had been told: the robots.txt in force (and whether it forbids this
        # path to this agent), the TDMRep file and the headers on this very response
        # (the declarations themselves are everyone's to read, whatever robots.txt says)
        declaration = declaration or e.variant in ("robots.txt", "declaration")
        record["robots"] = {
            "sha256": robots.sha256,
            "disallowed": not declaration and not robots.allows(e.path, agent),
        }
        if rights is None:
            record["declarations"] = {"robots_sha256": robots.sha256}
        else:
            record["declarations"] = {"robots_sha256": robots.sha256,
                                      "tdmrep_sha256": self._tdmrep_text(rights)[1],
                                      "headers": dict(rights.headers(e.path))}
        record["variant"] = (self._variant(e.variant, e.served) if e.served is not None
                             else {"kind": e.variant})
        if e.error:
            record["error"] = e.error
        record["_texts"] = (robots, rights)
        return record

    def _kept(self, rights: Rights) -> Rights:
        """The writer's own copy of `rights` while they are the same: every batch brings a
        copy without the per-path header cache (Rights.__reduce__); the kept one has it."""
        known = self._tdmrep[0]
        return known if known is not None and known == rights else rights

    def _tdmrep_text(self, rights: Rights) -> tuple[str, str]:
        """The tdmrep.json made from `rights`, and its SHA-256 (made again only when the rules
        change: `_kept` hands every record of a batch the same copy while they do not)."""
        known, text, digest = self._tdmrep
        if known is not rights:
            text = rights.tdmrep()
            digest = hashlib.sha256(text.encode()).hexdigest()
            self._tdmrep = (rights, text, digest)
        return text, digest

    def _texts(self, texts: tuple[CanonicalRobots, Rights | None], published: set[str]
               ) -> list[dict[str, Any]]:
        """The texts behind the hashes an exchange record names, once per file."""
        robots, rights = texts
        out = []
        if robots.sha256 not in published:
            published.add(robots.sha256)
            out.append({"kind": "declarations", "name": "robots.txt", "sha256": robots.sha256,
                        "text": robots.text})
        if rights is not None:
            text, digest = self._tdmrep_text(rights)
            if digest not in published:
                published.add(digest)
                out.append({"kind": "declarations", "name": "tdmrep.json", "sha256": digest,
                            "text": text})
        return out

    def _variant(self, kind: str, served: list[Any] | None) -> dict[str, Any]:
        variant: dict[str, Any] = {"kind": kind}
        if served is not None:
            key, mark, pieces = served
            variant["key"] = key
            if mark is not None:
                variant["watermark"] = f"{mark:016x}"
            variant["sha256"] = self._variant_sha256(tuple(tuple(p) for p in pieces))
        return variant

    def _variant_sha256(self, pieces: tuple[tuple[str, int, int], ...]) -> str | None:
        """The SHA-256 of the whole variant the client was given (None when its files left
        the cache before the writer got to them)."""
        if pieces in self._variant_hashes:
            return self._variant_hashes[pieces]
        digest = hashlib.sha256()
        value: str | None = None
        try:
            with contextlib.ExitStack() as stack:
                files: dict[str, Any] = {}
                for path, start, end in pieces:
                    f = files.get(path)
                    if f is None:
                        f = files[path] = stack.enter_context(open(path, "rb"))
                    f.seek(start)
                    data = f.read(end - start)
                    if len(data) != end - start:
                        raise OSError(f"{path} is shorter than recorded")
                    digest.update(data)
            value = digest.hexdigest()
        except OSError:
            pass
        if len(self._variant_hashes) >= _VARIANT_HASHES:
            self._variant_hashes.clear()
        self._variant_hashes[pieces] = value
        return value


# ---- the writer process, and the socket pair that feeds it -----------------------------------
#
# Not a ProcessPoolExecutor: its feeder and result threads take the GIL from the event loop
# (a 500-record batch cost the loop 1 ms and more at p99). Here the loop writes length-
# prefixed pickles to a socket and reads the reply with asyncio, with no thread of its own.


class WriterGone(Exception):
    """The writer process went away (killed, out of memory)."""


_LENGTH = 8


class _Channel:
    def __init__(self, process: Any, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.process, self.reader, self.writer = process, reader, writer

    @classmethod
    async def open(cls, init_args: tuple[Any, ...]) -> _Channel:
        # forkserver: a fresh small process, not a copy of this one and its event loop (the
        # preload, when this is the fork server's first use, makes each start a fork of a
        # process that has this module imported: milliseconds, not 0.5 s)
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        ours, theirs = socket.socketpair()
        process = context.Process(target=_serve, args=(theirs, *init_args), daemon=True,
                                  name="evidence-writer")
        await asyncio.to_thread(process.start)
        theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return cls(process, reader, writer)

    async def call(self, op: str, *args: Any) -> Any:
        data = pickle.dumps((op, args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.writer.write(len(data).to_bytes(_LENGTH, "big") + data)
            await self.writer.drain()
            size = int.from_bytes(await self.reader.readexactly(_LENGTH), "big")
            ok, value = pickle.loads(await self.reader.readexactly(size))
        except (ConnectionError, asyncio.IncompleteReadError):
            raise WriterGone() from None
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self.writer.close()
        if self.process.is_alive():
            self.process.kill()

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
        await asyncio.to_thread(self.process.join, 10)
        if self.process.is_alive():
            self.process.kill()


def _serve(sock: socket.socket, settings: EvidenceSettings, chain: str,
           asn_database: Path | None, log_settings: LogSettings) -> None:
    """The writer process: requests in, replies out, until the proxy closes the socket."""
    setup_logging(log_settings)
    _background()
    writer = ChainWriter(settings, chain, AsnDatabase(asn_database) if asn_database else None)
    with sock, sock.makefile("rb") as requests, contextlib.suppress(ConnectionError):
        while True:
            head = requests.read(_LENGTH)
            if len(head) < _LENGTH:
                break  # the proxy is gone or done
            op, args = pickle.loads(requests.read(int.from_bytes(head, "big")))
            try:
                if op == "start":
                    reply: tuple[bool, Any] = (True, writer.take_chain())
                elif op == "flush":
                    reply = (True, writer.flush(*args))
                else:
                    writer.release()
                    reply = (True, None)
            except EvidenceError as exc:
                reply = (False, exc)
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            try:
                sock.sendall(len(data).to_bytes(_LENGTH, "big") + data)
            except OSError:
                break  # the proxy went away between asking and hearing back
    writer.release()


def _background() -> None:
    """The writer yields the CPU to the proxy's event loop."""
    with contextlib.suppress(OSError):
        os.nice(10)
