"""Audio formats, recognised by their bytes: a store's `.mp3` may be anything, and its
Content-Type is often `application/octet-stream`.

MP3 (MPEG-1/2 layer III, with or without an ID3v2 tag), FLAC, Ogg Vorbis, Ogg Opus, WAV
(RIFF/WAVE) and M4A (an ISO BMFF `ftyp` box; AAC or ALAC inside).
"""

from __future__ import annotations

import enum


class AudioFormat(enum.StrEnum):
    MP3 = "mp3"
    FLAC = "flac"
    VORBIS = "ogg-vorbis"
    OPUS = "ogg-opus"
    WAV = "wav"
    M4A = "m4a"

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self]

    @property
    def lossless(self) -> bool:
        return self in (AudioFormat.FLAC, AudioFormat.WAV)


_CONTENT_TYPES = {
    AudioFormat.MP3: "audio/mpeg",
    AudioFormat.FLAC: "audio/flac",
    AudioFormat.VORBIS: "audio/ogg",
    AudioFormat.OPUS: "audio/ogg; codecs=opus",
    AudioFormat.WAV: "audio/wav",
    AudioFormat.M4A: "audio/mp4",
}
SNIFF_BYTES = 4096  # enough for an Ogg first page or an M4A ftyp box


def _id3_size(head: bytes) -> int:
    """Bytes of a leading ID3v2 tag (header, syncsafe size, optional footer), 0 if none."""
    if len(head) < 10 or head[:3] != b"ID3":
        return 0
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    return 10 + size + (10 if head[5] & 0x10 else 0)


def _mp3_frame(b: bytes) -> bool:
    """An MPEG audio layer III frame header: sync, a valid version, bitrate and rate."""
    if len(b) < 4 or b[0] != 0xFF or (b[1] & 0xE0) != 0xE0:
        return False
    version, layer = (b[1] >> 3) & 3, (b[1] >> 1) & 3
    bitrate, rate = b[2] >> 4, (b[2] >> 2) & 3
    return version != 1 and layer == 1 and bitrate not in (0, 15) and rate != 3


def sniff(head: bytes) -> AudioFormat | None:
    """The format of a file from its first bytes (SNIFF_BYTES is enough), None if not audio
    this module knows. An MP3 whose ID3 tag is longer than `head` is still recognised by the
    tag; the frame after it is not checked."""
    if head[:4] == b"fLaC":
        return AudioFormat.FLAC
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return AudioFormat.WAV
    if head[:4] == b"OggS":
        if b"OpusHead" in head[:200]:
            return AudioFormat.OPUS
        if b"\x01vorbis" in head[:200]:
            return AudioFormat.VORBIS
        return None
    if head[4:8] == b"ftyp":
        return AudioFormat.M4A
    skip = _id3_size(head)
    if skip:
        rest = head[skip:skip + 4]
        if rest[:4] == b"fLaC":
            return AudioFormat.FLAC
        return AudioFormat.MP3 if len(rest) < 4 or _mp3_frame(rest) else None
    return AudioFormat.MP3 if _mp3_frame(head[:4]) else None
