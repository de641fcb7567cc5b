"""A full disk under the evidence log: the proxy keeps answering, nothing already written is
lost or changed, the loss is counted and logged once, writing resumes, and verify shows a gap.

The small disk is a tmpfs the test mounts (root with CAP_SYS_ADMIN); where mounting is not
allowed, a file-size limit (RLIMIT_FSIZE) on the proxy process plays the full disk.
"""

from __future__ import annotations

import asyncio
import re
import resource
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from proxy.cli import main

from .conftest import ROOT

RULES = ROOT / "tests" / "fixtures" / "evidence-rules"
GPTBOT = {"User-Agent": "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)"}
DISK = 96 << 10  # the size of the small disk
# the largest file the proxy may write: room for several of the writer's batches (a batch is
# written whole or not at all, and these requests come fast: about 100 in one)
FILE_LIMIT = 1 << 20


class SmallDisk:
    def __init__(self, folder: Path, kind: str) -> None:
        self.folder = folder
        self.evidence = folder / "evidence"
        self.mounted = kind == "tmpfs" and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(folder)],
            capture_output=True).returncode == 0
        if kind == "tmpfs" and not self.mounted:
            pytest.skip("mounting a tmpfs is not allowed here (the file-size limit case runs)")
        self.filler = folder / "filler"
        if self.mounted:  # most of it taken already, so the log fills the rest quickly
            self.filler.write_bytes(b"\0" * (DISK - (24 << 10)))

    def preexec(self) -> Callable[[], None] | None:
        if self.mounted:
            return None
        return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))

    def make_room(self) -> None:
        """tmpfs: free the filler. With the file-size limit the writer makes room itself, by
        starting a new file."""
        if self.mounted:
            self.filler.unlink()

    def release(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.folder)], check=False)


@pytest.fixture(params=["tmpfs", "file-size-limit"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallDisk]:
    folder = tmp_path / "small"
    folder.mkdir()
    disk = SmallDisk(folder, request.param)
    yield disk
    disk.release()


async def metric(session: aiohttp.ClientSession, admin: str, name: str) -> float:
    async with session.get(admin + "/metrics") as r:
        text = await r.text()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_a_full_disk_loses_no_written_record_and_never_stops_the_proxy(
        spawn_proxy, upstream_process, small_disk, capsys):
    proxy = spawn_proxy(
        upstream_process, admin=True, rules_dir=RULES, preexec=small_disk.preexec(),
        extra=f"evidence:\n  dir: {small_disk.evidence}\n  fsync: always\n"
              "log:\n  access_log: false\n")
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    dropped = 'sonicshield_evidence_dropped_total{reason="write-failed"}'
    gaps = 'sonicshield_evidence_records_total{kind="gap"}'
    statuses: list[int] = []
    async with aiohttp.ClientSession(headers=GPTBOT) as s:

        async def requests(n: int) -> None:
            for i in range(n):
                async with s.get(f"{proxy.url}/blocked/{len(statuses)}-{i}") as r:
                    statuses.append(r.status)

        # fill the disk: every request is refused, and so recorded (the writer reports each
        # batch after it is written, every 0.1 s: a short pause between polls lets it)
        for _ in range(200):
            await requests(10)
            if await metric(s, admin, dropped) > 0:
                break
            await asyncio.sleep(0.02)
        assert await metric(s, admin, dropped) > 0, "the disk never filled"
        written = {p: p.read_bytes() for p in small_disk.evidence.glob("*.jsonl")}
        await requests(25)  # while full
        small_disk.make_room()
        for _ in range(200):
            await requests(2)
            if await metric(s, admin, gaps) > 0:
                break
            await asyncio.sleep(0.05)
        assert await metric(s, admin, gaps) == 1, "writing never resumed"
    assert set(statuses) == {403}  # every request answered as the rules say, full disk or not
    assert proxy.stop() == 0
    for path, data in written.items():  # what was on disk is on disk still, byte for byte
        assert path.read_bytes()[:len(data)] == data
    capsys.readouterr()
    assert main(["evidence", "verify", "--dir", str(small_disk.evidence)]) == 0
    out = capsys.readouterr().out
    (gap,) = [line for line in out.splitlines() if line.startswith("  gap: ")]
    reason = "No space left on device" if small_disk.mounted else "File too large"
    assert re.fullmatch(rf"  gap: main-\d{{12}}-\d{{8}}\.jsonl:\d+: \d+ records lost from "
                        rf"\S+ to \S+: {reason}", gap), gap
    log = proxy.log
    assert log.count('"event":"evidence-write-failed"') == 1  # once a minute, not per record
    assert "Traceback" not in log
