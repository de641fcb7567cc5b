"""The audit: declarations, exposure and files, each a finding with the fix that SonicShield
offers; a score out of 100."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import mutagen
import numpy as np
from protego import Protego

from ..agents import load_agents
from ..audio.codec import CodecError, decode
from ..robots import PRODUCT_TOKEN
from .client import (
    AUDIO_LIMIT,
    CHROME_UA,
    GPTBOT_UA,
    LOSSLESS_SUFFIXES,
    Fetched,
    OutOfRequests,
    PoliteClient,
    Site,
    audit_headers,
    browser_headers,
    discover,
)

RULES = Path(__file__).resolve().parent.parent.parent / "rules"
ROBOTS_DIRECTIVES = {"user-agent", "allow", "disallow", "sitemap", "crawl-delay",
                     "content-signal", "content-usage", "host", "request-rate", "clean-param",
                     "visit-time", "noindex"}
ROBOTS_MAX = 500 * 1024  # RFC 9309 2.5: parsers must read at least 500 KiB
DISCLOSURE = ("The 'disguised crawler' probe sent Chrome's User-Agent (and nothing else a "
              "browser sends) to see what a crawler hiding behind a browser's name receives; "
              "every other request carried the audit's own User-Agent, or GPTBot's for the "
              "declared-crawler probe. All requests came from this machine's address.")


@dataclass
class Finding:
    area: str  # declarations, exposure, files
    key: str
    ok: bool
    weight: int  # points lost when not ok
    title: str
    detail: str
    fix: str = ""


@dataclass
class Probe:
    who: str  # listener, disguised crawler, declared AI crawler
    user_agent: str
    url: str
    status: int
    bytes: int
    sha256: str
    received: str  # real, truncated, decoy, altered, refused, unknown
    note: str = ""


@dataclass
class Audit:
    target: str
    started: str
    requests: int = 0
    findings: list[Finding] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    audio_found: list[str] = field(default_factory=list)
    pages_read: list[str] = field(default_factory=list)
    disclosure: str = DISCLOSURE
    seconds: float = 0.0

    @property
    def score(self) -> int:
        return max(0, 100 - sum(f.weight for f in self.findings if not f.ok))

    @property
    def grade(self) -> str:
        s = self.score
        return ("well shielded" if s >= 85 else "partly shielded" if s >= 60
                else "poorly shielded" if s >= 30 else "exposed")

    def fixes(self) -> list[Finding]:
        """Failed findings, the costliest first."""
        return sorted((f for f in self.findings if not f.ok and f.fix), key=lambda f: -f.weight)

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out.update(score=self.score, grade=self.grade,
                   top_fixes=[{"title": f.title, "fix": f.fix} for f in self.fixes()[:3]])
        return out


async def run_audit(url: str, *, max_requests: int = 40, rate: float = 4.0,
                    request_timeout: float = 10.0) -> Audit:
    parts = urlsplit(url if "://" in url else "https://" + url)
    base = f"{parts.scheme}://{parts.netloc}"
    audit = Audit(target=base, started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    began = time.monotonic()
    async with PoliteClient(max_requests, rate, request_timeout) as client:
        try:
            await _audit(client, base, audit)
        except OutOfRequests:
            audit.findings.append(Finding(
                "exposure", "budget", True, 0, "Request budget reached",
                f"The audit stopped after {max_requests} requests (--max-requests)."))
        audit.requests = client.sent
    audit.seconds = round(time.monotonic() - began, 1)
    return audit


async def _audit(client: PoliteClient, base: str, audit: Audit) -> None:
    robots_fetch = await client.get(base + "/robots.txt", audit_headers())
    robots = _robots_findings(audit, robots_fetch)
    site = Site(base)
    await discover(client, site, list(robots.sitemaps) if robots is not None else [])
    audit.audio_found = sorted(site.audio)
    audit.pages_read = site.pages
    await _declaration_files(client, base, audit)
    if site.home is not None:
        _header_findings(audit, "pages", site.home)
    if robots is not None and site.audio:
        _coverage(audit, robots, next(iter(sorted(site.audio))))
    if not site.audio:
        audit.findings.append(Finding(
            "exposure", "no-audio-found", True, 0, "No audio found",
            "No audio was linked from the home page, the sitemap or the feeds the audit read; "
            "exposure was not measured."))
        return
    await _exposure(client, site, audit)


def _robots_findings(audit: Audit, fetched: Fetched) -> Protego | None:
    add = audit.findings.append
    if fetched.status != 200:
        add(Finding("declarations", "robots-missing", False, 15, "No robots.txt",
                    f"/robots.txt answered {fetched.status or fetched.error}: every crawler "
                    "may take everything.",
                    "SonicShield serves a canonical robots.txt (the store's own merged with "
                    "rules/robots.yaml's AI section) with 200 to every client."))
        return None
    text = fetched.body.decode("utf-8", "replace")
    problems = []
    if "text/plain" not in fetched.header("content-type"):
        problems.append(f"served as {fetched.header('content-type') or 'no type'}, not "
                        "text/plain")
    if len(fetched.body) > ROBOTS_MAX:
        problems.append(f"{len(fetched.body)} bytes: parsers may stop at 500 KiB")
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line and (":" not in line
                     or line.split(":", 1)[0].strip().lower() not in ROBOTS_DIRECTIVES):
            problems.append(f"line {n} is not a robots.txt rule: {line[:60]!r}")
    add(Finding("declarations", "robots-valid", not problems, 5, "robots.txt is valid "
                "(RFC 9309)" if not problems else "robots.txt has problems",
                "; ".join(problems[:5]) or "Served with 200 as text/plain; every line parses.",
                "SonicShield serves its canonical robots.txt as text/plain."))
    robots = Protego.parse(text)
    blocked = not robots.can_fetch(audit.target + "/", "Googlebot") and not robots.can_fetch(
        audit.target + "/", "Mozilla/5.0")
    add(Finding("declarations", "robots-global-disallow", not blocked, 10,
                "robots.txt shuts out everyone" if blocked else "No accidental global Disallow",
                "'Disallow: /' for every agent hides the store from search engines and link "
                "previews as well as from AI crawlers." if blocked else
                "Search engines may still index the store.",
                "Remove 'Disallow: /' from the User-agent: * group; SonicShield's rules/robots."
                "yaml disallows the AI training agents alone (disallow_ai_purposes)."))
    signals = [line.strip() for line in text.splitlines()
               if line.lower().startswith(("content-signal", "content-usage"))]
    add(Finding("declarations", "robots-signals", bool(signals), 3,
                "Content-Signal / Content-Usage in robots.txt" if signals
                else "No Content-Signal or Content-Usage lines in robots.txt",
                "; ".join(signals[:3]) or "robots.txt says nothing about AI use of the "
                "content, only about paths.",
                "rules/rights.yaml (reservation: true): SonicShield adds Content-Signal "
                "ai-train=no and Content-Usage train-ai=n to robots.txt."))
    return robots


def _coverage(audit: Audit, robots: Protego, audio_url: str) -> None:
    """Which AI training agents of the vendored list robots.txt keeps off the audio."""
    # an agent whose name is not an RFC 9309 product token ("Datenbank Crawler") cannot be
    # named in robots.txt at all: only the others count
    agents = [a for a in load_agents(RULES / "agents").values()
              if a.ua_class == "ai-crawler" and a.purpose in ("training", "undocumented")
              and PRODUCT_TOKEN.fullmatch(a.token)]
    missing = sorted(a.token for a in agents if robots.can_fetch(audio_url, a.token))
    covered = len(agents) - len(missing)
    share = covered / len(agents) if agents else 1.0
    audit.findings.append(Finding(
        "declarations", "robots-ai-coverage", not missing, 15 if share < 0.5 else 8,
        f"robots.txt keeps {covered} of {len(agents)} AI training agents off the audio",
        ("Missing: " + ", ".join(missing[:12]) + (f" and {len(missing) - 12} more"
                                                 if len(missing) > 12 else "")) if missing
        else "Every training agent of the ai.robots.txt list is disallowed.",
        "SonicShield's canonical robots.txt disallows every training agent of "
        "rules/agents/ai-robots.yaml (rules/robots.yaml: disallow_ai_purposes); "
        "`sonicshield agents update` refreshes the list."))


async def _declaration_files(client: PoliteClient, base: str, audit: Audit) -> None:
    fetched = await client.get(base + "/.well-known/tdmrep.json", audit_headers())
    reserved, detail = False, f"/.well-known/tdmrep.json answered {fetched.status or 'nothing'}"
    if fetched.status == 200:
        try:
            entries = json.loads(fetched.body)
            reserved = isinstance(entries, list) and any(
                isinstance(e, dict) and str(e.get("tdm-reservation")) == "1" for e in entries)
            count = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
            detail = (f"{count}, TDM reserved" if reserved
                      else "present, but reserves nothing")
        except (ValueError, TypeError):
            detail = "present, but not valid JSON"
    audit.findings.append(Finding(
        "declarations", "tdmrep", reserved, 8, "TDMRep reservation" if reserved
        else "No TDMRep reservation", detail,
        "rules/rights.yaml (reservation: true): SonicShield serves /.well-known/tdmrep.json."))
    fetched = await client.get(base + "/ai.txt", audit_headers())
    present = fetched.status == 200 and b"disallow" in fetched.body.lower()
    audit.findings.append(Finding(
        "declarations", "ai-txt", present, 2, "ai.txt present" if present else "No ai.txt",
        f"/ai.txt answered {fetched.status or 'nothing'}",
        "rules/rights.yaml: SonicShield serves /ai.txt."))


def _header_findings(audit: Audit, what: str, fetched: Fetched) -> None:
    tdm = fetched.header("tdm-reservation") == "1"
    usage = "train-ai=n" in fetched.header("content-usage").replace(" ", "")
    robots_tag = "noai" in fetched.header("x-robots-tag").lower()
    found = [n for n, ok in (("tdm-reservation: 1", tdm), ("Content-Usage: train-ai=n", usage),
                             ("X-Robots-Tag: noai", robots_tag)) if ok]
    audit.findings.append(Finding(
        "declarations", f"headers-{what}", tdm and usage, 8 if what == "audio" else 4,
        f"Reservation headers on {what}" if tdm and usage
        else f"No reservation headers on {what}",
        ("Sent: " + ", ".join(found)) if found else
        f"The {what} responses carry no tdm-reservation, Content-Usage or X-Robots-Tag.",
        "rules/rights.yaml (reservation: true): SonicShield adds tdm-reservation, "
        "Content-Usage and X-Robots-Tag to every response."))


async def _exposure(client: PoliteClient, site: Site, audit: Audit) -> None:
    lossy = [u for u in sorted(site.audio) if not _lossless(u)]
    target = lossy[0] if lossy else sorted(site.audio)[0]
    page = site.audio[target] if site.audio[target] in site.pages else site.base + "/"
    # 1. a listener: the page, then the track as an <audio> element asks for it
    await client.get(page, browser_headers("document"))
    listener = await client.get(target, browser_headers("audio", page), AUDIO_LIMIT)
    _header_findings(audit, "audio", listener)
    probes = [("listener", CHROME_UA, listener)]
    # 2. a disguised crawler: a browser's name, a crawler's habits (no page, no Referer, whole
    #    files one after another)
    other = next((u for u in lossy if u != target), target)
    disguised = {"User-Agent": CHROME_UA, "Accept": "*/*"}
    await client.get(other, disguised, AUDIO_LIMIT)
    probes.append(("disguised crawler", CHROME_UA, await client.get(target, disguised,
                                                                     AUDIO_LIMIT)))
    # 3. a declared AI crawler that reads robots.txt and takes the audio anyway
    declared = {"User-Agent": GPTBOT_UA, "Accept": "*/*"}
    await client.get(site.base + "/robots.txt", declared)
    probes.append(("declared AI crawler", GPTBOT_UA, await client.get(target, declared,
                                                                       AUDIO_LIMIT)))
    with tempfile.TemporaryDirectory(prefix="sonicshield-audit-") as tmp:
        reference = _audio_file(Path(tmp), "listener", listener)
        for who, ua, fetched in probes:
            received, note = ("real", "the reference") if who == "listener" else _compare(
                Path(tmp), listener, reference, fetched)
            audit.probes.append(Probe(who, ua, target, fetched.status, len(fetched.body),
                                      hashlib.sha256(fetched.body).hexdigest(), received, note))
        _file_findings(audit, reference, target)
    for probe in audit.probes[1:]:
        _exposure_finding(audit, probe)
    await _lossless_masters(client, site, audit)


def _lossless(url: str) -> bool:
    return urlsplit(url).path.lower().endswith(LOSSLESS_SUFFIXES)


_EXPOSURE_LOSS = {"real": 20, "truncated": 8, "altered": 5, "decoy": 0, "refused": 0,
                  "unknown": 10}


def _exposure_finding(audit: Audit, probe: Probe) -> None:
    loss = _EXPOSURE_LOSS[probe.received]
    declared = probe.who == "declared AI crawler"
    fix = ("rules/20-ai-crawlers.yaml, rule ai-crawler-audio (decoy) in SonicShield's "
           "shipped rules" if declared else
           "rules/30-disguised.yaml, rules fake-browser-audio and crawler-behaviour-audio "
           "(decoy) in SonicShield's shipped rules")
    audit.findings.append(Finding(
        "exposure", f"probe-{probe.who.replace(' ', '-')}", loss == 0, loss,
        f"A {probe.who} received {_RECEIVED[probe.received]}",
        f"HTTP {probe.status or 'no answer'}, {probe.bytes} bytes. {probe.note}".strip(),
        fix if probe.received in ("real", "unknown") else
        "SonicShield's decoy action gives a crawler nothing of the recording: " + fix))


_RECEIVED = {"real": "the real recording", "truncated": "a truncated preview of the recording",
             "altered": "the recording, altered (watermarked or degraded)",
             "decoy": "a decoy, not the recording", "refused": "a refusal",
             "unknown": "something the audit could not compare"}


async def _lossless_masters(client: PoliteClient, site: Site, audit: Audit) -> None:
    """A lossless master that a disguised crawler can take as it is."""
    masters = [u for u in sorted(site.audio) if _lossless(u)]
    if not masters:
        return
    url = masters[0]
    head = {"Range": "bytes=0-262143"}
    page = site.audio[url] if site.audio[url] in site.pages else site.base + "/"
    await client.get(page, browser_headers("document"))  # a listener is on the page first
    listener = await client.get(url, {**browser_headers("audio", page), **head})
    crawler = await client.get(url, {"User-Agent": CHROME_UA, "Accept": "*/*", **head})
    exposed = crawler.status in (200, 206) and crawler.body[:262144] == listener.body[:262144]
    audit.findings.append(Finding(
        "files", "lossless-exposed", not exposed, 10,
        "A lossless master is open to crawlers" if exposed
        else "Lossless masters are not handed to crawlers",
        f"{url}: a disguised crawler got "
        f"{'the same bytes as a listener' if exposed else 'something else'} "
        f"(HTTP {crawler.status or 'no answer'}).",
        "SonicShield's shipped rules give crawlers decoys for every audio format; for FLAC "
        "and WAV the decoy is lossless too, so nothing reveals the swap."))


def _audio_file(tmp: Path, name: str, fetched: Fetched) -> Path | None:
    if fetched.status not in (200, 206) or not fetched.body:
        return None
    path = tmp / name
    path.write_bytes(fetched.body)
    return path


def _compare(tmp: Path, listener: Fetched, reference: Path | None,
             got: Fetched) -> tuple[str, str]:
    """What a crawler received, judged against what the listener received."""
    if got.status == 0:
        return "refused", got.error
    if got.status >= 400:
        return "refused", f"answered {got.status}"
    if got.error and len(got.body) < 65536:
        return "refused", f"tarpitted: {len(got.body)} bytes in {got.seconds:.0f} s ({got.error})"
    if got.body == listener.body:
        return "real", "byte for byte what the listener got"
    if reference is None:
        return "unknown", "the listener's own request failed"
    mine = _audio_file(tmp, "crawler", got)
    try:
        ref, _ = decode(reference, 8000)
    except CodecError as exc:
        return "unknown", f"the listener's copy: {exc}"
    try:
        other, _ = decode(mine, 8000) if mine is not None else (None, 0)
    except CodecError:
        other = None
    if other is None:
        return "decoy", "not playable audio"
    a, b = ref.mean(axis=1), other.mean(axis=1)
    n = min(len(a), len(b))
    corr = float(np.dot(a[:n], b[:n]) / (np.linalg.norm(a[:n]) * np.linalg.norm(b[:n]) + 1e-12))
    length = f"{len(b) / 8000:.1f} s against the listener's {len(a) / 8000:.1f} s"
    if corr < 0.8:
        return "decoy", f"{length}; similarity {corr:.2f}: different audio"
    if len(b) < 0.8 * len(a):
        return "truncated", f"{length}; the start is the recording (similarity {corr:.2f})"
    return "altered", f"{length}; similarity {corr:.2f}: the recording, changed"


def _file_findings(audit: Audit, reference: Path | None, url: str) -> None:
    if reference is None:
        return
    try:
        tags = mutagen.File(reference)
    except mutagen.MutagenError:  # unreadable: no tags to report
        tags = None
    text = " ".join(f"{k}={v}" for k, v in (tags.tags.items() if tags is not None
                                             and tags.tags is not None else [])).lower()
    isrc = "tsrc" in text or "isrc" in text
    rights = any(k in text for k in ("tcop", "copyright", "cprt", "wcop", "tdm"))
    audit.findings.append(Finding(
        "files", "isrc", isrc, 4, "ISRC in the audio" if isrc else "No ISRC in the audio",
        f"{url}: " + ("the file names its recording" if isrc else
                      "nothing in the file says which recording it is"),
        "Tag your masters with their ISRC; rules/rights.yaml (tracks: isrc) lets SonicShield "
        "write it into every variant and `sonicshield rights export` lists them."))
    audit.findings.append(Finding(
        "files", "rights-tags", rights, 4, "Rights metadata in the audio" if rights
        else "No rights metadata in the audio",
        f"{url}: " + ("copyright or TDM terms are tagged" if rights else
                      "no copyright or reservation travels with the file"),
        "rules/rights.yaml (copyright, reservation): SonicShield tags every variant it "
        "serves with the terms; tag the masters too."))
