"""The measured effect of `poison`: how much it degrades, and how much a feature extractor
still hears.

`python -m bench.poison` synthesises a 60 s track, has ffmpeg encode it as a 192 kbps MP3,
poisons it at several strengths and reports, against the original's decode:
- SNR (dB): the degradation, the error's level against the music's;
- Chromaprint similarity (fpcalc, as tests/audio_tools.py computes it): does an audio
  fingerprinter still recognise the recording;
- chroma similarity: the mean cosine between per-frame pitch-class profiles (12 bins, from a
  4096-point STFT), the representation note- and chord-transcription models start from.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from proxy.audio import codec
from proxy.audio.formats import AudioFormat
from proxy.audio.synth import render
from tests.audio_tools import similarity

STRENGTHS = (0.1, 0.25, 0.5, 0.75, 1.0)


def chroma(x: np.ndarray, rate: int) -> np.ndarray:
    mono = x.mean(axis=1)
    n, hop = 4096, 2048
    frames = np.lib.stride_tricks.sliding_window_view(mono, n)[::hop] * np.hanning(n)
    mags = np.abs(np.fft.rfft(frames, axis=1))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    band = (freqs > 55) & (freqs < 4000)
    pitch = np.round(12 * np.log2(freqs[band] / 440.0)).astype(int) % 12
    out = np.zeros((len(frames), 12))
    for pc in range(12):
        out[:, pc] = mags[:, band][:, pitch == pc].sum(axis=1)
    return out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-12)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        soundfile.write(d / "m.wav", render(11, 60.0, 196.0, 100.0, 44100), 44100, "PCM_16")
        original = d / "track.mp3"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(d / "m.wav"), "-c:a", "libmp3lame",
                        "-b:a", "192k", str(original)], check=True)
        x, rate = codec.decode(original)
        cx = chroma(x, rate)
        print(f"{'strength':>8} {'SNR dB':>7} {'Chromaprint':>11} {'chroma':>7}")
        for strength in STRENGTHS:
            out = d / f"p{strength}.mp3"
            codec.poison(original, out, AudioFormat.MP3, strength, seed=1)
            y, _ = codec.decode(out)
            n = min(len(x), len(y))
            snr = 10 * np.log10(np.sum(x[:n] ** 2) / np.sum((x[:n] - y[:n]) ** 2))
            cy = chroma(y, rate)
            m = min(len(cx), len(cy))
            print(f"{strength:8.2f} {snr:7.1f} {similarity(original, out):11.3f} "
                  f"{float(np.mean(np.sum(cx[:m] * cy[:m], axis=1))):7.3f}")


if __name__ == "__main__":
    main()
