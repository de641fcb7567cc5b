"""`make bench`: SonicShield against nginx on this machine, side by side in the same run.

The upstream is nginx serving static files (a 1 KiB page, a 10 MiB audio file). wrk measures
five paths to it: direct, nginx proxy_pass with upstream keepalive, a bare aiohttp proxy
(bench/bare_proxy.py), SonicShield with the default rules and 1 worker, and with 2 workers.
Runs are interleaved (every path once per round) and the median of the rounds is reported,
with proxy CPU per request from the proxy processes' own CPU time. Then an open-loop listener
asks for the page through each path but SonicShield's 1-worker one at half SonicShield's
2-worker saturation. Everything listens on 127.0.0.1 and every run is bounded in time.

Usage: python -m bench [--rounds N] [--seconds S] [--connections C] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"

NGINX_CONF = """
{user}
worker_processes {workers};
daemon off;
pid {tmp}/nginx-{name}.pid;
error_log {tmp}/nginx-{name}.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body-{name};
    proxy_temp_path {tmp}/proxy-{name};
    fastcgi_temp_path {tmp}/fcgi-{name};
    uwsgi_temp_path {tmp}/uwsgi-{name};
    scgi_temp_path {tmp}/scgi-{name};
    types {{ text/html html; audio/mpeg mp3; }}
    keepalive_requests 1000000;
    {server}
}}
"""
ORIGIN_SERVER = "server {{ listen 127.0.0.1:{port}; root {root}; sendfile on; }}"
PROXY_SERVER = """
    upstream store {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://store;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_buffering off;
        }}
    }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def wait_for_listeners(proc: subprocess.Popen[bytes], port: int, count: int) -> None:
    """Until `count` child processes each hold a listening socket on port (SO_REUSEPORT)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listening = 0
        for child in psutil.Process(proc.pid).children():
            try:
                conns = child.net_connections(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            listening += any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                             for c in conns)
        if listening >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{count} workers did not listen on {port}")


def start_nginx(tmp: Path, name: str, server: str, workers: int = 1) -> subprocess.Popen[bytes]:
    conf = tmp / f"nginx-{name}.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, workers=workers, tmp=tmp, name=name,
                                      server=server))
    return subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# wrk hammering one track from one address at gigabytes a second is, by every behaviour
# signal, a crawler: the shipped rules would hand it a decoy. The audio runs measure the path
# a listener's real audio takes, so one rule ahead of the shipped ones allows the bench's
# track (it is still classified like any other request).
BENCH_RULE = """version: 1
rules:
  - name: bench-listener
    description: The benchmark's audio client, measured as a listener.
    match: {path: /listener/*}
    action: allow
"""


def bench_rules(tmp: Path) -> Path:
    rules = tmp / "rules"
    if not rules.exists():
        shutil.copytree(ROOT / "rules", rules)
        (rules / "00-bench.yaml").write_text(BENCH_RULE)
    return rules


def start_sonicshield(tmp: Path, upstream: int, port: int, workers: int) -> subprocess.Popen[bytes]:
    conf = tmp / f"sonicshield-{workers}.yaml"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nupstream:\n  url: http://127.0.0.1:{upstream}\n"
        f"rules_dir: {bench_rules(tmp)}\nworkers: {workers}\nadmin:\n  listen: null\n"
        "log:\n  access_log: false\n"
        # every wrk connection comes from 127.0.0.1: a per-client cap would answer 429
        "limits:\n  streams_per_client: 0\n"
    )
    return subprocess.Popen([sys.executable, "-m", "proxy", "run", "--config", str(conf)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class Result:
    rps: float
    mb_s: float
    p99_ms: float
    cpu_us_per_req: float | None


def _find(pattern: str, out: str) -> str:
    m = re.search(pattern, out)
    if m is None:
        raise RuntimeError(f"unexpected wrk output (no {pattern!r}):\n{out}")
    return m.group(1)


def _seconds(text: str) -> float:
    value, unit = _find(r"^([\d.]+)(us|ms|s|m|h)$", text), _find(r"(us|ms|s|m|h)$", text)
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def _bytes(text: str) -> float:
    value, unit = _find(r"^([\d.]+)", text), _find(r"([KMG]?B)$", text)
    return float(value) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
    return total


def run_wrk(url: str, seconds: int, connections: int, cpu_pids: list[int]) -> Result:
    before = cpu_seconds(cpu_pids) if cpu_pids else 0.0
    out = subprocess.run(
        [WRK, "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency", url],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    cpu = cpu_seconds(cpu_pids) - before if cpu_pids else None
    requests = int(_find(r"(\d+) requests in", out))
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    transfer = _bytes(_find(r"Transfer/sec:\s+(\S+)", out))
    p99 = _seconds(_find(r"\n\s+99%\s+(\S+)", out))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    if bad or errors:
        raise RuntimeError(f"{url}: not every answer was a success, the run is void:\n{out}")
    return Result(rps=rps, mb_s=transfer / 1e6, p99_ms=p99 * 1000,
                  cpu_us_per_req=None if cpu is None else cpu / requests * 1e6)


def listener_p99(url: str, rate: float, seconds: int) -> float:
    """p99 ms of an open-loop listener (bench/listener.py) at `rate` requests a second."""
    out = subprocess.run([sys.executable, "-m", "bench.listener", url, f"{rate:.1f}",
                          str(seconds)], cwd=ROOT, capture_output=True, text=True,
                         timeout=seconds + 120, check=True).stdout
    times = sorted(latency for _, latency in json.loads(out))
    return times[min(len(times) - 1, int(0.99 * len(times)))] * 1000.0


def median(results: list[Result]) -> Result:
    cpu = [r.cpu_us_per_req for r in results if r.cpu_us_per_req is not None]
    return Result(
        rps=statistics.median(r.rps for r in results),
        mb_s=statistics.median(r.mb_s for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        cpu_us_per_req=statistics.median(cpu) if cpu else None,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    for tool in (NGINX, WRK):
        if not Path(tool).exists():
            print(f"bench: {tool} not found (apt-get install nginx-light wrk)", file=sys.stderr)
            return 2

    tmp = Path(tempfile.mkdtemp(prefix="sonicshield-bench-"))
    root = tmp / "www"
    root.mkdir()
    (root / "page.html").write_bytes(b"<!doctype html><title>t</title>" + b"x" * (1024 - 31))
    (root / "listener").mkdir()
    (root / "listener" / "track.mp3").write_bytes(os.urandom(10 * 1024 * 1024))

    ports = {name: free_port() for name in ("origin", "nginx", "bare", "ss1", "ss2")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["origin"] = start_nginx(tmp, "origin", ORIGIN_SERVER.format(
            port=ports["origin"], root=root), workers=1)
        procs["nginx"] = start_nginx(tmp, "proxy", PROXY_SERVER.format(
            port=ports["nginx"], upstream=ports["origin"]), workers=1)
        procs["bare"] = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_proxy", f"http://127.0.0.1:{ports['origin']}",
             str(ports["bare"])], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs["ss1"] = start_sonicshield(tmp, ports["origin"], ports["ss1"], 1)
        for name in ("origin", "nginx", "bare", "ss1"):
            wait_for_port(ports[name], procs[name])

        paths = {"page": "/page.html", "audio": "/listener/track.mp3"}
        # (label, port name, proxy processes whose CPU counts)
        subjects = [("upstream directly", "origin", []),
                    ("nginx proxy_pass", "nginx", ["nginx"]),
                    ("bare aiohttp proxy", "bare", ["bare"]),
                    ("SonicShield, 1 worker", "ss1", ["ss1"]),
                    ("SonicShield, 2 workers", "ss2", ["ss2"])]
        results: dict[tuple[str, str], list[Result]] = {}
        for round_ in range(args.rounds):
            for label, port_name, cpu_names in subjects:
                if port_name == "ss2":
                    # the two SonicShield variants share nothing; run one at a time so a
                    # spare proxy's idle loop costs nothing during the other's runs
                    procs["ss1"].send_signal(signal.SIGSTOP)
                    procs["ss2"] = start_sonicshield(tmp, ports["origin"], ports["ss2"], 2)
                    wait_for_listeners(procs["ss2"], ports["ss2"], 2)
                for kind, path in paths.items():
                    pids = [procs[n].pid for n in cpu_names]
                    url = f"http://127.0.0.1:{ports[port_name]}{path}"
                    subprocess.run([WRK, "-t2", f"-c{args.connections}", "-d1s", url],  # warm-up
                                   capture_output=True, timeout=60, check=True)
                    r = run_wrk(url, args.seconds, args.connections, pids)
                    results.setdefault((label, kind), []).append(r)
                    print(f"round {round_ + 1} {label:24} {kind:5} {r.rps:9.0f} req/s "
                          f"{r.mb_s:8.1f} MB/s p99 {r.p99_ms:7.2f} ms", flush=True)
                if port_name == "ss2":
                    procs["ss2"].send_signal(signal.SIGTERM)
                    procs["ss2"].wait(30)
                    procs["ss1"].send_signal(signal.SIGCONT)

        # the p99 a listener sees at half the load that saturates SonicShield (2 workers),
        # through each path at the same rate, interleaved, median of the rounds; the bare
        # aiohttp proxy (one process) shows what the stack itself adds at that rate
        rate = median(results[("SonicShield, 2 workers", "page")]).rps / 2
        procs["ss1"].send_signal(signal.SIGSTOP)
        procs["ss2"] = start_sonicshield(tmp, ports["origin"], ports["ss2"], 2)
        wait_for_listeners(procs["ss2"], ports["ss2"], 2)
        latency: dict[str, list[float]] = {}
        for round_ in range(args.rounds):
            for label, port_name in (("upstream directly", "origin"),
                                     ("nginx proxy_pass", "nginx"),
                                     ("bare aiohttp proxy", "bare"),
                                     ("SonicShield, 2 workers", "ss2")):
                url = f"http://127.0.0.1:{ports[port_name]}{paths['page']}"
                p99 = listener_p99(url, rate, args.seconds)
                latency.setdefault(label, []).append(p99)
                print(f"round {round_ + 1} {label:24} at {rate:6.0f} req/s: p99 "
                      f"{p99:6.2f} ms", flush=True)
        procs["ss2"].send_signal(signal.SIGTERM)
        procs["ss2"].wait(30)
        procs["ss1"].send_signal(signal.SIGCONT)

        nginx_page = median(results[("nginx proxy_pass", "page")]).rps
        nginx_audio = median(results[("nginx proxy_pass", "audio")]).mb_s
        lines = [
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python "
            f"{platform.python_version()}; wrk -t2 -c{args.connections} -d{args.seconds}s, "
            f"median of {args.rounds} interleaved rounds.",
            "",
            "| path | 1 KiB page req/s | x nginx | p99 ms | CPU us/req | 10 MiB audio MB/s "
            "| x nginx |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label, _, _ in subjects:
            page = median(results[(label, "page")])
            audio = median(results[(label, "audio")])
            cpu = f"{page.cpu_us_per_req:.0f}" if page.cpu_us_per_req is not None else "-"
            lines.append(
                f"| {label} | {page.rps:.0f} | {page.rps / nginx_page:.2f} | {page.p99_ms:.2f} "
                f"| {cpu} | {audio.mb_s:.0f} | {audio.mb_s / nginx_audio:.2f} |"
            )
        direct = statistics.median(latency["upstream directly"])
        lines += ["", f"1 KiB page at {rate:.0f} req/s (half of SonicShield's saturation with "
                  f"2 workers), an open-loop listener (bench/listener.py), median of "
                  f"{args.rounds} rounds:", "",
                  "| path | p99 ms | p99 added ms |", "| --- | --- | --- |"]
        for label, runs in latency.items():
            p99 = statistics.median(runs)
            lines.append(f"| {label} | {p99:.2f} | {p99 - direct:+.2f} |")
        table = "\n".join(lines)
        print("\n" + table)
        if args.out:
            args.out.write_text(table + "\n")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
