"""A real listener: headless Chromium (Debian's) through `sonicshield demo`, via Playwright.

It loads the artist page, opens an album, plays a track with the browser's own Range requests,
seeks, downloads the FLAC, and checks that every byte it received is the store's byte.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from .conftest import ROOT, free_port, wait_for_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--mute-audio",
]


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
def test_listener_in_chromium_gets_the_real_thing(demo: str, media_dir: Path, tmp_path: Path):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is required (apt-get install chromium); .ci/run installs it")
    track = "harbour-at-dawn"
    mp3 = (media_dir / f"{track}.mp3").read_bytes()
    media: list[tuple[int, str | None, bytes | None]] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()

        def on_response(response) -> None:
            if "/stream/" in response.url:
                try:
                    body = response.body()
                except PlaywrightError:  # Chromium keeps no body for some media responses
                    body = None
                media.append((response.status, response.headers.get("content-range"), body))

        page.on("response", on_response)
        page.goto(demo + "/")
        page.click("text=First Light")
        page.wait_for_url("**/album/first-light")
        assert page.locator("audio").count() == 3

        player = f"document.querySelector('audio[data-track=\"{track}\"]')"
        page.evaluate(f"{player}.play()")
        page.wait_for_function(f"{player}.currentTime > 1.0", timeout=30_000)
        assert abs(page.evaluate(f"{player}.duration") - 62) < 0.5
        page.evaluate(f"{player}.currentTime = 40")  # a seek, as a listener skips ahead
        page.wait_for_function(f"{player}.currentTime > 40.5", timeout=30_000)
        assert page.evaluate(f"{player}.error") is None

        # the bytes the browser gets for the stream are the store's bytes
        digest = page.evaluate(
            """async (url) => {
                const buf = await (await fetch(url)).arrayBuffer();
                const hash = await crypto.subtle.digest('SHA-256', buf);
                return Array.from(new Uint8Array(hash))
                    .map(b => b.toString(16).padStart(2, '0')).join('');
            }""",
            f"{demo}/stream/{track}.mp3",
        )
        assert digest == hashlib.sha256(mp3).hexdigest()

        with page.expect_download() as info:
            page.click(f"a[href='/download/{track}.flac']")
        saved = tmp_path / "download.flac"
        info.value.save_as(saved)
        assert saved.read_bytes() == (media_dir / f"{track}.flac").read_bytes()
        browser.close()

    # every media response the player got was real audio, byte-exact where Chromium kept it;
    # on loopback Chromium takes the whole file in its first `Range: bytes=0-` request
    assert any(status == 206 and body for status, _, body in media), media
    for status, content_range, body in media:
        assert status in (200, 206)
        if body is not None and content_range:
            start, end = content_range.split()[1].split("/")[0].split("-")
            assert body == mp3[int(start) : int(end) + 1]
        elif body is not None:
            assert body == mp3[: len(body)]
