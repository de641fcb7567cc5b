"""Configuration file -> frozen, validated Settings.

The raw YAML (a LocatedDict) and the compiled Settings are different types: nothing past this
module ever sees YAML. Validation reports every problem in one run as `file:line:col: message`,
with a suggestion for misspelt keys. Unknown keys are errors: silently ignored config is a bug.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .state import LONG_HALF_LIFE
from .yamlsource import (
    ConfigError,
    LocatedDict,
    LocatedList,
    Mark,
    Problem,
    load_yaml_file,
    suggest,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    url: str = ""
    # "preserve": send the client's Host; "upstream": the upstream URL's host; anything else
    # is sent literally.
    host_header: str = "preserve"
    pool_size: int = 256
    health_path: str = "/"
    health_interval: float = 5.0  # seconds between health probes (sonicshield_upstream_up)
    robots_refresh: float = 300.0  # seconds between fetches of the store's robots.txt
    # the site's address as visitors use it (https://music.example); "" when the proxy is
    # reached under the store's own URL
    public_url: str = ""


@dataclass(frozen=True, slots=True)
class Timeouts:
    upstream_connect: float = 5.0
    upstream_response: float = 60.0  # until the upstream's response headers arrive
    upstream_idle: float = 60.0  # between two body reads from the upstream
    # Time a client has, from connecting or from the end of its previous response, to send a
    # complete request head. aiohttp runs one timer for both, so this is also the keep-alive
    # idle limit (slowloris defence).
    client_header: float = 15.0
    client_idle: float = 60.0  # between two body reads from / writes to the client
    shutdown_grace: float = 30.0  # SIGTERM: how long in-flight streams may finish


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_line: int = 8190
    max_header_field: int = 8190
    max_headers: int = 100
    # the whole request head (request line and every header); past it, 431 and the connection
    # closed. 32 KiB is what nginx's default large_client_header_buffers (4 x 8k) allow.
    max_request_head: int = 32 * 1024
    max_request_body: int = 1 << 30  # bytes; 0 = unlimited
    streams_per_client: int = 16  # concurrent responses per client address; 0 = unlimited
    tracked_clients: int = 200_000  # clients remembered (robots.txt, behaviour); LRU beyond
    tarpits: int = 256  # tarpitted connections held at once; beyond, a plain 403
    verdict_cache: int = 8192  # (address, User-Agent) pairs whose verdicts a worker reuses


@dataclass(frozen=True, slots=True)
class AdminSettings:
    listen: Listen | None = Listen("127.0.0.1", 9180)
    token: str | None = None  # required for mutating admin endpoints


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    asn_database: Path | None = None  # GeoLite2-ASN / DB-IP / IPinfo lite .mmdb


@dataclass(frozen=True, slots=True)
class TrapSettings:
    enabled: bool = True
    path: str = "/archive-complete/"  # must not be a path the store uses


@dataclass(frozen=True, slots=True)
class AudioSettings:
    cache_dir: Path = Path("cache/variants")  # variant files; relative to the config file
    cache_max_bytes: int = 4 << 30
    workers: int = 2  # codec processes per proxy worker
    max_jobs: int = 8  # fetches and codec jobs at once; beyond, the cheaper countermeasure
    max_source_bytes: int = 2 << 30  # a larger original is not processed (403)
    watermark_key: Path | None = None  # the watermark secret; default CACHE_DIR/watermark.key

    @property
    def key_file(self) -> Path:
        return self.watermark_key or self.cache_dir / "watermark.key"


FSYNC_POLICIES = ("always", "interval", "never")
LEGACY_KEY_NAME = "chain.key"  # where versions before 0.2 kept the chain key: in DIR


@dataclass(frozen=True, slots=True)
class EvidenceSettings:
    enabled: bool = True
    dir: Path = Path("evidence")  # relative to the config file
    # the chain key; default beside the config file (or beside DIR without one), never in
    # DIR: whoever can rewrite the log must not also find the key to re-sign it there
    key_file: Path | None = None
    # always: after every batch of records; interval: at most fsync_interval apart; never:
    # when the kernel pleases
    fsync: str = "interval"
    fsync_interval: float = 1.0
    rotate_bytes: int = 256 << 20
    rotate_daily: bool = True
    checkpoint_interval: float = 60.0
    allowed_sample: float = 0.01  # share of ordinary allowed requests recorded for context
    queue: int = 100_000  # records waiting for the writer; beyond, dropped and counted

    @property
    def key(self) -> Path:
        """The chain key's file. Without key_file: DIR/chain.key where an older version
        made it there (so its chains stay verifiable; the writer warns), else
        `evidence-chain.key` beside DIR."""
        if self.key_file is not None:
            return self.key_file
        legacy = self.dir / LEGACY_KEY_NAME
        return legacy if legacy.exists() else self.dir.parent / f"{self.dir.name}-chain.key"


@dataclass(frozen=True, slots=True)
class SharedStateSettings:
    """Client state shared by instances through Redis (proxy/shared.py); None: local only."""

    redis_url: str | None = None  # redis://HOST:PORT/DB, rediss://..., unix:///path
    timeout: float = 0.05  # seconds a Redis call may take before the request goes on without
    retry: float = 1.0  # seconds between reconnection attempts while Redis is away
    key_prefix: str = "sonicshield:"
    ttl: float = 3600.0  # seconds a client's shared row outlives its last update


@dataclass(frozen=True, slots=True)
class LogSettings:
    format: str = "json"  # json | text
    level: str = "info"
    access_log: bool = True


@dataclass(frozen=True, slots=True)
class Settings:
    listen: tuple[Listen, ...] = (Listen("0.0.0.0", 8080),)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    trusted_proxies: tuple[IPNetwork, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    rules_dir: Path = Path("rules")
    admin: AdminSettings = field(default_factory=AdminSettings)
    workers: int = 1
    log: LogSettings = field(default_factory=LogSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    traps: TrapSettings = field(default_factory=TrapSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    evidence: EvidenceSettings = field(default_factory=EvidenceSettings)
    shared_state: SharedStateSettings = field(default_factory=SharedStateSettings)
    verdict_header: bool = False  # send X-SonicShield-Verdict on responses
    # Decide and record every verdict, but serve every client the real response: for trying
    # new rules on live traffic.
    shadow: bool = False
    source: str = "<defaults>"


LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULTS = Settings()


class _Reader:
    """Reads typed values from a LocatedDict, collecting problems instead of stopping."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, mark: Mark, message: str) -> None:
        self.problems.append(Problem(mark, message))

    def keys(self, d: LocatedDict, allowed: Iterable[str], where: str) -> None:
        allowed = list(allowed)
        for key in d:
            if key not in allowed:
                self.fail(d.key_mark(key), f"unknown key '{key}' in {where}{suggest(key, allowed)}")

    def section(self, d: LocatedDict, key: str, allowed: Iterable[str]) -> LocatedDict:
        value = d.get(key)
        if value is None:
            return _empty(d.value_mark(key))
        if not isinstance(value, LocatedDict):
            self.fail(d.value_mark(key), f"'{key}' must be a mapping")
            return _empty(d.value_mark(key))
        self.keys(value, allowed, f"'{key}'")
        return value

    def value(
        self, d: LocatedDict, key: str, default: T, parse: Callable[[Any], T], what: str
    ) -> T:
        if key not in d or (d[key] is None and default is None):
            return default
        try:
            return parse(d[key])
        except (ValueError, TypeError) as exc:
            detail = f": {exc}" if str(exc) else ""
            self.fail(d.value_mark(key), f"'{key}' must be {what}{detail}")
            return default

    def number(self, d: LocatedDict, key: str, default: float, minimum: float = 0.0) -> float:
        def parse(v: Any) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError
            if v <= minimum:
                raise ValueError(f"got {v}")
            return float(v)

        return self.value(d, key, default, parse, f"a number of seconds greater than {minimum:g}")

    def integer(self, d: LocatedDict, key: str, default: int, minimum: int, maximum: int) -> int:
        def parse(v: Any) -> int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError
            if not minimum <= v <= maximum:
                raise ValueError(f"got {v}")
            return v

        return self.value(d, key, default, parse, f"an integer from {minimum} to {maximum}")

    def boolean(self, d: LocatedDict, key: str, default: bool) -> bool:
        def parse(v: Any) -> bool:
            if not isinstance(v, bool):
                raise TypeError
            return v

        return self.value(d, key, default, parse, "true or false")

    def string(self, d: LocatedDict, key: str, default: str) -> str:
        def parse(v: Any) -> str:
            if not isinstance(v, str) or not v:
                raise TypeError
            return v

        return self.value(d, key, default, parse, "a non-empty string")

    def choice(self, d: LocatedDict, key: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(v: Any) -> str:
            if v not in choices:
                raise ValueError(f"got {v!r}")
            return str(v)

        return self.value(d, key, default, parse, "one of " + ", ".join(choices))

    def items(self, d: LocatedDict, key: str) -> list[tuple[Any, Mark]]:
        """A list value (a single scalar is accepted as a list of one)."""
        if key not in d or d[key] is None:
            return []
        value = d[key]
        if isinstance(value, LocatedList):
            return [(item, value.item_mark(i)) for i, item in enumerate(value)]
        if isinstance(value, LocatedDict):
            self.fail(d.value_mark(key), f"'{key}' must be a list")
            return []
        return [(value, d.value_mark(key))]


def parse_listen(text: Any) -> Listen:
    """'HOST:PORT', '[v6]:PORT' or ':PORT' (all IPv4 interfaces)."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = f":{text}"
    if not isinstance(text, str):
        raise TypeError
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"got {text!r}, expected HOST:PORT")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    host = host or "0.0.0.0"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif ":" in host:
        raise ValueError(f"got {text!r}; write IPv6 addresses in brackets: [::1]:8080")
    return Listen(host, port)


def parse_upstream_url(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError("no query or fragment allowed")
    return value.rstrip("/")


def _parse_redis_url(value: Any) -> str | None:
    if not isinstance(value, str):
        raise TypeError
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ValueError(f"got {value!r}")
    return value


def _parse_network(value: Any) -> IPNetwork:
    if not isinstance(value, str):
        raise TypeError
    return ipaddress.ip_network(value, strict=False)


TOP_KEYS = (
    "listen",
    "upstream",
    "trusted_proxies",
    "timeouts",
    "limits",
    "rules_dir",
    "admin",
    "workers",
    "log",
    "verdict_header",
    "shadow",
    "network",
    "traps",
    "audio",
    "evidence",
    "shared_state",
)


def settings_from_mapping(raw: LocatedDict, base_dir: Path, source: str) -> Settings:
    """Validate a parsed config mapping; raise ConfigError listing every problem."""
    r = _Reader()
    r.keys(raw, TOP_KEYS, "the config file")

    listens = []
    for item, mark in r.items(raw, "listen"):
        try:
            listens.append(parse_listen(item))
        except (ValueError, TypeError) as exc:
            r.fail(mark, f"'listen' entries must be HOST:PORT{': ' + str(exc) if str(exc) else ''}")

    up = r.section(raw, "upstream",
                   ("url", "host_header", "pool_size", "health_path", "health_interval",
                    "robots_refresh", "public_url"))
    d_up = DEFAULTS.upstream
    upstream = UpstreamSettings(
        url=r.value(up, "url", d_up.url, parse_upstream_url, "an http:// or https:// URL"),
        host_header=r.string(up, "host_header", d_up.host_header),
        pool_size=r.integer(up, "pool_size", d_up.pool_size, 1, 100_000),
        health_path=r.value(up, "health_path", d_up.health_path, _parse_path, "a path like /"),
        robots_refresh=r.number(up, "robots_refresh", d_up.robots_refresh, minimum=1.0),
        health_interval=r.number(up, "health_interval", d_up.health_interval, minimum=0.1),
        public_url=r.value(up, "public_url", d_up.public_url,
                           lambda v: "" if v is None else parse_upstream_url(v),
                           "an http:// or https:// URL, or null"),
    )

    networks = []
    for item, mark in r.items(raw, "trusted_proxies"):
        try:
            networks.append(_parse_network(item))
        except (ValueError, TypeError):
            r.fail(mark, f"'trusted_proxies' entries must be addresses or CIDRs, got {item!r}")

    t = r.section(raw, "timeouts", Timeouts.__slots__)
    d_t = DEFAULTS.timeouts
    timeouts = Timeouts(**{k: r.number(t, k, getattr(d_t, k)) for k in Timeouts.__slots__})

    lim = r.section(raw, "limits", Limits.__slots__)
    d_l = DEFAULTS.limits
    limits = Limits(
        max_request_line=r.integer(lim, "max_request_line", d_l.max_request_line, 256, 65536),
        max_header_field=r.integer(lim, "max_header_field", d_l.max_header_field, 256, 65536),
        max_headers=r.integer(lim, "max_headers", d_l.max_headers, 8, 1000),
        max_request_head=r.integer(lim, "max_request_head", d_l.max_request_head, 1024,
                                   1 << 20),
        max_request_body=r.integer(lim, "max_request_body", d_l.max_request_body, 0, 1 << 50),
        streams_per_client=r.integer(lim, "streams_per_client", d_l.streams_per_client, 0, 10_000),
        tracked_clients=r.integer(lim, "tracked_clients", d_l.tracked_clients, 1000, 50_000_000),
        tarpits=r.integer(lim, "tarpits", d_l.tarpits, 0, 100_000),
        verdict_cache=r.integer(lim, "verdict_cache", d_l.verdict_cache, 0, 1_000_000),
    )

    adm = r.section(raw, "admin", ("listen", "token"))
    d_a = DEFAULTS.admin
    admin_listen = d_a.listen
    if "listen" in adm:
        admin_listen = (
            None
            if adm["listen"] is None
            else r.value(adm, "listen", d_a.listen, parse_listen, "HOST:PORT or null")
        )
    token = r.value(adm, "token", None, _parse_token, _TOKEN)
    admin = AdminSettings(listen=admin_listen, token=token)

    lg = r.section(raw, "log", ("format", "level", "access_log"))
    d_g = DEFAULTS.log
    log = LogSettings(
        format=r.choice(lg, "format", d_g.format, ("json", "text")),
        level=r.choice(lg, "level", d_g.level, LOG_LEVELS),
        access_log=r.boolean(lg, "access_log", d_g.access_log),
    )

    net = r.section(raw, "network", ("asn_database",))
    asn_database = None
    if net.get("asn_database") is not None:
        db = Path(r.string(net, "asn_database", ""))
        asn_database = db if db.is_absolute() else base_dir / db

    tr = r.section(raw, "traps", ("enabled", "path"))
    traps = TrapSettings(
        enabled=r.boolean(tr, "enabled", DEFAULTS.traps.enabled),
        path=r.value(tr, "path", DEFAULTS.traps.path, _parse_trap_path,
                     "a path like /archive-complete/ (starting and ending with /)"),
    )

    au = r.section(raw, "audio", AudioSettings.__slots__)
    d_au = DEFAULTS.audio
    cache_dir = Path(r.string(au, "cache_dir", str(d_au.cache_dir)))
    audio = AudioSettings(
        cache_dir=cache_dir if cache_dir.is_absolute() else base_dir / cache_dir,
        cache_max_bytes=r.integer(au, "cache_max_bytes", d_au.cache_max_bytes, 1 << 20, 1 << 50),
        workers=r.integer(au, "workers", d_au.workers, 1, 64),
        max_jobs=r.integer(au, "max_jobs", d_au.max_jobs, 1, 10_000),
        max_source_bytes=r.integer(au, "max_source_bytes", d_au.max_source_bytes, 1 << 16,
                                   1 << 40),
        watermark_key=_relative(base_dir, r.string(au, "watermark_key", ""))
        if au.get("watermark_key") else None,
    )

    ev = r.section(raw, "evidence", EvidenceSettings.__slots__)
    d_ev = DEFAULTS.evidence
    evidence_dir = _relative(base_dir, r.string(ev, "dir", str(d_ev.dir)))
    evidence = EvidenceSettings(
        enabled=r.boolean(ev, "enabled", d_ev.enabled),
        dir=evidence_dir,
        key_file=_relative(base_dir, r.string(ev, "key_file", "")) if ev.get("key_file")
        else _default_key(base_dir, evidence_dir),
        fsync=r.choice(ev, "fsync", d_ev.fsync, FSYNC_POLICIES),
        fsync_interval=r.number(ev, "fsync_interval", d_ev.fsync_interval, minimum=0.01),
        rotate_bytes=r.integer(ev, "rotate_bytes", d_ev.rotate_bytes, 1 << 16, 1 << 50),
        rotate_daily=r.boolean(ev, "rotate_daily", d_ev.rotate_daily),
        checkpoint_interval=r.number(ev, "checkpoint_interval", d_ev.checkpoint_interval,
                                     minimum=1.0),
        allowed_sample=r.value(ev, "allowed_sample", d_ev.allowed_sample, _parse_share,
                               "a number from 0 to 1"),
        queue=r.integer(ev, "queue", d_ev.queue, 100, 10_000_000),
    )

    sh = r.section(raw, "shared_state", SharedStateSettings.__slots__)
    d_sh = DEFAULTS.shared_state
    shared_state = SharedStateSettings(
        redis_url=r.value(sh, "redis_url", None, _parse_redis_url,
                          "a redis://, rediss:// or unix:// URL, or null"),
        timeout=r.number(sh, "timeout", d_sh.timeout, minimum=0.001),
        retry=r.number(sh, "retry", d_sh.retry, minimum=0.1),
        key_prefix=r.string(sh, "key_prefix", d_sh.key_prefix),
        ttl=r.number(sh, "ttl", d_sh.ttl, minimum=LONG_HALF_LIFE),
    )

    rules_dir = Path(r.string(raw, "rules_dir", str(DEFAULTS.rules_dir)))
    settings = Settings(
        listen=tuple(listens) or DEFAULTS.listen,
        upstream=upstream,
        trusted_proxies=tuple(networks),
        timeouts=timeouts,
        limits=limits,
        rules_dir=rules_dir if rules_dir.is_absolute() else base_dir / rules_dir,
        admin=admin,
        workers=r.integer(raw, "workers", DEFAULTS.workers, 1, 64),
        log=log,
        network=NetworkSettings(asn_database=asn_database),
        traps=traps,
        audio=audio,
        evidence=evidence,
        shared_state=shared_state,
        verdict_header=r.boolean(raw, "verdict_header", DEFAULTS.verdict_header),
        shadow=r.boolean(raw, "shadow", DEFAULTS.shadow),
        source=source,
    )
    if r.problems:
        raise ConfigError(r.problems)
    return settings


_TOKEN = "a string of at least 16 characters"


def _parse_token(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    if len(value) < 16:
        raise ValueError(f"it has {len(value)}")
    return value


def _parse_trap_path(value: Any) -> str:
    if (not isinstance(value, str) or not value.startswith("/") or not value.endswith("/")
            or len(value) < 3 or value.startswith("/.well-known/")):
        raise ValueError(f"got {value!r}")
    return value


def _parse_share(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"got {value!r}")
    return float(value)


def _default_key(base_dir: Path, evidence_dir: Path) -> Path | None:
    """The chain key beside the config file, unless an older version's key is in the evidence
    folder (None: EvidenceSettings.key finds it there)."""
    if (evidence_dir / LEGACY_KEY_NAME).exists():
        return None
    return base_dir / "evidence-chain.key"


def _relative(base_dir: Path, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else base_dir / path


def _parse_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError
    return value


def _empty(mark: Mark) -> LocatedDict:
    d = LocatedDict()
    d.mark, d.key_marks, d.value_marks = mark, {}, {}
    return d


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load a config file (or the defaults when path is None) and apply command-line overrides.

    Overrides use the config file's own key paths ("upstream.url", "listen", "rules_dir",
    "workers") and are validated like file values; their problems name the command-line flag.
    """
    if path is not None:
        raw = load_yaml_file(path)
        if raw is None:
            raw = _empty(Mark(str(path), 1, 1))
        if not isinstance(raw, LocatedDict):
            raise ConfigError([Problem(Mark(str(path), 1, 1), "the config file must be a mapping")])
        base_dir, source = path.resolve().parent, str(path)
    else:
        raw, base_dir, source = _empty(Mark("<defaults>", 0, 0)), Path.cwd(), "<defaults>"

    for dotted, (flag, value) in (overrides or {}).items():
        target = raw
        *parents, last = dotted.split(".")
        for part in parents:
            if not isinstance(target.get(part), LocatedDict):
                target[part] = _empty(Mark(flag, 0, 0))
            target = target[part]
        if isinstance(value, list):
            located = LocatedList(value)
            located.mark, located.item_marks = Mark(flag, 0, 0), [Mark(flag, 0, 0)] * len(value)
            value = located
        target[last] = value
        target.key_marks[last] = target.value_marks[last] = Mark(flag, 0, 0)

    settings = settings_from_mapping(raw, base_dir, source)
    if not settings.upstream.url:
        where = Mark(source, 0, 0) if path is None else raw.mark
        raise ConfigError(
            [Problem(where, "no upstream: set upstream.url in the config file or pass --upstream")]
        )
    return settings
