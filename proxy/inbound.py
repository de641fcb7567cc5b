"""Trust boundary: what a request head must be before anything judges it.

Three checks, each small and paranoid, run before classification:

- The head's size. aiohttp limits each line and the number of header lines, but not their
  sum: 98 headers of 8 KB each (790 KB, under every per-line limit) were accepted, and 300
  such unfinished heads took 450 MB. `BoundedHeadHandler` counts the bytes of a head as they
  arrive and answers 431 and closes once they pass `limits.max_request_head` (32 KiB by
  default, what nginx's `large_client_header_buffers 4 8k` allows), before the parser has
  buffered more.
- The framing. RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing (400); a coding
  other than `chunked` is one the proxy does not apply and must not pass on silently (501);
  a declared Content-Length over `limits.max_request_body` is refused (413) before the store
  hears of the request. Host must be there once (HTTP/1.1) and be an RFC 3986 authority
  (400): it is copied into `Forwarded`, so a quote in it would forge a field.
- The target. The rules, the variant cache and the store must all see one path, or a
  spelling that the rules judge one way and the store resolves another walks past them
  (`/.well-known/../stream/track1.mp3` was a declaration to the rules and a master to the
  store). `parse_target` makes that one path:

  1. absolute-form (`http://host/x`) is accepted only when it names the store itself (the
     upstream's or the public URL's authority); any other authority is 400: the proxy is
     never a forward proxy, whatever the target says;
  2. percent-encodings must be well formed; unreserved characters are decoded, the rest
     written with upper-case hex; an encoded `/`, `\\` or NUL is refused (a store that
     decodes before routing would split a segment the rules saw whole);
  3. `;parameters` are dropped from every segment (Tomcat and Spring drop them, so
     `/..;x/` is `..` there), then empty segments (`//`) are merged and dot segments
     removed (RFC 3986 5.2.4); a `..` above the root is refused;
  4. a raw backslash, control character or `#` is refused; any other character outside
     RFC 3986's path set is percent-encoded.

  What results is sent upstream (`Target.upstream`), and its decoded form (`Target.path`) is
  what the rules judge and the caches key on.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote

from aiohttp import HttpVersion11, web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDictProxy, MultiMapping
from yarl import URL

from .logs import log_event

log = logging.getLogger("sonicshield")


class Refused(Exception):
    """The request head is refused: `status` is the answer, `reason` says why (for the log
    and the client)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    """The request target, normalised.

    path:  decoded and normalised: what the rules judge, the caches key on and logs show.
    wire:  the same path as it is sent upstream (percent-encoded, normalised).
    query: the query string as the client sent it ("" when none).
    """

    path: str
    wire: str
    query: str

    @property
    def upstream(self) -> str:
        return f"{self.wire}?{self.query}" if self.query else self.wire


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar without pct-encoded: unreserved, sub-delims, ':' and '@' (and '/' between)
_PATH_CHARS = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
_HEX = frozenset("0123456789abcdefABCDEF")
_NEVER_DECODED = {"2F": "an encoded '/'", "5C": "an encoded '\\'", "00": "an encoded NUL"}
# a path with nothing to decode, drop or merge (no %, ;, \\, or control characters)
_PLAIN = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@/]*")
_ABSOLUTE = re.compile(r"^(?i:https?)://(?P<authority>[^/?#]*)(?P<rest>[/?].*)?$", re.S)


def parse_target(raw: str, authorities: frozenset[str]) -> Target:
    """The normalised target of a request whose raw target is `raw`; `authorities` are the
    lower-case host[:port] values an absolute-form target may name. Raises Refused (400)."""
    if not raw.startswith("/"):
        m = _ABSOLUTE.match(raw)
        if m is None:
            raise Refused(400, "the request target is not a path")
        if m["authority"].lower() not in authorities:
            raise Refused(400, "the request target names another host: this is not a "
                               "forward proxy")
        raw = m["rest"] or "/"
        if raw.startswith("?"):
            raw = "/" + raw
    path, _, query = raw.partition("?")
    if "#" in raw:
        raise Refused(400, "a '#' in the request target")
    if _PLAIN.fullmatch(path) and "//" not in path and "/." not in path:
        return Target(path=path, wire=path, query=query)  # nothing to normalise: most paths
    segments = [_segment(s) for s in path.split("/")[1:]]
    out: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "..":
            if not out:
                raise Refused(400, "the path climbs above the root ('..')")
            out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        elif segment or last:  # '//' merged; a trailing '/' kept
            out.append(segment)
    wire = "/" + "/".join(out)
    try:
        decoded = unquote(wire, errors="strict")
    except UnicodeDecodeError:
        raise Refused(400, "the path is not UTF-8 once decoded") from None
    return Target(path=decoded, wire=wire, query=query)


def _segment(text: str) -> str:
    """One path segment: parameters dropped, percent-encodings checked and normalised."""
    text = text.split(";", 1)[0]
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            pair = text[i + 1:i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise Refused(400, "a malformed percent-encoding in the path")
            pair = pair.upper()
            if pair in _NEVER_DECODED:
                raise Refused(400, f"{_NEVER_DECODED[pair]} in the path")
            decoded = chr(int(pair, 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + pair)
            i += 3
            continue
        if c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F:
            raise Refused(400, "a backslash or control character in the path")
        out.append(c if c in _PATH_CHARS else "".join(
            f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape")))
        i += 1
    return "".join(out)


# RFC 3986 3.2.2: host = IP-literal / IPv4address / reg-name, then an optional port. No
# quotes, backslashes, spaces or commas: nothing that could end a quoted-string in Forwarded.
_AUTHORITY = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+;=%]+)(?::[0-9]{0,5})?$")


def valid_authority(value: str) -> bool:
    return _AUTHORITY.match(value) is not None


def site_authorities(*urls: str) -> frozenset[str]:
    """The lower-case host[:port] spellings of these URLs' authorities (the port left out
    too where it is the scheme's default): what an absolute-form target may name."""
    out: set[str] = set()
    for text in urls:
        if not text:
            continue
        url = URL(text)
        host = (url.raw_host or "").lower()
        if ":" in host:
            host = f"[{host}]"
        out.add(f"{host}:{url.port}")
        if url.is_default_port():
            out.add(host)
    return frozenset(out)


def header_list(headers: MultiMapping[str], name: str) -> list[str]:
    """Every comma-separated element of every `name` line, in order, stripped."""
    return [item.strip() for line in headers.getall(name, ()) for item in line.split(",")
            if item.strip()]


def check_framing(request: web.Request, max_body: int) -> None:
    """Framing and Host, before anything else reads the request. Raises Refused."""
    headers: CIMultiDictProxy[str] = request.headers
    codings = [t.lower() for t in header_list(headers, "Transfer-Encoding")]
    if codings:
        if request.version < HttpVersion11:
            raise Refused(400, "Transfer-Encoding in an HTTP/1.0 request")
        if codings != ["chunked"]:
            raise Refused(501, "a transfer coding other than chunked: "
                               + ", ".join(c for c in codings if c != "chunked"))
    length = request.content_length
    if max_body and length is not None and length > max_body:
        raise Refused(413, f"a request body of {length} bytes; the limit is {max_body}")
    hosts = headers.getall("Host", ())
    if len(hosts) > 1:
        raise Refused(400, "more than one Host header")
    if not hosts:
        if request.version >= HttpVersion11:
            raise Refused(400, "no Host header in an HTTP/1.1 request")
    elif not valid_authority(hosts[0]):
        raise Refused(400, "the Host header is not a host[:port]")


def refusal(request: web.Request, refused: Refused) -> web.Response:
    """The answer to a refused head: the status and its reason, the connection closed where
    what follows cannot be trusted to be framed as the client meant."""
    log_event(log, logging.WARNING, "bad-request", client=request.remote,
              status=refused.status, reason=refused.reason)
    resp = web.Response(status=refused.status, text=f"{refused.status} "
                        f"{HTTPStatus(refused.status).phrase}: {refused.reason}\n")
    if refused.status != 400 or "Transfer-Encoding" in request.headers:
        resp.force_close()
    return resp


class BoundedHeadHandler(RequestHandler):
    """aiohttp's connection handler with a cap on the whole request head.

    Between two requests every byte received belongs to a head until its blank line; the
    bytes are counted as they arrive, and past `head_limit` the client gets 431 and the
    connection is closed before the parser holds more. Body bytes (a request's payload still
    open) are not counted. Installed by `bound_heads()`.
    """

    head_limit = 32 * 1024
    _head_bytes = 0
    _tail = b""  # the last 3 bytes of the head so far, to see a blank line split over reads
    _payload: object = None  # the newest request's body stream, while it may be open

    def data_received(self, data: bytes) -> None:
        payload = self._payload
        in_head = payload is None or payload.is_eof()  # type: ignore[attr-defined]
        if in_head and not self._upgraded and not self._force_close:
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            size = self._head_bytes + (len(data) if end < 0 else end + 4 - len(self._tail))
            if size > self.head_limit:
                self._refuse_head(size)
                return
            if end < 0:
                self._head_bytes, self._tail = size, seen[-3:]
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:  # a head (or more) was completed
            self._head_bytes, self._tail = 0, b""
            self._payload = self._messages[-1][1] if self._messages else None

    def _refuse_head(self, size: int) -> None:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log_event(log, logging.WARNING, "bad-request", client=peer[0] if peer else "",
                  status=431, reason=f"a request head over {self.head_limit} bytes")
        body = (f"431 Request Header Fields Too Large: a request head over {self.head_limit} "
                "bytes\n").encode()
        if self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        self.force_close()
        if self.transport is not None:
            self.transport.close()


class _BoundedServer(web.Server):
    head_limit = BoundedHeadHandler.head_limit

    def __call__(self) -> RequestHandler:
        handler = BoundedHeadHandler(self, loop=self._loop, **self._kwargs)
        handler.head_limit = self.head_limit
        return handler


def bound_heads(server: web.Server, limit: int) -> None:
    """Make `server` (an AppRunner's, after setup) build BoundedHeadHandlers with `limit`.
    aiohttp has no setting for the protocol class, so the server's class is swapped for a
    subclass whose only change is the handler it builds."""
    server.__class__ = _BoundedServer
    server.head_limit = limit  # type: ignore[attr-defined]
