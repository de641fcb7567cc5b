"""Logging: one line per event, JSON or text, on stderr. The access log is one line per request.

Ordinary events (a client that went away, an upstream that is down) are one line each, never a
traceback: tracebacks are for bugs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from .exchange import Exchange
from .settings import LogSettings

access = logging.getLogger("sonicshield.access")
worker: int | None = None  # this process's worker number under `--workers N` (access lines)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        else:
            line["msg"] = record.getMessage()
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


def logfmt_value(value: object) -> str:
    """A field's value as logfmt writes it: bare when it holds no space, quote or `=`, else
    quoted as a JSON string (so `sonicshield summary` reads the line back unambiguously)."""
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        msg = (" ".join(f"{k}={logfmt_value(v)}" for k, v in fields.items()) if fields
               else record.getMessage())
        text = f"{_iso(record.created)} {record.levelname.lower():7} {record.name}: {msg}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def setup_logging(settings: LogSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # aiohttp logs every client disconnect during a write as an error with a traceback;
    # the proxy logs those itself, once, in the access line.
    logging.getLogger("aiohttp.access").disabled = True
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequests) for f in server.filters):
        server.addFilter(_BadRequests())
    access.disabled = not settings.access_log


class _BadRequests(logging.Filter):
    """A request the HTTP parser refused (smuggling attempts, oversized or malformed heads)
    is an ordinary event: one line naming the client and the reason, not an error with a
    traceback (aiohttp logs one for each)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        client = record.args[0] if isinstance(record.args, tuple) and record.args else None
        reason = str(exc.message).strip().splitlines()[0] if exc.message else type(exc).__name__
        log_event(logging.getLogger("sonicshield"), logging.WARNING, "bad-request",
                  client=client, status=exc.code, reason=reason.rstrip(":"))
        return False


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """A structured one-line event: {'event': ..., **fields}."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": {"event": event, **fields}})


def log_access(ex: Exchange) -> None:
    if not access.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "event": "access",
        "id": ex.id,
        "client": ex.client.ip,
        "method": ex.method,
        "path": ex.path,
        "status": ex.status,
        "bytes": ex.bytes_out,
        "ms": round(ex.duration_ms, 2),
        "verdict": ex.verdict.origin,
        "action": ex.verdict.action.value,
        "variant": ex.variant,
    }
    if ex.verdict.shadow:
        fields["shadow"] = True
    if ex.verdict.shadowed is not None:
        fields["shadowed"] = f"{ex.verdict.shadowed.action.value}; {ex.verdict.shadowed.origin}"
    if worker is not None:
        fields["worker"] = worker
    if ex.served is not None and ex.served.mark is not None:
        fields["mark"] = f"{ex.served.mark:016x}"
    if ex.signals is not None:
        fields["ua"] = ex.signals.ua
        fields["ua_class"] = ex.signals.ua_class
        if ex.signals.agent:
            fields["agent"] = ex.signals.agent
        fields["content"] = ex.signals.content.value
        if ex.signals.robots:
            fields["robots"] = ex.signals.robots
        if ex.signals.headers:
            fields["headers"] = list(ex.signals.headers)
        if ex.signals.behaviour_flags:
            fields["behaviour"] = ex.signals.behaviour_score
            fields["flags"] = list(ex.signals.behaviour_flags)
    if ex.bytes_in:
        fields["bytes_in"] = ex.bytes_in
    if ex.error:
        fields["error"] = ex.error
    access.info("access", extra={"fields": fields})
