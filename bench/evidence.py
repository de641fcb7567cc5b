"""The evidence log's two targets.

`python -m bench.evidence` measures:

0. the writer's CPU time per record (ChainWriter.flush on batches of 5,000).
1. verify: the real writer writes 1,000,000 exchange records (GPTBot refusals, as the proxy
   would record them); then `sonicshield evidence verify` reads the chain back, in its own
   process: wall time, records per second.
2. the writer's cost to listeners: SonicShield (shipped rules, evidence on) runs in this process
   in front of a store in another; a listener process sends 1 KiB page requests at a fixed
   rate (300/s, open loop) and times each. The run is cut into 2-second phases, writer off and
   on in turn (on: a task inside the proxy hands the evidence writer 5,000 records a second,
   as a refused crawler swarm would), 12 of each in one listener run, so that the machine's
   own hiccups fall on both sides alike. Listener p50 and p99, writer off and on, pooled over
   the phases; and the same figures for two halves of the "off" phases (every other one), the
   spread a difference has to exceed to be the writer's. Two runs, each followed by:
3. the control: the same alternating run with no evidence at all, where the "on" phases run
   a plain busy loop in a process of its own, as much CPU time every FLUSH seconds as the
   writer process spends on a batch (step 0's figure times RATE). What it does to the
   listener is what this machine does when that much CPU goes to anything beside the proxy,
   however the work is written.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from proxy.app import build_app, start_runner
from proxy.app_keys import EVIDENCE, ROBOTS, RULES
from proxy.evidence.writer import FLUSH, EvidenceLog
from proxy.exchange import Action, Client, ContentKind, Exchange, Signals, Verdict
from proxy.rules import LiveRules, load_rules
from proxy.server import new_event_loop
from proxy.settings import (
    AdminSettings,
    AudioSettings,
    EvidenceSettings,
    Limits,
    Listen,
    LogSettings,
    Settings,
    UpstreamSettings,
)

from .flood import free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
RECORDS = 1_000_000
RATE = 5000  # evidence records a second, in the "on" phases
LISTEN_RATE = 300  # listener requests a second
PHASE_S, PHASES = 2.0, 12  # seconds a phase; phases of each state a run
SETTLE_S = 0.25  # seconds after a switch whose requests are left out
GPTBOT = "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)"
STORE = '''
import sys
from aiohttp import web
async def page(request):
    return web.Response(body=b"x" * 1024, content_type="text/html")
app = web.Application()
app.router.add_get("/{tail:.*}", page)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
'''


# the control's "on" load: BURST seconds of busy loop every FLUSH seconds in the odd phases
BURNER = '''
import sys, time
start, until, phase_s, burst, every = map(float, sys.argv[1:6])
tick = time.monotonic()
while tick < until:
    if tick >= start and int((tick - start) // phase_s) % 2 == 1:
        end = time.monotonic() + burst
        while time.monotonic() < end:
            pass
    tick += every
    time.sleep(max(0.0, tick - time.monotonic()))
'''
Load = Callable[[Callable[[float], bool], float, float], Awaitable[int]]


def refused(i: int) -> Exchange:
    ip = f"198.51.{i // 250 % 250}.{i % 250}"
    ex = Exchange(id=f"{i:016x}", client=Client(ip, ip, False, "http", "store.example"),
                  method="GET", path=f"/stream/track-{i % 40}.mp3", query="")
    ex.signals = Signals(content=ContentKind.AUDIO, ua=GPTBOT, ua_class="ai-crawler",
                         agent="GPTBot", operator="OpenAI", purpose="training",
                         robots="violated-after-reading")
    ex.verdict = Verdict(Action.BLOCK, "rules/20-ai-crawlers.yaml:10 ai-crawler-audio", "3f9a1c")
    ex.status, ex.bytes_out = 403, 231
    return ex


async def write_million(folder: Path) -> float:
    from prometheus_client import CollectorRegistry

    from proxy.metrics import Metrics
    from proxy.robots import build_canonical

    robots = build_canonical("User-agent: *\nDisallow: /cart\n", ["GPTBot"])
    log = EvidenceLog(EvidenceSettings(dir=folder, fsync="never", allowed_sample=0.0), "main",
                      Metrics(CollectorRegistry()))
    await log.start()
    started = time.perf_counter()
    for i in range(RECORDS):
        log.submit(refused(i), robots, None, False)
        if i % 5000 == 4999:
            await log.flush()
    await log.aclose()
    return time.perf_counter() - started


def writer_cpu() -> float:
    """The writer process's CPU time per exchange record: ChainWriter.flush (what the writer
    process runs for each batch) on batches of 5,000 GPTBot refusals with the shipped rights
    declarations, in this process, CPU time of 5 batches after one to warm up."""
    from proxy.evidence.writer import Batch, ChainWriter, _row
    from proxy.robots import build_canonical

    rights = load_rules(ROOT / "rules").rights
    robots = build_canonical("User-agent: *\nDisallow: /cart\n", ["GPTBot"])
    with tempfile.TemporaryDirectory() as tmp:
        writer = ChainWriter(EvidenceSettings(dir=Path(tmp), fsync="never"), "main", None)
        writer.take_chain()
        total = 0.0
        for k in range(6):
            rows = [_row("verdict", refused(k * 5000 + i), robots, rights) for i in range(5000)]
            batch = Batch(b"[" + b",".join(rows) + b"]", len(rows), {robots.sha256: robots.text},
                          {id(rights): rights} if rights else {}, None, 0, False)
            started = time.process_time()
            writer.flush(batch)
            if k:  # the first batch warms up
                total += time.process_time() - started
        writer.release()
    print(f"writer CPU: {total / 25_000 * 1e6:.1f} us a record (5 batches of 5,000)")
    return total / 25_000


def verify_million() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        took = asyncio.run(write_million(folder))
        size = sum(p.stat().st_size for p in folder.glob("*.jsonl"))
        files = len(list(folder.glob("*.jsonl")))
        print(f"wrote {RECORDS:,} records ({size / 1e6:.0f} MB in {files} files) in "
              f"{took:.1f} s: {RECORDS / took:,.0f} records/s through the writer process")
        for run in range(3):
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "proxy", "evidence", "verify", "--dir",
                                  str(folder)], capture_output=True, text=True, cwd=ROOT)
            took = time.perf_counter() - started
            print(f"verify run {run + 1}: {took:.1f} s ({RECORDS / took:,.0f} records/s), exit "
                  f"{out.returncode}: {out.stdout.splitlines()[0]}")


async def listener_latency(url: str, seconds: float) -> list[tuple[float, float]]:
    """[sent (time.monotonic()), latency] of each request of an open-loop listener."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.listener", url, str(LISTEN_RATE), str(seconds),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return [(sent, latency) for sent, latency in json.loads(out)]


async def feed(log: EvidenceLog, app: web.Application, on: Callable[[float], bool],
               until: float) -> int:
    """RATE records a second into the writer, in 10 ms steps, whenever `on(now)`."""
    ruleset = app[RULES].current
    robots = app[ROBOTS].canonical(ruleset.robots_disallowed, ruleset.robots_declarations)
    swarm = [refused(i) for i in range(RATE)]
    step, sent, tick = RATE // 100, 0, time.monotonic()
    while tick < until:
        if on(tick):
            for ex in swarm[sent % RATE:sent % RATE + step]:
                log.submit(ex, robots, ruleset.rights, False)
            sent += step
        tick += 0.01  # a fixed grid: a late step is made up at once, not lost
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
    return sent


async def burn(burst: float, start: float, until: float) -> int:
    """The control: BURNER in its own process, `burst` seconds of CPU every FLUSH seconds in
    the "on" phases; no record is fed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BURNER, str(start), str(until), str(PHASE_S), str(burst),
        str(FLUSH))
    await proc.wait()
    return 0


async def alternating(url: str, load: Load) -> tuple[int, dict[int, list[float]]]:
    """One listener run through PHASES off and PHASES on phases, in turn, `load` applied in
    the "on" ones: the records fed, and the listener's latencies by phase (even: off, odd:
    on)."""
    # the listener starts sending 0.2 s after it starts (bench/listener.py); its start-up is
    # not part of any phase
    start = time.monotonic() + 1.5
    seconds = 2 * PHASES * PHASE_S

    def phase(t: float) -> int:
        return int((t - start) // PHASE_S)

    listening = asyncio.create_task(listener_latency(url, seconds + 2.0))
    sent = await load(lambda t: t >= start and phase(t) % 2 == 1, start, start + seconds)
    by_phase: dict[int, list[float]] = {}
    for t, latency in await listening:
        # what is sent just after a switch is left out: an "on" phase's last batch is still
        # being written then
        if 0 <= phase(t) < 2 * PHASES and t - start - phase(t) * PHASE_S >= SETTLE_S:
            by_phase.setdefault(phase(t), []).append(latency)
    return sent, by_phase


def _stats(by_phase: dict[int, list[float]], phases: list[int]) -> str:
    latencies = [latency for p in phases for latency in by_phase[p]]
    q = statistics.quantiles(latencies, n=100)
    return f"{len(latencies)} pages, p50 {q[49] * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms"


async def writer_cost(folder: Path, per_record: float) -> None:
    """Writer and control runs in turn, two of each; `per_record`: the writer's CPU seconds
    a record (the control's dose)."""
    store_port, proxy_port = free_port(), free_port()
    (folder / "store.py").write_text(STORE)
    store = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, str(folder / "store.py"), str(store_port)])
    try:
        await asyncio.to_thread(wait_port, store_port, store)
        settings = Settings(
            listen=(Listen("127.0.0.1", proxy_port),),
            upstream=UpstreamSettings(url=f"http://127.0.0.1:{store_port}"),
            rules_dir=ROOT / "rules", admin=AdminSettings(listen=None),
            log=LogSettings(access_log=False),
            # every listener request comes from 127.0.0.1: a per-client cap would answer 429
            # when a stall leaves several of them open at once
            limits=Limits(streams_per_client=0),
            audio=AudioSettings(cache_dir=folder / "variants"),
            evidence=EvidenceSettings(dir=folder / "evidence"))
        app = build_app(settings, LiveRules(load_rules(settings.rules_dir)))
        runner = await start_runner(app, settings)
        await web.TCPSite(runner, "127.0.0.1", proxy_port).start()
        gc.freeze()  # as proxy.server.run does once it listens
        url = f"http://127.0.0.1:{proxy_port}/album/a"
        log = app[EVIDENCE]
        burst = per_record * RATE * FLUSH
        try:
            for run in range(4):
                before = log.seq
                if run % 2 == 0:
                    sent, by_phase = await alternating(
                        url, lambda on, _, until: feed(log, app, on, until))
                    await log.flush()
                    print(f"writer run {run // 2 + 1}: records fed {sent / (PHASES * PHASE_S):,.0f}"
                          f"/s in the on phases, written {log.seq - before:,}", flush=True)
                else:
                    sent, by_phase = await alternating(
                        url, lambda on, start, until: burn(burst, start, until))
                    print(f"control run {run // 2 + 1}: no records; in the on phases a busy "
                          f"loop of {burst * 1e3:.1f} ms every {FLUSH * 1e3:.0f} ms", flush=True)
                off = [p for p in by_phase if p % 2 == 0]
                on = [p for p in by_phase if p % 2 == 1]
                print(f"  off: {_stats(by_phase, off)}")
                print(f"  on : {_stats(by_phase, on)}")
                print(f"  off, halves: {_stats(by_phase, off[0::2])}; "
                      f"{_stats(by_phase, off[1::2])}", flush=True)
        finally:
            await runner.cleanup()
    finally:
        store.terminate()
        await asyncio.to_thread(store.wait, 30)


def main() -> None:
    per_record = writer_cpu()
    verify_million()
    with tempfile.TemporaryDirectory() as tmp, asyncio.Runner(
            loop_factory=new_event_loop) as runner:
        runner.run(writer_cost(Path(tmp), per_record))


if __name__ == "__main__":
    main()
