"""Music-like audio from a seed: the demo store's catalogue and the decoys served to crawlers.

Deterministic (numpy's PCG64 from the seed), at any sample rate, in well under a second per
minute of audio.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Signal = npt.NDArray[np.float64]

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_PENTATONIC = (0, 2, 4, 7, 9)
_PROGRESSION = (0, 4, 5, 3)  # I V vi IV as scale degrees


def _semitones(hz: float, n: float) -> float:
    return float(hz * 2.0 ** (n / 12.0))


def _env(n: int, attack: float, release: float, sr: int) -> Signal:
    t = np.arange(n) / sr
    a = np.minimum(1.0, t / max(attack, 1e-4))
    r = np.exp(-t / max(release, 1e-4))
    return a * r


def _tone(
    hz: float, n: int, harmonics: tuple[float, ...], sr: int, phase: float = 0.0
) -> Signal:
    t = np.arange(n) / sr
    out = np.zeros(n)
    for k, amp in enumerate(harmonics, start=1):
        out += amp * np.sin(2 * np.pi * hz * k * t + phase * k)
    return out


def render(seed: int, seconds: float, key_hz: float, tempo: float, sr: int) -> Signal:
    """float64 stereo samples, shape (n, 2), peak -1 dBFS: a pad, a bass line, a pentatonic
    melody and soft percussion over a I-V-vi-IV progression, all from `seed`."""
    rng = np.random.default_rng(seed)
    n_total = round(seconds * sr)
    left, right = np.zeros(n_total), np.zeros(n_total)
    beat = 60.0 / tempo
    bar = 4 * beat
    tonic = key_hz * 2.0 ** (rng.integers(-2, 3) / 12.0)

    def add(sig: Signal, start_s: float, pan: float) -> None:
        start = int(start_s * sr)
        if start >= n_total:
            return
        sig = sig[: n_total - start]
        left[start : start + len(sig)] += sig * np.cos(pan * np.pi / 2)
        right[start : start + len(sig)] += sig * np.sin(pan * np.pi / 2)

    n_bars = int(seconds / bar) + 1
    for b in range(n_bars):
        degree = _PROGRESSION[b % 4]
        root = _MAJOR[degree]
        chord = [root, _MAJOR[(degree + 2) % 7] + (12 if degree + 2 >= 7 else 0),
                 _MAJOR[(degree + 4) % 7] + (12 if degree + 4 >= 7 else 0)]
        start = b * bar
        n_bar = int(bar * sr * 1.3)
        pad_env = _env(n_bar, 0.6, bar * 0.9, sr)
        for i, semi in enumerate(chord):
            hz = _semitones(tonic, semi)
            pad = _tone(hz, n_bar, (1.0, 0.3, 0.12), sr, phase=i)
            add(0.06 * pad_env * pad, start, 0.3 + 0.2 * i)
        bass_hz = _semitones(tonic / 2, root)
        for step in range(2):
            n_b = int(beat * 2 * sr)
            add(0.16 * _env(n_b, 0.01, beat * 0.8, sr) * _tone(bass_hz, n_b, (1.0, 0.25), sr),
                start + step * 2 * beat, 0.5)
        for eighth in range(8):
            if rng.random() < 0.55:
                semi = 12 + _PENTATONIC[int(rng.integers(0, 5))] + 12 * int(rng.random() < 0.2)
                n_m = int(beat * 1.5 * sr)
                note = 0.09 * _env(n_m, 0.005, beat * 0.35, sr) * _tone(
                    _semitones(tonic, semi), n_m, (1.0, 0.5, 0.2, 0.1), sr)
                add(note, start + eighth * beat / 2, float(rng.uniform(0.25, 0.75)))
        if b >= 2:  # percussion enters after two bars
            for q in range(4):
                n_k = int(0.25 * sr)
                t = np.arange(n_k) / sr
                if q % 2 == 0:
                    kick = np.sin(2 * np.pi * (50 + 60 * np.exp(-t * 30)) * t) * np.exp(-t * 14)
                    add(0.22 * kick, start + q * beat, 0.5)
                hat = rng.standard_normal(int(0.05 * sr))
                hat = np.diff(hat, prepend=0.0) * np.exp(-np.arange(len(hat)) / 300)
                add(0.02 * hat, start + q * beat + beat / 2, 0.65)

    stereo = np.stack([left, right], axis=1)
    fade = int(2.0 * sr)
    stereo[:fade] *= np.linspace(0, 1, fade)[:, None]
    stereo[-fade:] *= np.linspace(1, 0, fade)[:, None]
    peak = float(np.max(np.abs(stereo))) or 1.0
    return stereo * (10 ** (-1 / 20) / peak)


