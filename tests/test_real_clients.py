"""Ground truth from the real programs: each plays (and where it can, downloads) through
SonicShield with the shipped rules in front of the demo store, and gets the store's bytes:
never refused, tarpitted or served a variant.

Desktop Chromium, Firefox ESR and WebKitGTK (Epiphany) run headful on an Xvfb screen with a
PulseAudio null sink, each with its own user agent; VLC, mpv, gPodder, Newsboat and a
Mastodon-style link preview (http.rb) run as an unprivileged user (tests/clients/programs.py).
What each one sends is recorded in tests/fixtures/clients/ (tests/test_header_profiles.py).
The access log of the proxy is the judge of what was served: every line of the program's
requests must be the real response.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .clients import programs
from .conftest import ROOT, RULES_DIR, free_port, metric_sum, wait_for_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(media_dir: Path) -> Iterator[str]:
    """The demo store on its own (`sonicshield demo --store-only`)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "demo", "--store-only", "--store-port", str(port),
         "--cache", str(media_dir)], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, timeout=120, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[programs.Desktop]:
    for binary in ("Xvfb", "pulseaudio"):
        if subprocess.run(["which", binary], capture_output=True).returncode:
            pytest.fail(f"{binary} is required (apt-get install xvfb pulseaudio); make test "
                        "installs it")
    with programs.desktop(tmp_path_factory.mktemp("desktop")) as d:
        yield d


def access(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines()
            if line.startswith("{") and '"event":"access"' in line]


SESSIONS: dict[str, Callable[[str, programs.Desktop, Path], programs.Session]] = {
    "chromium": lambda base, desk, tmp: programs.chromium(base, desk, tmp),
    "firefox": lambda base, desk, tmp: programs.firefox(base, desk, tmp / "profile"),
    "webkit": lambda base, desk, tmp: programs.webkit(base, desk, tmp / "home", free_port()),
    "vlc": lambda base, desk, tmp: programs.vlc(base, tmp / "home"),
    "mpv": lambda base, desk, tmp: programs.mpv(base, tmp / "home"),
    "gpodder": lambda base, desk, tmp: programs.gpodder(base, tmp / "home"),
    "newsboat": lambda base, desk, tmp: programs.newsboat(base, tmp / "home"),
    "link-preview": lambda base, desk, tmp: programs.link_preview(base, tmp / "home"),
}


# what each program must have fetched for the test to prove anything (audio unless named)
FETCHES = {"newsboat": "feed", "link-preview": "image"}


def wait_for_trap_hit(admin_port: int, within: float = 60.0) -> None:
    """Until sonicshield_trap_hits_total counts one (counted as the trap is asked for; its
    access line comes only when the tarpit ends)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
            if metric_sum(r.read().decode(), "sonicshield_trap_hits_total") >= 1:
                return
        time.sleep(0.1)
    raise TimeoutError(f"no trap hit after {within} s")


def crawl(base: str, folder: Path, wait: float) -> subprocess.Popen:
    """wget with robots.txt off, mirroring the pages (and so following the trap link) from
    the same address as the listener; `wait` seconds between its requests. Bounded by its
    depth and by the caller's wait."""
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["wget", "-e", "robots=off", "--mirror", "--level=2", f"--wait={wait}", "--tries=1",
         "--timeout=10", "--no-verbose", "--reject=mp3,flac,png", base + "/"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("neighbour", ["alone", "after-and-beside-a-crawler"])
@pytest.mark.parametrize("program", sorted(SESSIONS))
def test_a_real_listener_gets_the_real_audio(program, neighbour, store, desk, spawn_proxy,
                                             media_dir, tmp_path):
    """Also when a crawler on the same address took the trap moments before and crawls on
    while the listener plays: what a crawler did is its own (Client.key), not its
    neighbours'."""
    # a short drain: tarpitted crawler connections need not be waited for at the end
    proxy = spawn_proxy(store, rules_dir=RULES_DIR, admin=True,
                        extra=f"audio: {{cache_dir: {tmp_path / 'variants'}}}\n"
                              "timeouts: {shutdown_grace: 2}\n")
    beside = None
    if neighbour != "alone":
        # until it has taken the trap (its pages are tarpitted from then on, so a whole
        # mirror would take hours): polled, bounded
        before = crawl(proxy.url, tmp_path / "before", 0)
        try:
            wait_for_trap_hit(proxy.admin_port)
        finally:
            before.kill()
            before.wait(10)
        beside = crawl(proxy.url, tmp_path / "beside", 0.3)
    try:
        session = SESSIONS[program](proxy.url, desk, tmp_path)
    finally:
        programs.remove_homes(tmp_path)
        if beside is not None:
            beside.kill()
            beside.wait(10)
    proxy.stop()
    log = access(proxy.log)
    if neighbour != "alone":
        crawler = [a for a in log if a.get("ua", "").startswith("Wget")]
        assert any(a["path"].startswith("/archive-complete/") for a in crawler)
        assert any(a["action"] == "tarpit" for a in crawler)  # the crawler is still caught
    lines = [a for a in log if a["path"] != "/favicon.ico"
             and not a.get("ua", "").startswith("Wget")]
    wanted = FETCHES.get(program, "audio")
    assert any(a.get("content") == wanted for a in lines), f"{program} fetched no {wanted}"
    wrong = [(a["path"], a["status"], a["action"], a["variant"], a["verdict"],
              a.get("headers"), a.get("flags")) for a in lines
             if a["action"] != "allow" or a["variant"] != "upstream" or a["status"] >= 400]
    assert wrong == [], f"{program} was not given the real thing"
    for path, body in (session.saved or {}).items():  # what it saved is the store's file
        name = path.rsplit("/", 1)[1]
        assert body == (media_dir / name).read_bytes(), path
