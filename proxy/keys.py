"""Secret key files (the watermark secret, the evidence chain key): 32 random bytes in a file
only this user can read, made on first use."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_key(path: Path, what: str = "key") -> bytes:
    """The key in `path`, made on first use. Keep it: what it signs can only be checked
    with it."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by another process a moment ago
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        key = path.read_bytes()
    if len(key) < 16:
        raise ValueError(f"{path}: a {what} needs at least 16 bytes, it has {len(key)}")
    return key
