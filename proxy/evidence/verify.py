"""`sonicshield evidence verify`: is every chain in the folder whole, and where is it not?

Each chain is read in order. The first record that breaks it is named by file and line, with
what is wrong: edited (its hash no longer matches its content), missing records (deleted),
out of order (reordered or inserted), not following the record before it (replaced), a file
that does not continue the one before (spliced or renamed), records cut off the end (the signed
head names a later record). Reading a chain stops at its first break: what follows cannot be
placed. Gaps the writer itself recorded (disk full) and a record torn by a crash that the next
file accounts for are reported as such, not as tampering.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chain import (
    GENESIS,
    Broken,
    LogFile,
    chain_files,
    checkpoint_mac,
    head_mac,
    lines,
    read_head,
    unseal,
)


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


def verify_dir(directory: Path, key: bytes | None) -> list[ChainCheck]:
    """Check every chain in `directory`; with `key`, the checkpoint and head signatures too."""
    return [verify_chain(directory, chain, files, key)
            for chain, files in sorted(chain_files(directory).items())]


def verify_chain(directory: Path, chain: str, files: list[LogFile],
                 key: bytes | None) -> ChainCheck:
    check = ChainCheck(chain, files=len(files))
    head = read_head(directory, chain)
    head_seq = head.get("seq") if head is not None else None
    head_h = None
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
                if first:
                    _check_open(record, f, where, torn)
                    torn = None
                    first = False
                elif kind == "open":
                    raise _Stop(f"{where}: an 'open' record inside a file: two files were "
                                "spliced together")
                if kind == "checkpoint":
                    check.checkpoints += 1
                    if key is not None:
                        if not hmac.compare_digest(
                                str(record.get("mac", "")),
                                checkpoint_mac(key, chain, seq, record["prev"])):
                            raise _Stop(f"{where}: checkpoint {seq}'s signature is wrong: the "
                                        "chain up to it was rebuilt by someone without the key")
                        check.macs += 1
                elif kind == "gap":
                    check.gaps.append(
                        f"{where}: {record.get('dropped')} records lost from "
                        f"{record.get('from')} to {record.get('to')}: {record.get('reason')}")
                if seq == head_seq:
                    head_h = record["h"]
                prev, expected = record["h"], seq + 1
                check.records, check.last_seq = check.records + 1, seq
            if torn is not None and index == len(files) - 1:
                check.notes.append(
                    f"{torn['file']} ends in an incomplete record ({torn['bytes']} bytes): the "
                    "writer stopped in the middle of it, or is writing it now")
        _check_head(check, head, head_h, key)
    except _Stop as stop:
        check.problem = str(stop)
    return check


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
                key: bytes | None) -> None:
    if head is None:
        check.notes.append(f"no {check.chain}.head: records cut off the end could not be seen")
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
