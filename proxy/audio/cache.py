"""The variant cache: finished variant files in one folder, with a size cap.

Files are named `<64 hex>.<format>`: the key is a SHA-256 the proxy computed (never a name a
client chose, so no path can leave the folder), the suffix the audio format. Beyond the cap
the least recently served files go first. A file being served while it is evicted stays
readable (POSIX unlink semantics). Work in progress is written under `tmp/` and moved in with
an atomic rename, so a half-written file is never served; leftovers from a crash are removed
at start.
"""

from __future__ import annotations

import os
import re
import secrets
from collections import OrderedDict
from pathlib import Path

from .formats import AudioFormat

_KEY = re.compile(r"[0-9a-f]{64}")


class VariantCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.total = 0
        self._entries: OrderedDict[str, tuple[Path, int]] = OrderedDict()  # oldest first
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)
        found = []
        for path in root.iterdir():
            stem, _, suffix = path.name.partition(".")
            if path.is_file() and _KEY.fullmatch(stem) and suffix in set(AudioFormat):
                st = path.stat()
                found.append((st.st_mtime, stem, path, st.st_size))
        for _, key, path, size in sorted(found):
            self._entries[key] = (path, size)
            self.total += size
        self._evict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[Path, AudioFormat, int] | None:
        """The file, its format and size."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        path, size = entry
        if not path.exists():  # removed behind the proxy's back
            del self._entries[key]
            self.total -= size
            return None
        self._entries.move_to_end(key)
        return path, AudioFormat(path.name.partition(".")[2]), size

    def get_layout(self, key: str) -> str | None:
        """A watermark pair's layout (a small JSON sidecar, `<key>.layout`)."""
        path = self.root / f"{key}.layout"
        try:
            return path.read_text()
        except FileNotFoundError:
            return None

    def put_layout(self, key: str, text: str) -> None:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a cache key: {key!r}")
        tmp = self.new_tmp()
        tmp.write_text(text)
        os.replace(tmp, self.root / f"{key}.layout")

    def new_tmp(self, suffix: str = "") -> Path:
        return self.tmp / (secrets.token_hex(12) + suffix)

    def put(self, key: str, fmt: AudioFormat, tmp: Path) -> tuple[Path, AudioFormat, int]:
        """Move a finished file in under `key` (a SHA-256 hex digest)."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a cache key: {key!r}")
        path = self.root / f"{key}.{fmt.value}"
        os.replace(tmp, path)
        old = self._entries.pop(key, None)
        if old is not None:
            self.total -= old[1]
        size = path.stat().st_size
        self._entries[key] = (path, size)
        self.total += size
        self._evict(keep=key)
        return path, fmt, size

    def _evict(self, keep: str | None = None) -> None:
        while self.total > self.max_bytes and self._entries:
            key = next(iter(self._entries))
            if key == keep and len(self._entries) == 1:
                return  # one file bigger than the cap: keep the one just made
            path, size = self._entries.pop(key)
            path.unlink(missing_ok=True)
            (self.root / f"{key}.layout").unlink(missing_ok=True)
            self.total -= size
