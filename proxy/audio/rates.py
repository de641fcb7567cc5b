"""Seconds of audio per byte of each track, learnt from the responses that start at byte 0,
so the proxy can count seconds of real audio served (listeners' players read in ranges: the
first range tells the rate, the rest use it)."""

from __future__ import annotations

from collections.abc import Mapping

from .formats import seconds_per_byte

HEAD = 8192
_TRACKS = 4096


class Head:
    """A stream_response tap keeping a body's first HEAD bytes."""

    __slots__ = ("data", "size")

    def __init__(self, size: int) -> None:
        self.data = b""
        self.size = size  # the whole file's size

    def __call__(self, chunk: bytes) -> None:
        if len(self.data) < HEAD:
            self.data += chunk[:HEAD - len(self.data)]


class AudioRates:
    def __init__(self) -> None:
        self._rates: dict[str, float] = {}

    def head(self, status: int, headers: Mapping[str, str]) -> Head | None:
        """A tap for a response that starts at the file's first byte (None for the others)."""
        if status == 200:
            size = headers.get("Content-Length", "")
        elif status == 206:
            span = headers.get("Content-Range", "")
            if not span.startswith("bytes 0-"):
                return None
            size = span.rpartition("/")[2]
        else:
            return None
        return Head(int(size)) if size.isdigit() else None

    def rate(self, path: str, head: Head | None = None) -> float:
        """Seconds per byte of `path` (0.0 when unknown), learnt from `head` when given."""
        if head is not None and head.data:
            learnt = seconds_per_byte(head.data, head.size)
            if learnt:
                if len(self._rates) >= _TRACKS:
                    self._rates.clear()
                self._rates[path] = learnt
                return learnt
        return self._rates.get(path, 0.0)
