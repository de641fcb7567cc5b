"""Audio countermeasures: cold-cache variant generation per track, watermark splice time per
request, and the marked copy's quality.

`python -m bench.audio [--seconds 240]` synthesises a track (proxy/audio/synth.py), has ffmpeg
encode it as a 192 kbps MP3 (what a store streams), then times, in this process (one core, as
one pool worker would): truncate to 30 s, a decoy, and the watermark pair (decode, mark, two
encodes). Then 1,000 per-client copies are spliced: the byte ranges of a copy (what the proxy
computes per request) and, as an upper bound, the copy assembled in memory.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from proxy.audio import codec, watermark
from proxy.audio.formats import AudioFormat
from proxy.audio.synth import render


def timed(label: str, fn: object, *args: object) -> object:
    started = time.perf_counter()
    result = fn(*args)  # type: ignore[operator]
    print(f"{label:40} {time.perf_counter() - started:7.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        soundfile.write(d / "master.wav", render(7, args.seconds, 196.0, 100.0, 44100), 44100,
                        "PCM_16")
        original = d / "track.mp3"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(d / "master.wav"), "-c:a",
                        "libmp3lame", "-b:a", "192k", str(original)], check=True)
        print(f"track: {args.seconds:.0f} s, 192 kbps MP3, {original.stat().st_size:,} bytes")
        timed("truncate to 30 s (remux)", codec.truncate, original, d / "t.mp3",
              AudioFormat.MP3, 30.0)
        timed("decoy (synthesise + encode)", codec.decoy, original, d / "d.mp3",
              AudioFormat.MP3, 1)
        secret = b"bench secret, 32 bytes long....."
        track = hashlib.sha256(original.read_bytes()).hexdigest()
        layout = timed("watermark pair (decode, mark, 2 encodes)", watermark.make_pair,
                       original, AudioFormat.MP3, d / "a.mp3", d / "b.mp3", secret, track,
                       192000)
        assert isinstance(layout, watermark.Layout)
        a, b = (d / "a.mp3").read_bytes(), (d / "b.mp3").read_bytes()
        plan, assemble = [], []
        for client in range(1000):
            started = time.perf_counter()
            parts = layout.parts(watermark.bits_of(
                watermark.payload(secret, track, f"198.51.100.{client % 250}", client)))
            plan.append(time.perf_counter() - started)
            body = b"".join((a, b)[v][s:e] for v, s, e in parts)
            assemble.append(time.perf_counter() - started)
        assert len(body) == layout.sizes[0]
        print(f"splice, byte ranges of one copy ({len(parts)} pieces): median "
              f"{statistics.median(plan) * 1e3:.3f} ms, max {max(plan) * 1e3:.3f} ms")
        print(f"splice, the copy assembled in memory: median "
              f"{statistics.median(assemble) * 1e3:.3f} ms, max {max(assemble) * 1e3:.3f} ms")
        (d / "copy.mp3").write_bytes(body)
        x, _ = codec.decode(original)
        y, _ = codec.decode(d / "copy.mp3")
        n = min(len(x), len(y))
        snr = 10 * np.log10(np.sum(x[:n] ** 2) / np.sum((x[:n] - y[:n]) ** 2))
        marks = 10 * np.log10(np.sum(x[:n] ** 2) / np.sum(
            watermark.mark(x[:n], 44100, secret, track, watermark.SEGMENTS[AudioFormat.MP3]) ** 2))
        print(f"quality: marked copy vs original decode {snr:.1f} dB SNR (the mark alone "
              f"{marks:.1f} dB below the music; the rest is the second MP3 encode)")


if __name__ == "__main__":
    main()
