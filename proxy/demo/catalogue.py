"""The demo store's catalogue, synthesised deterministically on first run.

No audio is committed: each track is rendered from a seed with numpy (a pad, a bass line, a
pentatonic melody and soft percussion over a I-V-vi-IV progression), then encoded to MP3 with
lameenc (the stream) and to FLAC with soundfile (the download). Covers are drawn with Pillow.
Files land in a cache folder and are reused while their recipe version matches.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 44100
RECIPE_VERSION = "1"  # bump when synthesis or encoding changes, so caches are rebuilt
Signal = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Track:
    slug: str
    title: str
    number: int
    seconds: int
    isrc: str
    seed: int
    tempo: int  # beats per minute


@dataclass(frozen=True, slots=True)
class Album:
    slug: str
    title: str
    year: int
    key_hz: float  # tonic frequency
    colours: tuple[str, str]  # cover gradient
    tracks: tuple[Track, ...]


@dataclass(frozen=True, slots=True)
class Catalogue:
    artist: str
    bio: str
    albums: tuple[Album, ...]

    def tracks(self) -> list[tuple[Album, Track]]:
        return [(album, track) for album in self.albums for track in album.tracks]

    def track(self, slug: str) -> tuple[Album, Track] | None:
        return next(((a, t) for a, t in self.tracks() if t.slug == slug), None)

    def album(self, slug: str) -> Album | None:
        return next((a for a in self.albums if a.slug == slug), None)


CATALOGUE = Catalogue(
    artist="Marla Veen",
    bio=(
        "Marla Veen writes slow, warm instrumentals on a battered upright synth and releases "
        "them herself. Every record here is sold and streamed directly by the artist."
    ),
    albums=(
        Album(
            slug="first-light",
            title="First Light",
            year=2025,
            key_hz=220.0,
            colours=("#f4a261", "#264653"),
            tracks=(
                Track("harbour-at-dawn", "Harbour at Dawn", 1, 62, "QZS6X2500001", 11, 84),
                Track("salt-and-cedar", "Salt and Cedar", 2, 71, "QZS6X2500002", 12, 92),
                Track("low-tide-lanterns", "Low Tide Lanterns", 3, 58, "QZS6X2500003", 13, 76),
            ),
        ),
        Album(
            slug="night-orchard",
            title="Night Orchard",
            year=2026,
            key_hz=196.0,
            colours=("#9b5de5", "#0b132b"),
            tracks=(
                Track("moth-waltz", "Moth Waltz", 1, 66, "QZS6X2600001", 21, 90),
                Track("glasshouse", "Glasshouse", 2, 60, "QZS6X2600002", 22, 100),
                Track("orchard-lights-out", "Orchard, Lights Out", 3, 74, "QZS6X2600003", 23, 70),
            ),
        ),
    ),
)

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_PENTATONIC = (0, 2, 4, 7, 9)
_PROGRESSION = (0, 4, 5, 3)  # I V vi IV as scale degrees


def _semitones(hz: float, n: float) -> float:
    return float(hz * 2.0 ** (n / 12.0))


def _env(n: int, attack: float, release: float) -> Signal:
    t = np.arange(n) / SAMPLE_RATE
    a = np.minimum(1.0, t / max(attack, 1e-4))
    r = np.exp(-t / max(release, 1e-4))
    return a * r


def _tone(hz: float, n: int, harmonics: tuple[float, ...], phase: float = 0.0) -> Signal:
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    for k, amp in enumerate(harmonics, start=1):
        out += amp * np.sin(2 * np.pi * hz * k * t + phase * k)
    return out


def synthesise(album: Album, track: Track) -> Signal:
    """Render a track as float64 stereo samples, shape (n, 2), peak -1 dBFS."""
    rng = np.random.default_rng(track.seed)
    n_total = track.seconds * SAMPLE_RATE
    left, right = np.zeros(n_total), np.zeros(n_total)
    beat = 60.0 / track.tempo
    bar = 4 * beat
    tonic = album.key_hz * 2.0 ** (rng.integers(-2, 3) / 12.0)

    def add(sig: Signal, start_s: float, pan: float) -> None:
        start = int(start_s * SAMPLE_RATE)
        if start >= n_total:
            return
        sig = sig[: n_total - start]
        left[start : start + len(sig)] += sig * np.cos(pan * np.pi / 2)
        right[start : start + len(sig)] += sig * np.sin(pan * np.pi / 2)

    n_bars = int(track.seconds / bar) + 1
    for b in range(n_bars):
        degree = _PROGRESSION[b % 4]
        root = _MAJOR[degree]
        chord = [root, _MAJOR[(degree + 2) % 7] + (12 if degree + 2 >= 7 else 0),
                 _MAJOR[(degree + 4) % 7] + (12 if degree + 4 >= 7 else 0)]
        start = b * bar
        n_bar = int(bar * SAMPLE_RATE * 1.3)
        pad_env = _env(n_bar, attack=0.6, release=bar * 0.9)
        for i, semi in enumerate(chord):
            hz = _semitones(tonic, semi)
            add(0.06 * pad_env * _tone(hz, n_bar, (1.0, 0.3, 0.12), phase=i), start, 0.3 + 0.2 * i)
        bass_hz = _semitones(tonic / 2, root)
        for step in range(2):
            n_b = int(beat * 2 * SAMPLE_RATE)
            add(0.16 * _env(n_b, 0.01, beat * 0.8) * _tone(bass_hz, n_b, (1.0, 0.25)),
                start + step * 2 * beat, 0.5)
        for eighth in range(8):
            if rng.random() < 0.55:
                semi = 12 + _PENTATONIC[int(rng.integers(0, 5))] + 12 * int(rng.random() < 0.2)
                n_m = int(beat * 1.5 * SAMPLE_RATE)
                note = 0.09 * _env(n_m, 0.005, beat * 0.35) * _tone(
                    _semitones(tonic, semi), n_m, (1.0, 0.5, 0.2, 0.1))
                add(note, start + eighth * beat / 2, float(rng.uniform(0.25, 0.75)))
        if b >= 2:  # percussion enters after two bars
            for q in range(4):
                n_k = int(0.25 * SAMPLE_RATE)
                t = np.arange(n_k) / SAMPLE_RATE
                if q % 2 == 0:
                    kick = np.sin(2 * np.pi * (50 + 60 * np.exp(-t * 30)) * t) * np.exp(-t * 14)
                    add(0.22 * kick, start + q * beat, 0.5)
                hat = rng.standard_normal(int(0.05 * SAMPLE_RATE))
                hat = np.diff(hat, prepend=0.0) * np.exp(-np.arange(len(hat)) / 300)
                add(0.02 * hat, start + q * beat + beat / 2, 0.65)

    stereo = np.stack([left, right], axis=1)
    fade = int(2.0 * SAMPLE_RATE)
    stereo[:fade] *= np.linspace(0, 1, fade)[:, None]
    stereo[-fade:] *= np.linspace(1, 0, fade)[:, None]
    peak = float(np.max(np.abs(stereo))) or 1.0
    return stereo * (10 ** (-1 / 20) / peak)


def _to_int16(samples: Signal) -> npt.NDArray[np.int16]:
    return np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)


def encode_mp3(samples: Signal, bitrate_kbps: int = 192) -> bytes:
    import lameenc

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(bitrate_kbps)
    encoder.set_in_sample_rate(SAMPLE_RATE)
    encoder.set_channels(2)
    encoder.set_quality(5)  # LAME's standard preset; 2 doubles the time for no audible gain here
    pcm = _to_int16(samples)
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())


def write_flac(samples: Signal, path: Path) -> None:
    import soundfile

    soundfile.write(str(path), _to_int16(samples), SAMPLE_RATE, format="FLAC", subtype="PCM_16")


def write_cover(album: Album, path: Path, size: int = 600) -> None:
    from PIL import Image, ImageDraw, ImageFont

    top = np.array([int(album.colours[0][i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
    bottom = np.array([int(album.colours[1][i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
    mix = np.linspace(0.0, 1.0, size)[:, None, None]
    pixels = (top * (1 - mix) + bottom * mix).repeat(size, axis=1).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for r in range(5):  # concentric rings, a record in the dusk
        radius = size * (0.12 + 0.07 * r)
        c = size / 2
        draw.ellipse((c - radius, c - radius, c + radius, c + radius),
                     outline=(255, 255, 255), width=2)
    font = ImageFont.load_default(size=42)
    draw.text((36, size - 110), album.title, fill=(255, 255, 255), font=font)
    draw.text((36, size - 60), CATALOGUE.artist, fill=(235, 235, 235),
              font=ImageFont.load_default(size=26))
    image.save(path, format="PNG", optimize=False)


def ensure_catalogue(cache_dir: Path, catalogue: Catalogue = CATALOGUE) -> Path:
    """Render every track and cover into cache_dir (once); return the folder."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = cache_dir / "manifest.json"
    recipe = hashlib.sha256(f"{RECIPE_VERSION}{catalogue!r}".encode()).hexdigest()
    if manifest_path.exists():
        try:
            if json.loads(manifest_path.read_text()).get("recipe") == recipe:
                return cache_dir
        except (OSError, ValueError):
            pass
    for album in catalogue.albums:
        write_cover(album, cache_dir / f"{album.slug}.png")
    # one process per core: synthesis and LAME are CPU-bound and each track is independent
    workers = min(len(catalogue.tracks()), os.cpu_count() or 1)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_render_track, album, track, cache_dir)
                for album, track in catalogue.tracks()]
        for job in jobs:
            job.result()
    manifest_path.write_text(json.dumps({"recipe": recipe}))
    return cache_dir


def _render_track(album: Album, track: Track, cache_dir: Path) -> None:
    samples = synthesise(album, track)
    for suffix, write in (
        ("mp3", lambda p: p.write_bytes(encode_mp3(samples))),
        ("flac", lambda p: write_flac(samples, p)),
    ):
        tmp = cache_dir / f"{track.slug}.{suffix}.tmp"
        write(tmp)
        tmp.replace(cache_dir / f"{track.slug}.{suffix}")
