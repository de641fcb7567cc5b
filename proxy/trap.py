"""Trap links: a hidden link in every HTML page, to a path robots.txt disallows for everyone.

No browser follows a link it does not show, and no compliant crawler fetches a disallowed path,
so a request for the trap is strong evidence of a crawler that reads pages for links and
ignores robots.txt. The link goes at the end of the body, after </html> (HTML parsers put it
in the body all the same), so it costs a few bytes at the end and no buffering:

- identity bodies get the link as plain bytes;
- gzip bodies get it as a second gzip member (RFC 1952 allows several; browsers, curl,
  Python's gzip and Scrapy decode them all);
- other encodings (br, zstd, ...) are passed through untouched: a trap there would mean
  recompressing the page.

The body changes: a Content-Length from the store grows by the link's length (the link goes
out in the same write as the body's last bytes; a body of unknown length is sent chunked, with
the link as its last chunk) and a strong ETag becomes weak, as nginx does when it compresses on
the fly. Only full 200 answers to GET and HEAD are touched.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping

from multidict import CIMultiDict

DEFAULT_PATH = "/archive-complete/"


def link_html(path: str) -> bytes:
    return (
        f'\n<a href="{path}all-tracks" rel="nofollow" aria-hidden="true" tabindex="-1" '
        f'style="display:none">complete archive</a>\n'
    ).encode()


class TrapLinks:
    def __init__(self, path: str) -> None:
        self.path = path
        self.plain = link_html(path)
        self.gzipped = gzip.compress(self.plain, mtime=0)

    def injection(self, status: int, method: str, headers: Mapping[str, str]) -> bytes | None:
        """The bytes to append to this response, or None to leave it untouched."""
        if status != 200 or method not in ("GET", "HEAD"):
            return None
        if not headers.get("Content-Type", "").lower().startswith("text/html"):
            return None
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding == "identity":
            return self.plain
        if encoding == "gzip":
            return self.gzipped
        return None


def adjust_headers(headers: CIMultiDict[str]) -> None:
    """The body will change: a weak ETag (the caller sets the new Content-Length)."""
    etag = headers.get("ETag")
    if etag is not None and not etag.startswith("W/"):
        headers["ETag"] = "W/" + etag
