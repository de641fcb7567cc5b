"""A crawler built on a headless browser: Playwright driving Debian's Chromium headless
through `sonicshield demo` (tests/crawlers/runs.py, headless_crawl).

It walks the store as a listener would, plays each track in its page with the browser's own
Range requests and takes each FLAC through the browser's request API. Its user agent says
`HeadlessChrome`: the browser's own word that nobody is listening. It gets pages, covers and
30-second previews, and no byte-exact track. (Real listeners' browsers run headful, in
tests/test_real_clients.py.)
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT, free_port, wait_for_port
from .crawlers.runs import MissingProgram, headless_crawl


@pytest.fixture
def demo(tmp_path: Path, media_dir: Path) -> Iterator[str]:
    ports = [free_port() for _ in range(3)]
    log = (tmp_path / "demo.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "demo", "--port", str(ports[0]), "--store-port",
         str(ports[1]), "--admin-port", str(ports[2]), "--cache", str(media_dir)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", ports[0], timeout=60, proc=proc)
        yield f"http://127.0.0.1:{ports[0]}"
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    assert "Traceback" not in (tmp_path / "demo.log").read_text()


@pytest.mark.slow
def test_a_headless_chromium_crawler_takes_no_real_audio(demo: str, media_dir: Path):
    originals = {hashlib.sha256(p.read_bytes()).hexdigest(): p.name
                 for p in media_dir.iterdir() if p.suffix in (".mp3", ".flac")}
    try:
        bodies, played, flacs = headless_crawl(demo)
    except MissingProgram as exc:
        pytest.fail(str(exc))
    assert played >= 1, "no preview played: the crawler did not reach the audio"
    assert flacs == 6, "the crawler did not reach every FLAC: the test would prove little"
    real = sorted({originals[h] for b in bodies
                   if (h := hashlib.sha256(b).hexdigest()) in originals})
    assert real == [], f"the headless crawler took real tracks: {real}"
