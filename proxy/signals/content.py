"""What a request is after, from its path alone (the upstream has not answered yet).

A suffix table, not a regex: one rsplit and a dict lookup per request.
"""

from __future__ import annotations

from ..exchange import ContentKind

AUDIO_SUFFIXES = frozenset(
    {"mp3", "flac", "ogg", "oga", "opus", "wav", "m4a", "aac", "mp4a", "aif", "aiff", "alac", "wma"}
)
_SUFFIX_KINDS: dict[str, ContentKind] = {
    **{s: ContentKind.AUDIO for s in AUDIO_SUFFIXES},
    **{s: ContentKind.IMAGE for s in ("jpg", "jpeg", "png", "gif", "webp", "avif", "svg", "ico")},
    **{s: ContentKind.ASSET for s in ("css", "js", "mjs", "woff", "woff2", "ttf", "map")},
    **{s: ContentKind.FEED for s in ("rss", "atom", "xml")},
    **{s: ContentKind.PAGE for s in ("html", "htm")},
}
DECLARATION_PATHS = frozenset({"/robots.txt", "/ai.txt", "/llms.txt"})


_DECLARATION, _PAGE, _OTHER = ContentKind.DECLARATION, ContentKind.PAGE, ContentKind.OTHER


def content_kind(path: str) -> ContentKind:
    if path.startswith("/.well-known/") or path in DECLARATION_PATHS:
        return _DECLARATION
    last = path.rsplit("/", 1)[-1]
    if "." not in last:
        return _PAGE  # /album/first-light, /
    return _SUFFIX_KINDS.get(last.rsplit(".", 1)[-1].lower(), _OTHER)
