"""Test audio, made by the tests (nothing committed), and the real tools that judge it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile

from proxy.audio.synth import render

# ffmpeg encoders for each format: real tools, independent of the proxy's own encoders
FFMPEG_ARGS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "192k"],
    "flac": ["-c:a", "flac"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "4"],
    "opus": ["-c:a", "libopus", "-b:a", "96k"],
    "wav": ["-c:a", "pcm_s16le"],
    "m4a": ["-c:a", "aac", "-b:a", "128k"],
}


def make_sources(folder: Path, seconds: float = 20.0, seed: int = 1) -> dict[str, Path]:
    """One music-like clip, encoded by ffmpeg into every format."""
    folder.mkdir(parents=True, exist_ok=True)
    master = folder / "master.wav"
    soundfile.write(master, render(seed, seconds, 196.0, 100.0, 44100), 44100, "PCM_16")
    out = {}
    for ext, args in FFMPEG_ARGS.items():
        path = folder / f"track.{ext}"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(master), *args, str(path)],
                       check=True)
        out[ext] = path
    return out


def decode_errors(path: Path) -> str:
    """What `ffmpeg -v error` prints decoding the whole file ('' when it decodes cleanly)."""
    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                          capture_output=True, text=True, check=False).stderr.strip()


def ffprobe_duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return float(out)


def fingerprint(path: Path) -> np.ndarray:
    # Debian's fpcalc 1.5.1 on FFmpeg 5 reports the end of some files as a decoding error
    # (exit status 3) after computing the whole fingerprint: judge it by its output
    run = subprocess.run(["fpcalc", "-raw", "-plain", str(path)], capture_output=True,
                         text=True, check=False)
    values = run.stdout.strip().split(",")
    if not values[0].isdigit():
        raise RuntimeError(f"fpcalc {path}: {run.stderr.strip()}")
    return np.array([int(x) for x in values], dtype=np.uint32)


def similarity(a: Path, b: Path) -> float:
    """Chromaprint similarity, 0..1: 1 - the bit error rate of the two raw fingerprints at
    their best alignment (within +-2 s), as AcoustID's comparison does."""
    fa, fb = fingerprint(a), fingerprint(b)
    best = 0.0
    for shift in range(-16, 17):
        x, y = (fa[shift:], fb) if shift >= 0 else (fa, fb[-shift:])
        n = min(len(x), len(y))
        if n < 20:
            continue
        errors = np.unpackbits((x[:n] ^ y[:n]).view(np.uint8)).sum()
        best = max(best, 1.0 - errors / (32.0 * n))
    return best
