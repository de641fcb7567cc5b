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


_MP3_KBPS = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 layer III
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2 and 2.5
}
_MP3_RATES = (44100, 48000, 32000)


def seconds_per_byte(head: bytes, size: int) -> float | None:
    """How many seconds of audio a byte of this file holds, from its first bytes (8 KiB is
    plenty) and its whole size: MP3 (the frame header's bitrate, or a Xing/Info header's frame
    count), FLAC (STREAMINFO's samples), WAV (the byte rate). None when it cannot be told."""
    if head[:4] == b"fLaC" and len(head) >= 26 and size > 0:
        info = int.from_bytes(head[18:26], "big")
        rate, samples = info >> 44, info & ((1 << 36) - 1)
        return samples / rate / size if rate and samples else None
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        pos = 12
        while pos + 20 <= len(head):
            chunk, length = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
            if chunk == b"fmt ":
                byte_rate = int.from_bytes(head[pos + 16:pos + 20], "little")
                return 1.0 / byte_rate if byte_rate else None
            pos += 8 + length + (length & 1)
        return None
    skip = _id3_size(head)
    frame = head[skip:skip + 4]
    if not _mp3_frame(frame):
        return None
    mpeg1 = (frame[1] >> 3) & 3 == 3
    kbps = _MP3_KBPS[1 if mpeg1 else 2][frame[2] >> 4]
    rate = _MP3_RATES[(frame[2] >> 2) & 3] // (1 if mpeg1 else 2 if (frame[1] >> 3) & 3 == 2
                                                else 4)
    mono = frame[3] >> 6 == 3
    side = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    xing = head[skip + 4 + side:skip + 12 + side + 4]
    if xing[:4] in (b"Xing", b"Info") and int.from_bytes(xing[4:8], "big") & 1 and size > skip:
        frames = int.from_bytes(xing[8:12], "big")
        return frames * (1152 if mpeg1 else 576) / rate / (size - skip) if frames else None
    return 8.0 / (kbps * 1000)
