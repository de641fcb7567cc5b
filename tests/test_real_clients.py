"""Ground truth from the real programs: each plays (and where it can, downloads) through
SonicShield with the shipped rules in front of the demo store, and gets the store's bytes:
never refused, tarpitted or served a variant.

Desktop Chromium, Firefox ESR and WebKitGTK (Epiphany) run headful on an Xvfb screen with a
PulseAudio null sink, each with its own user agent; VLC, mpv and gPodder run as an
unprivileged user (tests/clients/programs.py). What each one sends is recorded in
tests/fixtures/clients/ (tests/test_header_profiles.py). The access log of the proxy is the
judge of what was served: every line of the program's requests must be the real response.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .clients import programs
from .conftest import ROOT, RULES_DIR, free_port, wait_for_port

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
            pytest.fail(f"{binary} is required (apt-get install xvfb pulseaudio); .ci/run "
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
}


@pytest.mark.parametrize("program", sorted(SESSIONS))
def test_a_real_listener_gets_the_real_audio(program, store, desk, spawn_proxy, media_dir,
                                             tmp_path):
    proxy = spawn_proxy(store, rules_dir=RULES_DIR,
                        extra=f"audio: {{cache_dir: {tmp_path / 'variants'}}}\n")
    try:
        session = SESSIONS[program](proxy.url, desk, tmp_path)
    finally:
        programs.remove_homes(tmp_path)
    proxy.stop()
    lines = [a for a in access(proxy.log) if a["path"] != "/favicon.ico"]
    assert any(a.get("content") == "audio" for a in lines), f"{program} fetched no audio"
    wrong = [(a["path"], a["status"], a["action"], a["variant"], a["verdict"],
              a.get("headers"), a.get("flags")) for a in lines
             if a["action"] != "allow" or a["variant"] != "upstream" or a["status"] >= 400]
    assert wrong == [], f"{program} was not given the real thing"
    for path, body in (session.saved or {}).items():  # what it saved is the store's file
        name = path.rsplit("/", 1)[1]
        assert body == (media_dir / name).read_bytes(), path
