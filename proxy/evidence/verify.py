"""`sonicshield evidence verify`: is every chain in the folder whole, and where is it not?

Each chain is read in order. The first record that breaks it is named by file and line, with
what is wrong: edited (its hash no longer matches its content), missing records (deleted),
out of order (reordered or inserted), not following the record before it (replaced), a file
that does not continue the one before (spliced or renamed), records cut off the end (the signed
head names a later record). Reading a chain stops at its first break: what follows cannot be
placed. Gaps the writer itself recorded (disk full, a writer killed) and a record torn by a
crash that the next file accounts for are reported as such, not as tampering.

A chain must also prove its own end and its own completeness, or it fails: a missing head
file, records after the record the signed head names, and a stretch of the chain longer than
its checkpoint interval allows without a signed checkpoint, close or gap record (a forger who
rebuilt the chain without the key had to drop them). `weak=True` (`--weak`) turns exactly these
three into notes, for a copy of a log taken while it was being written.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .chain import (
    GENESIS,
    SIGNED_KINDS,
    Broken,
    LogFile,
    chain_files,
    head_mac,
    iso,
    lines,
    read_head,
    record_mac,
    unseal,
)

# a checkpoint is due every checkpoint_interval seconds; the writer makes it at its next
# batch, so allow twice the interval and some slack before calling one missing
_CHECKPOINT_SLACK = 10.0


@dataclass
class ChainCheck:
    chain: str
    files: int = 0
    records: int = 0
    last_seq: int = -1
    checkpoints: int = 0
    macs: int = 0  # checkpoint and head signatures checked
    problem: str = ""  # the first break, "FILE:LINE: what"; "" when the chain is whole
    gaps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problem


class _Stop(Exception):
    pass


def verify_dir(directory: Path, key: bytes | None, weak: bool = False) -> list[ChainCheck]:
    """Check every chain in `directory`; with `key`, the signatures too."""
    return [verify_chain(directory, chain, files, key, weak)
            for chain, files in sorted(chain_files(directory).items())]


def verify_chain(directory: Path, chain: str, files: list[LogFile],
                 key: bytes | None, weak: bool = False) -> ChainCheck:
    check = ChainCheck(chain, files=len(files))
    head = read_head(directory, chain)
    head_seq = head.get("seq") if head is not None else None
    head_h = None
    interval: float | None = None  # the checkpoint interval the chain's open records state
    due = ""  # a record later than this (ISO time) comes after a missing checkpoint
    anchored = ""  # since when the chain has gone without a signed record
    after_close = False
    try:
        expected, prev = 0, GENESIS
        torn: dict[str, Any] | None = None  # an incomplete record the next file must name
        for index, f in enumerate(files):
            first = True
            offset = 0
            for number, line, complete in lines(f.path):
                where = f"{f.path.name}:{number}"
                if not complete:
                    torn = {"file": f.path.name, "offset": offset, "bytes": len(line)}
                    break
                offset += len(line) + 1
                try:
                    record = unseal(line)
                except Broken as exc:
                    raise _Stop(f"{where}: {exc}") from None
                seq = record["seq"]
                if seq != expected:
                    if seq > expected:
                        what = (f"record {expected} is missing" if seq == expected + 1 else
                                f"records {expected} to {seq - 1} are missing")
                        raise _Stop(f"{where}: expected record {expected}, found {seq}: "
                                    f"{what} (deleted, or records were reordered)")
                    raise _Stop(f"{where}: expected record {expected}, found {seq} again: "
                                "records were reordered, duplicated or spliced in")
                if record["prev"] != prev:
                    raise _Stop(f"{where}: record {seq} does not follow record {seq - 1} "
                                "(its prev hash differs): a record before it was replaced, or "
                                "records from elsewhere were spliced in")
                kind = record.get("kind")
                t = str(record.get("t", ""))
                if first:
                    _check_open(record, f, where, torn)
                    torn = None
                    first = False
                    if isinstance(record.get("checkpoint_interval"), int | float):
                        interval = float(record["checkpoint_interval"])
                elif kind == "open":
                    raise _Stop(f"{where}: an 'open' record inside a file: two files were "
                                "spliced together")
                signed = kind in SIGNED_KINDS and _signed(record, key, chain, where)
                if signed or seq == 0 or (kind == "open" and after_close):
                    anchored = t  # a signed record, the chain's start, a start after a close
                    due = iso(_seconds(t) + 2 * interval + _CHECKPOINT_SLACK) if (
                        interval is not None and anchored) else ""
                elif due and t > due and kind != "open":  # an open record holds no encounter
                    _weak(check, weak, f"{where}: record {seq} at {t} comes after no "
                          f"signed checkpoint since {anchored}, though the chain promises one "
                          f"every {interval:g} s: checkpoints were removed")
                    due = ""  # said once
                after_close = signed and kind == "close"
                if kind == "checkpoint":
                    check.checkpoints += 1
                elif kind == "gap":
                    if record.get("dropped") is None:
                        what = (f"records may be missing after record {record.get('after')} "
                                f"({record.get('from') or 'time unknown'})")
                    else:
                        what = f"{record.get('dropped')} records lost from {record.get('from')}"
                    check.gaps.append(f"{where}: {what} to {record.get('to')}: "
                                      f"{record.get('reason')}")
                if signed and key is not None:
                    check.macs += 1
                if seq == head_seq:
                    head_h = record["h"]
                prev, expected = record["h"], seq + 1
                check.records, check.last_seq = check.records + 1, seq
            if torn is not None and index == len(files) - 1:
                check.notes.append(
                    f"{torn['file']} ends in an incomplete record ({torn['bytes']} bytes): the "
                    "writer stopped in the middle of it, or is writing it now")
        _check_head(check, head, head_h, key, weak)
    except _Stop as stop:
        check.problem = str(stop)
    return check


def _signed(record: dict[str, Any], key: bytes | None, chain: str, where: str) -> bool:
    """A checkpoint, close or gap record whose signature holds (with no key: that says it is
    signed); a wrong signature stops the check."""
    mac = record.get("mac")
    if key is None:
        return isinstance(mac, str)
    kind, seq = record["kind"], record["seq"]
    if mac is None:
        if kind == "checkpoint":
            raise _Stop(f"{where}: checkpoint {seq} is not signed: the chain up to it was "
                        "rebuilt by someone without the key")
        return False  # a close or gap of a writer before 0.2, which signed only checkpoints
    if not hmac.compare_digest(str(mac), record_mac(key, kind, chain, seq, record["prev"])):
        raise _Stop(f"{where}: {kind} {seq}'s signature is wrong: the chain up to it was "
                    "rebuilt by someone without the key")
    return True


def _seconds(t: str) -> float:
    return datetime.fromisoformat(t).timestamp()


def _weak(check: ChainCheck, weak: bool, problem: str) -> None:
    """A break that only a weak check lets pass, as a note."""
    if not weak:
        raise _Stop(problem)
    check.notes.append(f"weak check: {problem}")


def _check_open(record: dict[str, Any], f: LogFile, where: str,
                torn: dict[str, Any] | None) -> None:
    if record.get("kind") != "open":
        raise _Stop(f"{where}: the file does not start with its 'open' record: its start was "
                    "cut off, or it was spliced together from other files")
    if record.get("file") != f.path.name:
        raise _Stop(f"{where}: the file says it is {record.get('file')!r}: it was renamed or "
                    "copied from elsewhere")
    declared = record.get("torn")
    if torn is not None:
        if not isinstance(declared, dict) or any(
                declared.get(k) != torn[k] for k in ("file", "offset", "bytes")):
            raise _Stop(f"{torn['file']}: ends in an incomplete record ({torn['bytes']} bytes "
                        f"at byte {torn['offset']}) that the next file does not account for: "
                        "its end was cut off or edited")
    elif declared is not None:
        raise _Stop(f"{where}: says {declared.get('file')} ends in an incomplete record, but "
                    "that file ends whole: it was edited")


def _check_head(check: ChainCheck, head: dict[str, Any] | None, head_h: str | None,
                key: bytes | None, weak: bool) -> None:
    if head is None:
        _weak(check, weak, f"no {check.chain}.head: the chain's end is not signed, so records "
              "cut off the end, or a chain rebuilt from scratch, cannot be told apart from the "
              "real one")
        return
    seq = head.get("seq")
    if not isinstance(seq, int):
        raise _Stop(f"{check.chain}.head: unreadable")
    if key is not None:
        if not hmac.compare_digest(str(head.get("mac", "")),
                                   head_mac(key, check.chain, seq, str(head.get("h")))):
            raise _Stop(f"{check.chain}.head: its signature is wrong: it was edited")
        check.macs += 1
    if seq > check.last_seq:
        what = (f"record {seq}" if seq == check.last_seq + 1
                else f"records {check.last_seq + 1} to {seq}")
        raise _Stop(f"{check.chain}.head names record {seq}, the log ends at record "
                    f"{check.last_seq}: {what} were cut off the end")
    if head_h != head.get("h"):
        raise _Stop(f"{check.chain}.head: record {seq} is not the one the head names: the "
                    "log was rewritten from there on")
    if seq < check.last_seq:
        _weak(check, weak, f"records {seq + 1} to {check.last_seq} follow the record the "
              f"signed head names ({seq}): they were appended by someone else, or the log was "
              "copied while its writer was between a write and its head (then use --weak)")


def describe(checks: list[ChainCheck], directory: Path, key_used: bool) -> tuple[str, bool]:
    """The verify command's report and whether every chain is whole."""
    if not checks:
        return f"no evidence log files in {directory}", False
    out = []
    for c in checks:
        status = "OK" if c.ok else "BROKEN"
        out.append(f"chain {c.chain}: {status}: {c.records} records in {c.files} files "
                   f"(0 to {c.last_seq}), {c.checkpoints} checkpoints, "
                   f"{c.macs} signatures checked")
        if c.problem:
            out.append(f"  first break: {c.problem}")
        out += [f"  gap: {g}" for g in c.gaps]
        out += [f"  note: {n}" for n in c.notes]
    if not key_used:
        out.append("signatures not checked: no chain key (give --key)")
    return "\n".join(out), all(c.ok for c in checks)
