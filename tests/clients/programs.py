"""Real listener programs from Debian's packages, each driven through one listening session.

Browsers run headful on an Xvfb screen, with their own user agents (a headless browser says
`HeadlessChrome` and skips the header checks a person's browser meets): Chromium through
Playwright (Debian's binary), Firefox ESR through puppeteer-core over WebDriver BiDi (no
Playwright build), WebKitGTK's Epiphany through WebKitWebDriver (plain W3C WebDriver: selenium
insists on a browserName that WebKitWebDriver then fails to match). VLC, mpv, gPodder,
Newsboat and the link preview (Mastodon's HTTP library, http.rb, with Mastodon's headers) run
as an unprivileged user (VLC refuses root), each with a home of its own.

Every driver takes the site's base URL and returns what it saw; the caller judges what the
site served from its own logs. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CLIENTS = Path(__file__).resolve().parent
TRACK = "harbour-at-dawn"  # on the album "First Light"; 62 s, long enough to seek to 40 s
TRACK_GUID = "QZS6X2500001"  # its ISRC, the feed item's guid
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# what a person's Chromium runs with here: no sandbox as root, no background traffic to a
# network this machine does not have; never --headless
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
NOBODY = 65534


class ProgramFailed(AssertionError):
    pass


@dataclass
class Session:
    """What a program reported: its user agent where it tells, and files it saved."""

    program: str
    ua: str = ""
    saved: dict[str, bytes] | None = None


@contextlib.contextmanager
def _daemon(name: str, args: list[str], ready: Path, env: dict[str, str] | None = None
            ) -> Iterator[None]:
    """Run `args` until the context ends, once `ready` exists (polled, 15 s at most)."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise ProgramFailed(f"{name} did not start")
        time.sleep(0.05)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def screen() -> Iterator[str]:
    """An Xvfb screen of its own; its DISPLAY value."""
    for number in range(90, 140):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(
                f"/tmp/.X{number}-lock").exists():
            break
    else:
        raise ProgramFailed("no free X display number")
    with _daemon("Xvfb", ["Xvfb", f":{number}", "-screen", "0", "1280x800x24", "-nolisten",
                          "tcp"], Path(f"/tmp/.X11-unix/X{number}")):
        yield f":{number}"


@contextlib.contextmanager
def sound(folder: Path) -> Iterator[str]:
    """A PulseAudio server with a null sink (browsers' players fail at the first frame with
    no audio output); its PULSE_SERVER value."""
    folder.mkdir(parents=True, exist_ok=True)
    socket_path = folder / "native"
    env = {**os.environ, "HOME": str(folder), "XDG_RUNTIME_DIR": str(folder)}
    with _daemon("PulseAudio", [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
            "--use-pid-file=no", "-L", "module-null-sink sink_name=listener",
            "-L", f"module-native-protocol-unix socket={socket_path} auth-anonymous=1"],
            socket_path, env):
        yield f"unix:{socket_path}"


@dataclass(frozen=True)
class Desktop:
    """A screen and a sound output, as a listener's desktop has."""

    display: str
    pulse: str

    def env(self, **more: str) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.display, "PULSE_SERVER": self.pulse, **more}


@contextlib.contextmanager
def desktop(folder: Path) -> Iterator[Desktop]:
    with screen() as display, sound(folder / "pulse") as pulse:
        yield Desktop(display, pulse)


def _as_listener(home: Path) -> dict[str, object]:
    """subprocess arguments that run a program as an unprivileged user with `home` as its
    home. As root, `home` becomes a link to a folder in the system's temporary folder that
    the user owns (pytest's own folders are closed to other users)."""
    if os.geteuid() == 0:
        real = Path(tempfile.mkdtemp(prefix="sonicshield-listener-"))
        os.chown(real, NOBODY, NOBODY)
        home.parent.mkdir(parents=True, exist_ok=True)
        home.symlink_to(real, target_is_directory=True)
        home = real
    else:
        home.mkdir(parents=True, exist_ok=True)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
           "XDG_RUNTIME_DIR": str(home)}
    if os.geteuid() != 0:
        return {"env": env}
    return {"env": env, "user": NOBODY, "group": NOBODY, "extra_groups": []}


def remove_homes(folder: Path) -> None:
    """Remove the homes _as_listener made for programs under `folder`."""
    for link in folder.rglob("*"):
        if link.is_symlink() and link.resolve().name.startswith("sonicshield-listener-"):
            shutil.rmtree(link.resolve(), ignore_errors=True)
            link.unlink()


def _run(program: str, args: list[str], timeout: float, **kwargs: object) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              check=False, **kwargs)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired as exc:
        raise ProgramFailed(f"{program} did not finish within {timeout} s") from exc
    if done.returncode != 0:
        raise ProgramFailed(f"{program} exited {done.returncode}: {done.stderr[-2000:]}")
    return str(done.stdout)


def chromium(base: str, desk: Desktop, downloads: Path) -> Session:
    """Desktop Chromium: the artist page, an album, play, seek, the FLAC download."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=False,
                                    args=CHROMIUM_ARGS, env=desk.env())
        try:
            page = browser.new_context(accept_downloads=True).new_page()
            page.goto(base + "/")
            ua = page.evaluate("navigator.userAgent")
            page.click("a[href='/album/first-light']")
            page.wait_for_url("**/album/first-light")
            player = f"document.querySelector('audio[data-track=\"{TRACK}\"]')"
            page.evaluate(f"{player}.play()")
            page.wait_for_function(f"{player}.currentTime > 1.0", timeout=30_000)
            page.evaluate(f"{player}.currentTime = 40")
            page.wait_for_function(f"{player}.currentTime > 40.5", timeout=30_000)
            if page.evaluate(f"{player}.error") is not None:
                raise ProgramFailed("Chromium's player reported an error")
            with page.expect_download() as info:
                page.click(f"a[href='/download/{TRACK}.flac']")
            saved = downloads / f"{TRACK}.flac"
            info.value.save_as(saved)
        finally:
            browser.close()
    if "HeadlessChrome" in ua:
        raise ProgramFailed("Chromium ran headless")
    return Session("chromium", ua, {f"/download/{TRACK}.flac": saved.read_bytes()})


def firefox(base: str, desk: Desktop, profile: Path) -> Session:
    """Firefox ESR: the artist page, an album, play, seek (tests/clients/firefox.mjs)."""
    if not (CLIENTS / "node_modules" / "puppeteer-core").is_dir():
        raise ProgramFailed("puppeteer-core is missing: npm ci --prefix tests/clients")
    out = _run("firefox", ["node", str(CLIENTS / "firefox.mjs"), base, TRACK, str(profile)],
               120, env=desk.env())
    result = json.loads(out.strip().splitlines()[-1])
    if not result.get("played") or result.get("error"):
        raise ProgramFailed(f"Firefox did not play: {result}")
    return Session("firefox", result["ua"])


class WebDriver:
    """The few W3C WebDriver commands a listening session needs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = ""

    def call(self, method: str, path: str, body: object = None, timeout: float = 60) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return json.loads(r.read())["value"]

    def start(self, binary: str, args: list[str]) -> None:
        caps = {"capabilities": {"alwaysMatch": {
            "webkitgtk:browserOptions": {"binary": binary, "args": args}}}}
        value = self.call("POST", "/session", caps)
        assert isinstance(value, dict)
        self.session = value["sessionId"]

    def go(self, url: str) -> None:
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def run(self, script: str) -> object:
        return self.call("POST", f"/session/{self.session}/execute/sync",
                         {"script": script, "args": []})

    def wait(self, script: str, within: float) -> None:
        deadline = time.monotonic() + within
        while not self.run(script):
            if time.monotonic() > deadline:
                raise ProgramFailed(f"WebKit: still not true after {within} s: {script}")
            time.sleep(0.2)

    def click_at(self, css: str, dx: float) -> None:
        """A real pointer click `dx` pixels in from the left edge of the element (WebKit
        plays media only after a user gesture)."""
        element = self.call("POST", f"/session/{self.session}/element",
                            {"using": "css selector", "value": css})
        assert isinstance(element, dict)
        ref = next(iter(element.values()))
        rect = self.call("GET", f"/session/{self.session}/element/{ref}/rect")
        assert isinstance(rect, dict)
        x, y = int(rect["x"] + dx), int(rect["y"] + rect["height"] / 2)
        self.call("POST", f"/session/{self.session}/actions", {"actions": [{
            "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": [{"type": "pointerMove", "x": x, "y": y, "origin": "viewport"},
                        {"type": "pointerDown", "button": 0},
                        {"type": "pointerUp", "button": 0}]}]})

    def quit(self) -> None:
        if self.session:
            with contextlib.suppress(OSError):
                self.call("DELETE", f"/session/{self.session}")


def webkit(base: str, desk: Desktop, home: Path, port: int) -> Session:
    """Epiphany (WebKitGTK) through WebKitWebDriver: the artist page, an album, play, seek."""
    home.mkdir(parents=True, exist_ok=True)
    env = desk.env(HOME=str(home), XDG_RUNTIME_DIR=str(home),
                   WEBKIT_DISABLE_SANDBOX_THIS_IS_DANGEROUS="1")
    driver_proc = subprocess.Popen(
        ["dbus-run-session", "--", "WebKitWebDriver", f"--port={port}"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    driver = WebDriver(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 20
        for attempt in range(4):  # Epiphany's first window sometimes fails to open
            try:
                driver.start("/usr/bin/epiphany-browser", ["--automation-mode"])
                break
            except OSError:
                if time.monotonic() > deadline or attempt == 3:
                    raise
                time.sleep(0.5)
        driver.go(base + "/")
        ua = str(driver.run("return navigator.userAgent"))
        driver.go(base + "/album/first-light")
        player = f"document.querySelector('audio[data-track=\"{TRACK}\"]')"
        driver.run(f"{player}.scrollIntoView(); return true")
        driver.click_at(f"audio[data-track='{TRACK}']", 16)  # its play button
        driver.wait(f"return {player}.currentTime > 1.0", 30)
        driver.run(f"{player}.currentTime = 40; return true")
        driver.wait(f"return {player}.currentTime > 40.5", 30)
        if driver.run(f"return {player}.error && {player}.error.message"):
            raise ProgramFailed("WebKit's player reported an error")
    finally:
        driver.quit()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver_proc.pid, signal.SIGTERM)
        driver_proc.wait(10)
    return Session("webkit", ua)


def vlc(base: str, home: Path) -> Session:
    """`cvlc` playing the stream URL for a few seconds, as a person pastes it into VLC."""
    _run("vlc", ["cvlc", "-q", "--play-and-exit", "--aout=dummy", "--no-video",
                 "--run-time=3", f"{base}/stream/{TRACK}.mp3"], 60, **_as_listener(home))
    return Session("vlc")


def mpv(base: str, home: Path) -> Session:
    """mpv playing the stream URL for a few seconds."""
    _run("mpv", ["mpv", "--no-config", "--no-video", "--ao=null", "--length=3",
                 "--really-quiet", f"{base}/stream/{TRACK}.mp3"], 60, **_as_listener(home))
    return Session("mpv")


def gpodder(base: str, home: Path) -> Session:
    """gPodder's `gpo`: subscribe to the feed, update it, download one episode."""
    kwargs = _as_listener(home)
    env = dict(kwargs["env"])  # type: ignore[call-overload]
    env["GPODDER_HOME"] = env["HOME"] + "/gPodder"
    env["GPODDER_DOWNLOAD_DIR"] = env["HOME"] + "/episodes"
    kwargs["env"] = env
    feed = f"{base}/feed.xml"
    _run("gpodder", ["gpo", "subscribe", feed], 60, **kwargs)
    _run("gpodder", ["gpo", "update"], 60, **kwargs)
    listing = _run("gpodder", ["gpo", "episodes", "--guid", feed], 60, **kwargs)
    if TRACK_GUID not in listing:
        raise ProgramFailed(f"gpo lists no episode {TRACK_GUID}: {listing}")
    _run("gpodder", ["gpo", "download", feed, TRACK_GUID], 120, **kwargs)
    saved = {f"/stream/{TRACK}.mp3": p.read_bytes()
             for p in (home / "episodes").rglob("*.mp3")}
    if len(saved) != 1:
        raise ProgramFailed(f"gpo saved {sorted(map(str, (home / 'episodes').rglob('*')))}")
    return Session("gpodder", saved=saved)


def newsboat(base: str, home: Path) -> Session:
    """Newsboat, the feed reader: reload the store's feed, count its unread items."""
    kwargs = _as_listener(home)
    folder = Path(str(kwargs["env"]["HOME"]))  # type: ignore[index]
    urls = folder / "urls"
    urls.write_text(f"{base}/feed.xml\n")
    if os.geteuid() == 0:
        os.chown(urls, NOBODY, NOBODY)
    out = _run("newsboat", ["newsboat", "-u", str(urls), "-c", str(folder / "cache.db"),
                            "-C", str(folder / "config"), "-x", "reload", "print-unread"],
               60, **kwargs)
    if "unread articles" not in out or out.startswith("0 "):
        raise ProgramFailed(f"newsboat read no item of the feed: {out!r}")
    return Session("newsboat")


def link_preview(base: str, home: Path) -> Session:
    """A Mastodon-style link preview of a track page: the page, then its og:image
    (tests/clients/link_preview.rb, on Debian's ruby-http)."""
    kwargs = _as_listener(home)
    folder = Path(str(kwargs["env"]["HOME"]))  # type: ignore[index]
    # a copy the listener can read (a checkout under a private folder is closed to it)
    script = folder / "link_preview.rb"
    shutil.copyfile(CLIENTS / "link_preview.rb", script)
    if os.geteuid() == 0:
        os.chown(script, NOBODY, NOBODY)
    out = _run("link preview", ["ruby", str(script), f"{base}/track/{TRACK}", str(folder)],
               60, **kwargs)
    saved = {f"/cover/{p.name}": p.read_bytes() for p in folder.glob("*.png")}
    if len(saved) != 1:
        raise ProgramFailed(f"the link preview saved {sorted(p.name for p in folder.iterdir())}")
    return Session("link-preview", ua=out.splitlines()[0], saved=saved)
