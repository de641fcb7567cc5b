"""Record what real listener programs send: `python -m tests.clients.capture [PROGRAM ...]`.

Each program (tests/clients/programs.py) runs one listening session straight against the demo
store (no SonicShield in between), and every request head it sends is written, headers in
their order and spelling, to tests/fixtures/clients/PROGRAM.json, grouped by request kind
(document, audio, image, style, script, download, feed). tests/test_header_profiles.py judges
every recorded request with the proxy's header checks: when a new browser release changes its
headers, running this again makes a test fail, not a fan. Run it on a machine with the packages
`make test` installs (system-packages.txt); it needs no network.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from proxy.demo.catalogue import ensure_catalogue
from proxy.demo.store import build_store_app

from . import programs

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "clients"
MEDIA = Path(tempfile.gettempdir()) / "sonicshield-capture-media"


def request_kind(path: str, headers: dict[str, str]) -> str:
    dest = headers.get("sec-fetch-dest", "")
    if dest in ("audio", "video"):
        return "audio"
    if dest in ("document", "image", "style", "script"):
        return dest
    if path.startswith("/download/"):
        return "download"
    if path.startswith("/stream/"):
        return "audio"
    if path.startswith("/cover/") or path.endswith((".png", ".ico")):
        return "image"
    if path.endswith(".css"):
        return "style"
    if path.endswith(".js"):
        return "script"
    if path.endswith(".xml"):
        return "feed"
    return "document" if dest in ("", "empty") and "." not in path.rsplit("/", 1)[-1] else (
        dest or "other")


class Recorder:
    """The demo store on loopback, keeping every request head it is sent."""

    def __init__(self, media: Path) -> None:
        self.heads: list[dict[str, object]] = []
        self.app = build_store_app(media)
        self.app.middlewares.append(self._record)
        self.port = 0
        self._loop = asyncio.new_event_loop()

    @web.middleware
    async def _record(self, request: web.Request,
                      handler: Callable[[web.Request], object]) -> web.StreamResponse:
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers]
        lower = {k.lower(): v for k, v in headers}
        self.heads.append({"kind": request_kind(request.path, lower), "method": request.method,
                           "path": request.raw_path, "headers": headers})
        return await handler(request)  # type: ignore[misc, no-any-return]

    def start(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            runner = web.AppRunner(self.app, access_log=None)
            self._loop.run_until_complete(runner.setup())
            self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=serve, daemon=True).start()
        if not ready.wait(30):
            raise RuntimeError("the recording store did not start")
        return f"http://127.0.0.1:{self.port}"


def _version(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


VERSIONS = {
    "chromium": ["chromium", "--version"],
    "firefox": ["firefox-esr", "--version"],
    "webkit": ["dpkg-query", "-W", "-f", "libwebkit2gtk-4.1-0 ${Version}",
               "libwebkit2gtk-4.1-0"],
    "vlc": ["dpkg-query", "-W", "-f", "vlc ${Version}", "vlc"],
    "mpv": ["mpv", "--version"],
    "gpodder": ["dpkg-query", "-W", "-f", "gpodder ${Version}", "gpodder"],
    "newsboat": ["newsboat", "--version"],
    "link-preview": ["dpkg-query", "-W", "-f", "ruby-http ${Version}", "ruby-http"],
}


def capture(names: list[str]) -> None:
    recorder = Recorder(ensure_catalogue(MEDIA))
    base = recorder.start()
    work = Path(tempfile.mkdtemp(prefix="sonicshield-capture-"))
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with programs.desktop(work) as desk:
        sessions: dict[str, Callable[[], programs.Session]] = {
            "chromium": lambda: programs.chromium(base, desk, work),
            "firefox": lambda: programs.firefox(base, desk, work / "firefox"),
            "webkit": lambda: programs.webkit(base, desk, work / "webkit", _free_port()),
            "vlc": lambda: programs.vlc(base, work / "vlc"),
            "mpv": lambda: programs.mpv(base, work / "mpv"),
            "gpodder": lambda: programs.gpodder(base, work / "gpodder"),
            "newsboat": lambda: programs.newsboat(base, work / "newsboat"),
            "link-preview": lambda: programs.link_preview(base, work / "link-preview"),
        }
        for name in names or list(sessions):
            recorder.heads.clear()
            session = sessions[name]()
            time.sleep(0.5)
            heads = [h for h in recorder.heads if h["path"] != "/favicon.ico"]
            out = FIXTURES / f"{name}.json"
            out.write_text(json.dumps({
                "program": name, "version": _version(VERSIONS[name]), "ua": session.ua,
                "captured": time.strftime("%Y-%m-%d"),
                "command": f"python -m tests.clients.capture {name}",
                "requests": heads}, indent=1) + "\n")
            kinds = sorted({str(h["kind"]) for h in heads})
            print(f"{out}: {len(heads)} requests ({', '.join(kinds)})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    capture(sys.argv[1:])
