"""Codec work for the audio variants. Runs in worker processes (proxy/audio/service.py), never
on the event loop: every function takes file paths and returns plain data.

- truncate: the first N seconds as a valid file that says it lasts N seconds. Lossless formats
  (FLAC, WAV) are decoded and re-encoded with libsndfile, so the samples are the source's own
  and FLAC's STREAMINFO is right; lossy formats are remuxed with PyAV (no generation loss):
  whole packets up to N seconds, which the muxers turn into a correct Xing header (MP3), final
  granule position (Ogg) or moov duration (M4A, with faststart).
- decoy: music-like audio synthesised from a seed (proxy/audio/synth.py), of the source's
  duration, sample rate, channels, format and bitrate, and nothing else of it.
- poison: a degraded copy (docs/poison.md has what it does and does not do).
- encode: samples -> a file of a given format and bitrate (PyAV's libmp3lame, libopus and AAC
  encoders; libsndfile for FLAC, WAV and Ogg Vorbis, written in chunks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import soundfile

from .formats import AudioFormat
from .synth import render

Samples = npt.NDArray[np.float32]  # shape (frames, channels), -1..1

_CONTAINERS = {AudioFormat.MP3: "mp3", AudioFormat.VORBIS: "ogg", AudioFormat.OPUS: "ogg",
               AudioFormat.M4A: "ipod"}
_ENCODERS = {AudioFormat.MP3: "libmp3lame", AudioFormat.OPUS: "libopus",
             AudioFormat.M4A: "aac"}
_SNDFILE = {AudioFormat.FLAC: ("FLAC", "PCM_16"), AudioFormat.WAV: ("WAV", "PCM_16"),
            AudioFormat.VORBIS: ("OGG", "VORBIS")}
_CHUNK = 1 << 18  # frames per libsndfile read/write (libsndfile's Ogg writer fails on huge ones)


class CodecError(Exception):
    """The source could not be read or the variant written (a corrupt or unexpected file)."""


@dataclass(frozen=True, slots=True)
class Info:
    format: AudioFormat
    duration: float  # seconds
    sample_rate: int
    channels: int
    bit_rate: int  # bits per second, 0 when the file does not say


def probe(path: Path, fmt: AudioFormat) -> Info:
    if fmt in (AudioFormat.FLAC, AudioFormat.WAV):
        i = soundfile.info(str(path))
        bits = {"PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "PCM_U8": 8, "PCM_S8": 8}
        rate = i.samplerate * i.channels * bits.get(i.subtype, 16)
        return Info(fmt, i.frames / i.samplerate, i.samplerate, i.channels, rate)
    try:
        with av.open(str(path)) as c:
            s = c.streams.audio[0]
            if s.duration is not None and s.time_base is not None:
                duration = float(s.duration * s.time_base)
            elif c.duration is not None:
                duration = c.duration / av.time_base
            else:
                duration = 0.0
            return Info(fmt, duration, s.codec_context.sample_rate, s.codec_context.channels,
                        s.codec_context.bit_rate or c.bit_rate or 0)
    except (av.FFmpegError, IndexError) as exc:
        raise CodecError(f"cannot read {fmt} audio: {exc}") from None


def decode(path: Path, rate: int | None = None) -> tuple[Samples, int]:
    """Every sample of the first audio stream, as float32 (frames, channels), at its own
    sample rate or resampled to `rate`."""
    try:
        with av.open(str(path)) as c:
            s = c.streams.audio[0]
            channels = s.codec_context.channels
            rate = rate or s.codec_context.sample_rate
            layout = "mono" if channels == 1 else "stereo"
            resampler = av.AudioResampler(format="flt", layout=layout, rate=rate)
            parts = []
            for frame in c.decode(s):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1, min(channels, 2)))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1, min(channels, 2)))
    except (av.FFmpegError, IndexError) as exc:
        raise CodecError(f"cannot decode: {exc}") from None
    if not parts:
        raise CodecError("no audio in the file")
    return np.concatenate(parts).astype(np.float32), rate


def encode(samples: Samples, rate: int, fmt: AudioFormat, bit_rate: int, dst: Path,
           codec_options: dict[str, str] | None = None,
           muxer_options: dict[str, str] | None = None) -> None:
    """Write samples as `fmt` (bit_rate for the lossy encoders; 0 for their default;
    codec_options and muxer_options: FFmpeg's, e.g. libmp3lame's reservoir, the Ogg muxer's
    page_duration)."""
    if fmt in _SNDFILE:
        container, subtype = _SNDFILE[fmt]
        with soundfile.SoundFile(str(dst), "w", rate, samples.shape[1], subtype,
                                 format=container) as out:
            for start in range(0, len(samples), _CHUNK):
                out.write(samples[start:start + _CHUNK])
        return
    options = {"movflags": "+faststart"} if fmt is AudioFormat.M4A else {}
    options.update(muxer_options or {})
    layout = "mono" if samples.shape[1] == 1 else "stereo"
    out_rate = 48000 if fmt is AudioFormat.OPUS else rate  # Opus runs at 48 kHz
    with av.open(str(dst), "w", format=_CONTAINERS[fmt], options=options) as c:
        stream: Any = c.add_stream(_ENCODERS[fmt], rate=out_rate, layout=layout)
        if bit_rate:
            stream.bit_rate = _nearest_bit_rate(fmt, bit_rate)
            if fmt is AudioFormat.OPUS:  # the source's average rate, held: Opus VBR wanders
                stream.codec_context.options = {"vbr": "off"}
        if codec_options:
            stream.codec_context.options = {**stream.codec_context.options, **codec_options}
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout,
                                      rate=out_rate)
        fifo = av.AudioFifo()
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, len(samples), _CHUNK):
            block = np.ascontiguousarray(samples[start:start + _CHUNK].T)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = rate
            for converted in resampler.resample(frame):
                fifo.write(converted)
            _drain(c, stream, fifo, frame_size, final=False)
        for converted in resampler.resample(None):
            fifo.write(converted)
        _drain(c, stream, fifo, frame_size, final=True)
        for packet in stream.encode(None):
            c.mux(packet)


def _drain(c: Any, stream: Any, fifo: Any, frame_size: int, final: bool) -> None:
    while fifo.samples >= frame_size or (final and fifo.samples):
        frame = fifo.read(min(frame_size, fifo.samples))
        frame.pts = None
        for packet in stream.encode(frame):
            c.mux(packet)


def _nearest_bit_rate(fmt: AudioFormat, bit_rate: int) -> int:
    if fmt is AudioFormat.MP3:  # CBR rates LAME accepts
        rates = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
        return 1000 * min(rates, key=lambda r: abs(r * 1000 - bit_rate))
    return max(16000, min(bit_rate, 320000))


def truncate(src: Path, dst: Path, fmt: AudioFormat, seconds: float) -> None:
    if fmt in (AudioFormat.FLAC, AudioFormat.WAV):
        _truncate_lossless(src, dst, seconds)
    else:
        _truncate_remux(src, dst, fmt, seconds)


def _truncate_lossless(src: Path, dst: Path, seconds: float) -> None:
    with soundfile.SoundFile(str(src)) as inp:
        left = round(seconds * inp.samplerate)
        # int32 carries 16- and 24-bit PCM exactly; float formats stay float
        dtype = "float64" if inp.subtype in ("FLOAT", "DOUBLE") else "int32"
        with soundfile.SoundFile(str(dst), "w", inp.samplerate, inp.channels, inp.subtype,
                                 format=inp.format) as out:
            while left > 0:
                block = inp.read(min(left, _CHUNK), dtype=dtype)
                if not len(block):
                    break
                out.write(block)
                left -= len(block)


def _truncate_remux(src: Path, dst: Path, fmt: AudioFormat, seconds: float) -> None:
    options = {"movflags": "+faststart"} if fmt is AudioFormat.M4A else {}
    try:
        with av.open(str(src)) as inp, av.open(str(dst), "w", format=_CONTAINERS[fmt],
                                                options=options) as out:
            ins = inp.streams.audio[0]
            outs = out.add_stream_from_template(ins)
            base = float(ins.time_base or 0)
            for packet in inp.demux(ins):
                if packet.pts is None or packet.size == 0:
                    continue
                length = (packet.duration or 0) * base
                # whole packets, the last one ending nearest N seconds
                if (packet.pts * base + length) - seconds > length / 2:
                    break
                packet.stream = outs
                out.mux(packet)
    except (av.FFmpegError, IndexError) as exc:
        raise CodecError(f"cannot remux {fmt}: {exc}") from None


def decoy(src: Path, dst: Path, fmt: AudioFormat, seed: int) -> None:
    """Synthesised audio shaped like the source (duration, rate, channels, format, bitrate)."""
    info = probe(src, fmt)
    seconds = max(info.duration, 1.0)
    rng = np.random.default_rng(seed)
    key_hz = float(110.0 * 2.0 ** (rng.integers(0, 12) / 12.0))
    tempo = float(rng.integers(70, 140))
    stereo = render(seed, seconds, key_hz, tempo, info.sample_rate)
    samples = (stereo if info.channels >= 2 else stereo.mean(axis=1, keepdims=True))
    encode(samples.astype(np.float32), info.sample_rate, fmt,
           info.bit_rate if not fmt.lossless else 0, dst)


def poison(src: Path, dst: Path, fmt: AudioFormat, strength: float, seed: int) -> None:
    """A degraded copy, same format, rate and bitrate: noise that follows the music's own
    spectrum (so much of it hides under the music) at strength/2 of each bin's magnitude, and
    everything above 16 kHz - 12 kHz x strength removed. It is degradation, not protection a
    model cannot learn from; docs/poison.md has its measured effect."""
    info = probe(src, fmt)
    x, rate = decode(src)
    rng = np.random.default_rng(seed)
    out = np.stack([_poison_channel(x[:, c].astype(np.float64), rate, strength, rng)
                    for c in range(x.shape[1])], axis=1)
    encode(np.clip(out, -1, 1).astype(np.float32), rate, fmt,
           info.bit_rate if not fmt.lossless else 0, dst)


_STFT = 2048  # samples per frame; hop half of it, sqrt-Hann analysis and synthesis


def _poison_channel(x: npt.NDArray[np.float64], rate: int, strength: float,
                    rng: np.random.Generator) -> npt.NDArray[np.float64]:
    n, hop = _STFT, _STFT // 2
    window = np.sqrt(np.hanning(n + 1)[:-1])  # squared, it sums to 1 at 50 % overlap
    padded = np.concatenate([np.zeros(n), x, np.zeros(n + hop)])
    out = np.zeros(len(padded))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    cutoff = 16000.0 - 12000.0 * strength
    keep = np.clip((cutoff + 500.0 - freqs) / 1000.0, 0.0, 1.0)  # a 1 kHz slope, not a wall
    frames = np.lib.stride_tricks.sliding_window_view(padded, n)[::hop]
    for first in range(0, len(frames), 512):
        block = frames[first:first + 512] * window
        spectrum = np.fft.rfft(block, axis=1)
        phase = np.exp(2j * np.pi * rng.random(spectrum.shape))
        spectrum = (spectrum + 0.5 * strength * np.abs(spectrum) * phase) * keep
        pieces = np.fft.irfft(spectrum, n, axis=1) * window
        for k, piece in enumerate(pieces):
            at = (first + k) * hop
            out[at:at + n] += piece
    result: npt.NDArray[np.float64] = out[n:n + len(x)]
    return result


def write_tags(path: Path, fmt: AudioFormat, tags: dict[str, str]) -> None:
    """Rights metadata into a variant, in each format's own vocabulary (proxy/rights.py names
    the keys: copyright, rights_url, isrc, title, artist, tdm, contact)."""
    if not tags:
        return
    if fmt in (AudioFormat.MP3, AudioFormat.WAV):
        _id3_tags(path, fmt, tags)
    elif fmt is AudioFormat.M4A:
        from mutagen.mp4 import MP4, MP4FreeForm

        m4a = MP4(str(path))
        if m4a.tags is None:
            m4a.add_tags()
        assert m4a.tags is not None
        atoms = {"copyright": "cprt", "title": "\xa9nam", "artist": "\xa9ART"}
        for key, atom in atoms.items():
            if key in tags:
                m4a.tags[atom] = [tags[key]]
        for key in ("isrc", "rights_url", "tdm", "contact"):
            if key in tags:
                m4a.tags[f"----:com.apple.iTunes:{key.upper()}"] = [
                    MP4FreeForm(tags[key].encode())]
        m4a.save()
    else:  # Vorbis comments: FLAC, Ogg Vorbis, Ogg Opus
        import mutagen

        audio = mutagen.File(str(path))
        if audio is None:
            raise CodecError(f"cannot tag {fmt}")
        if audio.tags is None:
            audio.add_tags()
        names = {"copyright": "COPYRIGHT", "rights_url": "LICENSE", "isrc": "ISRC",
                 "title": "TITLE", "artist": "ARTIST", "tdm": "TDM", "contact": "CONTACT"}
        for key, value in tags.items():
            audio.tags[names[key]] = [value]
        audio.save()


def _id3_tags(path: Path, fmt: AudioFormat, tags: dict[str, str]) -> None:
    from mutagen import id3

    frames: list[id3.Frame] = []
    if "copyright" in tags:
        frames.append(id3.TCOP(encoding=3, text=tags["copyright"]))
    if "rights_url" in tags:
        frames.append(id3.WCOP(url=tags["rights_url"]))
    if "isrc" in tags:
        frames.append(id3.TSRC(encoding=3, text=tags["isrc"]))
    if "title" in tags:
        frames.append(id3.TIT2(encoding=3, text=tags["title"]))
    if "artist" in tags:
        frames.append(id3.TPE1(encoding=3, text=tags["artist"]))
    for key in ("tdm", "contact"):
        if key in tags:
            frames.append(id3.TXXX(encoding=3, desc=key.upper(), text=tags[key]))
    if fmt is AudioFormat.WAV:
        from mutagen.wave import WAVE

        wave = WAVE(str(path))
        if wave.tags is None:
            wave.add_tags()
        assert wave.tags is not None
        for frame in frames:
            wave.tags.add(frame)
        wave.save()
        return
    try:
        tag = id3.ID3(str(path))
    except id3.ID3NoHeaderError:
        tag = id3.ID3()
    for frame in frames:
        tag.add(frame)
    tag.save(str(path))
