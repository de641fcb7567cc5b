"""What each crawler of the acceptance matrix got: `python -m tests.crawlers.table`.

Every crawler of tests/crawlers/runs.py runs alone against a fresh `sonicshield demo` (the
shipped rules, fresh client state), and the demo's own access log, read by `sonicshield
summary`, says what it was served. Prints the Markdown table of docs/listeners.md. Needs the
packages `make test` installs; sends traffic only to loopback.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import subprocess
import sys
import tempfile
from pathlib import Path

from proxy.demo.catalogue import ensure_catalogue
from proxy.summary import Summary, access_lines, summarise

from ..conftest import free_port, wait_for_port
from . import runs

ROOT = Path(__file__).resolve().parents[2]


def row(name: str, media: Path, work: Path) -> str:
    run, what = runs.CRAWLERS[name]
    ports = [free_port() for _ in range(3)]
    log = work / f"{name}.log"
    with log.open("wb") as f:
        demo = subprocess.Popen(
            [sys.executable, "-m", "proxy", "demo", "--port", str(ports[0]), "--store-port",
             str(ports[1]), "--admin-port", str(ports[2]), "--cache", str(media)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=f)
        try:
            base = f"http://127.0.0.1:{ports[0]}"
            # the store renders its catalogue first; the proxy listens once both are up
            wait_for_port("127.0.0.1", ports[1], timeout=120, proc=demo)
            wait_for_port("127.0.0.1", ports[0], timeout=60, proc=demo)
            bodies = asyncio.run(run(base, work / name))
        finally:
            demo.terminate()
            demo.wait(30)
    originals = {hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in media.iterdir() if p.suffix in (".mp3", ".flac")}
    real = sum(hashlib.sha256(b).hexdigest() in originals for b in bodies)
    summary = Summary()
    lines = list(access_lines(io.StringIO(log.read_text(errors="replace")), summary))
    summarise(lines, summary)
    audio = collections.Counter(li.served for li in lines if li.rule and li.bytes and
                                li.served not in ("upstream", "robots.txt", "declaration"))
    rules = collections.Counter(li.rule.rsplit(" ", 1)[-1] for li in lines
                                if not li.rule.endswith("default-allow"))
    return (f"| `{name}` | {what} | {summary.lines} | {real} of {len(bodies)} | "
            f"{', '.join(f'{k} {n}' for k, n in audio.most_common()) or '-'} | "
            f"{', '.join(f'{k} {n}' for k, n in rules.most_common()) or '-'} |")


def main(names: list[str]) -> None:
    media = ensure_catalogue(Path(tempfile.gettempdir()) / "sonicshield-table-media")
    work = Path(tempfile.mkdtemp(prefix="sonicshield-table-"))
    print("| run | crawler | requests | real tracks of audio bodies | variants served |"
          " rules that decided (not default-allow) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names or list(runs.CRAWLERS):
        print(row(name, media, work), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
