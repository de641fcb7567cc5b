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

from ..audio.synth import Signal, render

SAMPLE_RATE = 44100
RECIPE_VERSION = "1"  # bump when synthesis or encoding changes, so caches are rebuilt


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

def synthesise(album: Album, track: Track) -> Signal:
    """Render a track as float64 stereo samples, shape (n, 2), peak -1 dBFS."""
    return render(track.seed, track.seconds, album.key_hz, track.tempo, SAMPLE_RATE)


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
