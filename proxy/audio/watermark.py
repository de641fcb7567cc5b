"""Per-client forensic watermarks by A/B splicing (DESIGN.md section 4).

Once per track, in the process pool: the original is decoded, a faint noise-like mark w is
made for it, and two versions are encoded, A = x + w and B = x - w: MP3 with the same constant
bitrate and LAME's bit reservoir off (the two files then share one frame layout, byte for
byte), or FLAC with libFLAC's fixed 4096-sample blocks (frames of different sizes, the same
count). Every frame of such a file stands alone, so a copy for one client is a splice:
segment i (16 MP3 frames, 0.42 s at 44.1 kHz; 4 FLAC frames, 0.37 s) comes from A or from B
as bit i mod 64 of the client's 64-bit payload says. Per request that is a list of byte
ranges, stable under Range requests, computed in microseconds. A FLAC splice says "MD5
unknown" in its STREAMINFO (it is neither A nor B); every frame keeps its own CRC. WAV
splices are byte ranges of the PCM; Ogg Opus is encoded at a constant bitrate with one page
per segment (20 packets, 0.4 s), so A and B share one page layout and pages splice whole; M4A
is written as fragmented MP4 with one fragment per segment (16 AAC frames, 0.37 s at 44.1 kHz),
each fragment carrying its own sample table, so fragments splice whole.

The mark: for each segment, noise from a generator seeded by HMAC(secret, track, segment),
band-limited to 300 Hz - 5 kHz (where MP3 and AAC spend their bits), scaled to 32 dB below the
segment's own level, and faded to silence 2,000 samples from each edge (the encoder delay and
the splice point never smear one segment's sign into the next).

Tracing is informed: the suspect is decoded, aligned to the original by cross-correlation
(which also finds where an excerpt starts), its level matched, the original subtracted, and
each segment's residual correlated with that segment's mark. A bit is the sign of the summed
correlations of its segments; a copy is called marked only when the correlations are far
beyond what unmarked audio gives (a z-score).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from .codec import CodecError, Samples, decode, encode
from .formats import AudioFormat

# samples per segment: 16 MPEG-1 layer III frames of 1152; 4 FLAC frames of 4096 (libFLAC's
# block size as libsndfile writes it). A copy's frames never straddle two segments.
SEGMENTS = {AudioFormat.MP3: 16 * 1152, AudioFormat.FLAC: 4 * 4096, AudioFormat.WAV: 16 * 1152,
            AudioFormat.OPUS: 20 * 960,  # Opus: one Ogg page of twenty 20 ms packets
            AudioFormat.M4A: 16 * 1024}  # M4A: one MP4 fragment of sixteen AAC frames
FRAMES_PER_SEGMENT = {AudioFormat.MP3: 16, AudioFormat.FLAC: 4}
OPUS_RATE = 48000
GUARD = 2000  # samples faded out at each segment edge
BITS = 64
LEVEL_DB = -32.0
BAND = (300.0, 5000.0)
MARKED_Z = 6.0  # mean |z| per segment above which a copy is called marked
Floats = npt.NDArray[np.float64]


def marked_format(fmt: AudioFormat) -> AudioFormat:
    """The format a marked copy of a `fmt` original is made in. Ogg Vorbis copies are Ogg Opus
    (the same container and MIME type, at least the original's bitrate): libvorbis switches
    block sizes with the signal, so two encodings differing by a faint mark never share a
    packet layout, and nothing could be spliced."""
    return AudioFormat.OPUS if fmt is AudioFormat.VORBIS else fmt


def payload(secret: bytes, track: str, client: str, bucket: int) -> int:
    """The 64-bit mark for one client's copy of one track in one time bucket."""
    mac = hmac.new(secret, f"{track}\x00{client}\x00{bucket}".encode(), hashlib.sha256)
    return int.from_bytes(mac.digest()[:8], "big")


def bits_of(value: int) -> list[int]:
    return [(value >> (BITS - 1 - k)) & 1 for k in range(BITS)]


def _segment_noise(secret: bytes, track: str, index: int, rate: int, size: int) -> Floats:
    seed = hmac.new(secret, f"wm\x00{track}\x00{size}\x00{index}".encode(),
                    hashlib.sha256).digest()
    rng = np.random.default_rng(int.from_bytes(seed[:8], "big"))
    noise = rng.standard_normal(size)
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(size, 1.0 / rate)
    spectrum[(freqs < BAND[0]) | (freqs > BAND[1])] = 0.0
    shaped = np.fft.irfft(spectrum, size)
    window = np.ones(size)
    ramp = np.sin(np.linspace(0, np.pi / 2, 600)) ** 2
    window[:GUARD] = 0.0
    window[GUARD:GUARD + 600] = ramp
    window[size - GUARD:] = 0.0
    window[size - GUARD - 600:size - GUARD] = ramp[::-1]
    out: Floats = shaped * window
    return out / (np.sqrt(np.mean(out**2)) or 1.0)


def mark(x: Samples, rate: int, secret: bytes, track: str, size: int) -> Floats:
    """w, the mark for the whole of x (same shape), both channels alike, in segments of
    `size` samples."""
    n = len(x)
    w = np.zeros(n)
    mono = x.mean(axis=1)
    level = 10 ** (LEVEL_DB / 20)
    for i in range(n // size):
        seg = slice(i * size, (i + 1) * size)
        rms = float(np.sqrt(np.mean(mono[seg] ** 2)))
        w[seg] = _segment_noise(secret, track, i, rate, size) * rms * level
    return np.repeat(w[:, None], x.shape[1], axis=1)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the segments of A and B lie: bytes [0, head) are the file's head (tags and, from
    A, the Info frame or FLAC metadata), then segment i of version v is bytes
    [bounds[v][i], bounds[v][i + 1]), the last running to sizes[v]. MP3 versions have one
    layout; FLAC frames differ in size, so a FLAC copy's length depends on its bits.
    track: the original's SHA-256, which seeds the marks."""

    head: int
    bounds: tuple[tuple[int, ...], tuple[int, ...]]
    sizes: tuple[int, int]
    track: str = ""

    def parts(self, bits: list[int]) -> list[tuple[int, int, int]]:
        """(version 0=A 1=B, start, end) for a copy carrying `bits` (cycled over segments)."""
        out = [(0, 0, self.head)]
        count = len(self.bounds[0])
        for i in range(count):
            v = bits[i % BITS]
            end = self.bounds[v][i + 1] if i + 1 < count else self.sizes[v]
            out.append((v, self.bounds[v][i], end))
        return out

    def to_json(self) -> str:
        return json.dumps({"head": self.head, "bounds": self.bounds, "sizes": self.sizes,
                           "track": self.track})

    @classmethod
    def from_json(cls, text: str) -> Layout:
        d = json.loads(text)
        a, b = d["bounds"]
        return cls(int(d["head"]), (tuple(a), tuple(b)), (int(d["sizes"][0]),
                   int(d["sizes"][1])), str(d["track"]))


def _mp3_frames(data: bytes) -> list[int]:
    """Byte offsets of every MPEG audio frame (after an ID3v2 tag)."""
    bitrates = {3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
                2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
    rates = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
    pos = 0
    if data[:3] == b"ID3":
        pos = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    offsets = []
    while pos + 4 <= len(data):
        b1, b2 = data[pos + 1], data[pos + 2]
        if data[pos] != 0xFF or (b1 & 0xE0) != 0xE0:
            break
        version = (b1 >> 3) & 3
        kbps = bitrates[3 if version == 3 else 2][b2 >> 4]
        rate = rates[version][(b2 >> 2) & 3]
        samples = 1152 if version == 3 else 576
        length = samples // 8 * kbps * 1000 // rate + ((b2 >> 1) & 1)
        if length <= 0:
            break
        offsets.append(pos)
        pos += length
    return offsets


def _ogg_pages(data: bytes) -> list[tuple[int, int]]:
    """(byte offset, granule position) of every Ogg page."""
    pos, pages = 0, []
    while pos + 27 <= len(data):
        if data[pos:pos + 4] != b"OggS":
            raise CodecError(f"no Ogg page at byte {pos}")
        count = data[pos + 26]
        lacing = data[pos + 27:pos + 27 + count]
        pages.append((pos, int.from_bytes(data[pos + 6:pos + 14], "little", signed=True)))
        pos += 27 + count + sum(lacing)
    return pages


def _mp4_fragments(data: bytes) -> list[int]:
    """Byte offsets of every movie fragment (its moof box) of a fragmented MP4; an error for
    any top-level box after the first fragment that is not moof or mdat."""
    pos, fragments = 0, []
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        if size < 8:
            raise CodecError(f"a broken MP4 box at byte {pos}")
        if kind == b"moof":
            fragments.append(pos)
        elif fragments and kind != b"mdat":
            raise CodecError(f"an MP4 '{kind.decode(errors='replace')}' box among fragments")
        pos += size
    return fragments


def _flac_frames(path: Path) -> list[int]:
    """Byte offsets of every FLAC frame (the demuxer's packet positions)."""
    with av.open(str(path)) as c:
        return [int(p.pos) for p in c.demux(c.streams.audio[0]) if p.size and p.pos is not None]


def _wav_data(data: bytes) -> tuple[int, int]:
    """(offset of the PCM data, bytes per sample frame) of a RIFF/WAVE file."""
    pos, align = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk == b"fmt ":
            align = int.from_bytes(data[pos + 20:pos + 22], "little")
        if chunk == b"data" and align:
            return pos + 8, align
        pos += 8 + size + (size & 1)
    raise CodecError("no fmt and data chunks in the WAV file")


def _flac_unknown_md5(path: Path) -> None:
    """A splice of A and B is neither file: its STREAMINFO says 'MD5 unknown' (zeros, which
    FLAC allows) and 'frame sizes unknown', so `flac -t` checks each frame's own CRC."""
    with path.open("r+b") as f:
        head = bytearray(f.read(42))
        if head[:4] != b"fLaC" or head[4] & 0x7F != 0:
            raise CodecError("no STREAMINFO where FLAC puts it")
        head[12:18] = bytes(6)  # min and max frame size, 24 bits each
        head[26:42] = bytes(16)  # the MD5 of the audio
        f.seek(0)
        f.write(head)


def make_pair(src: Path, fmt: AudioFormat, a: Path, b: Path, secret: bytes, track: str,
              bit_rate: int) -> Layout:
    """Encode A and B of a track and return their layout."""
    encode_pair(src, fmt, a, b, secret, track, bit_rate)
    return layout_of(a, b, fmt, track)


def encode_pair(src: Path, fmt: AudioFormat, a: Path, b: Path, secret: bytes, track: str,
                bit_rate: int) -> None:
    """A = x + w and B = x - w (MP3: CBR, no bit reservoir; FLAC: libFLAC's fixed 4096
    blocks; WAV: PCM)."""
    if fmt not in SEGMENTS:
        raise CodecError(f"watermarks are made for MP3, FLAC, WAV, Ogg Opus and M4A, not {fmt}")
    # Opus runs at 48 kHz: an original at another rate (a Vorbis one) is marked at 48 kHz
    x, rate = decode(src, OPUS_RATE if fmt is AudioFormat.OPUS else None)
    if fmt is AudioFormat.MP3 and rate not in (32000, 44100, 48000):
        raise CodecError(f"watermarking needs MPEG-1 rates (32/44.1/48 kHz), got {rate}")
    w = mark(x, rate, secret, track, SEGMENTS[fmt]).astype(np.float32)
    for path, sign in ((a, 1.0), (b, -1.0)):
        samples = np.clip(x + sign * w, -1, 1).astype(np.float32)
        if fmt is AudioFormat.MP3:
            encode(samples, rate, fmt, bit_rate, path, {"reservoir": "0"})
        elif fmt is AudioFormat.M4A:
            # fragmented MP4, one fragment (moof + mdat) per segment: each fragment's sample
            # table is its own and its data offsets are relative to itself, so fragments from
            # A and B splice whole (no trailer: its random-access index would name A's offsets)
            encode(samples, rate, fmt, bit_rate or 128000, path, None, {
                "movflags": "+frag_keyframe+empty_moov+default_base_moof+skip_trailer",
                "frag_duration": str(SEGMENTS[fmt] * 1_000_000 // rate)})
        elif fmt is AudioFormat.OPUS:
            # constant bitrate: every packet the same size in A and B, so with one page per
            # segment the two files share one page layout (granules, sequence numbers)
            encode(samples, rate, fmt, bit_rate or 128000, path, {"frame_duration": "20"},
                   {"page_duration": str(SEGMENTS[fmt] * 1_000_000 // 48000),
                    "fflags": "+bitexact"})  # one stream serial number for both
        else:
            encode(samples, rate, fmt, 0, path)
        if fmt is AudioFormat.FLAC:
            _flac_unknown_md5(path)


def layout_of(a: Path, b: Path, fmt: AudioFormat, track: str) -> Layout:
    """Where the segments of a pair lie, read from the files (after any tags were added)."""
    if fmt is AudioFormat.WAV:  # PCM: the segments are plain byte ranges of the data chunk
        start, align = _wav_data(a.read_bytes()[:65536])
        size = a.stat().st_size
        bounds = tuple(range(start, size, SEGMENTS[fmt] * align))
        return Layout(head=start, bounds=(bounds, bounds), sizes=(size, size), track=track)
    if fmt is AudioFormat.M4A:
        da, db = a.read_bytes(), b.read_bytes()
        ma, mb = _mp4_fragments(da), _mp4_fragments(db)
        # (the heads may differ by the average bitrate the esds box states: a copy has A's)
        if len(ma) != len(mb) or len(ma) < 2 or any(
                da[x:x + 8] != db[y:y + 8] for x, y in zip(ma, mb, strict=True)):
            raise CodecError("the two marked encodings differ in fragment layout")
        return Layout(head=ma[0], bounds=(tuple(ma), tuple(mb)), sizes=(len(da), len(db)),
                      track=track)
    if fmt is AudioFormat.OPUS:
        pa, pb = _ogg_pages(a.read_bytes()), _ogg_pages(b.read_bytes())
        if [(p, g) for p, g in pa] != [(p, g) for p, g in pb] or len(pa) < 3:
            raise CodecError("the two marked encodings differ in page layout")
        audio = [p for p, granule in pa if granule > 0]  # after OpusHead and OpusTags
        return Layout(head=audio[0], bounds=(tuple(audio), tuple(audio)),
                      sizes=(a.stat().st_size, b.stat().st_size), track=track)
    if fmt is AudioFormat.MP3:
        da, db = a.read_bytes(), b.read_bytes()
        fa, fb = _mp3_frames(da), _mp3_frames(db)
        if fa != fb or len(da) != len(db) or len(fa) < 2:
            raise CodecError("the two marked encodings differ in frame layout")
        # the first frame is LAME's Info frame (no audio); audio frame k holds samples from
        # k*1152
        fa = fb = fa[1:]
    else:
        fa, fb = _flac_frames(a), _flac_frames(b)
        if len(fa) != len(fb) or not fa or fa[0] != fb[0]:
            raise CodecError("the two marked encodings differ in frame count or head")
    step = FRAMES_PER_SEGMENT[fmt]
    return Layout(head=fa[0], bounds=(tuple(fa[::step]), tuple(fb[::step])),
                  sizes=(a.stat().st_size, b.stat().st_size), track=track)


@dataclass(frozen=True, slots=True)
class Trace:
    bits: list[int]
    payload: int
    z: float  # mean |correlation| per segment, in units of its noise
    segments: int  # whole segments found in the suspect
    offset: float  # seconds into the original where the suspect starts

    @property
    def marked(self) -> bool:
        return self.z >= MARKED_Z and self.segments >= BITS


def _align(suspect: Floats, original: Floats, rate: int) -> int:
    """Where `suspect` starts in `original`, in samples (FFT cross-correlation)."""
    n = 1 << int(np.ceil(np.log2(len(original) + len(suspect))))
    corr = np.fft.irfft(np.fft.rfft(original, n) * np.conj(np.fft.rfft(suspect, n)), n)
    lag = int(np.argmax(corr))
    return lag if lag < n - len(suspect) else lag - n


def detect(suspect_path: Path, original_path: Path, secret: bytes, track: str) -> Trace:
    x, rate = decode(original_path)
    y, rate_y = decode(suspect_path)
    found = []
    if rate_y == rate:
        # the copy may have been served in any format: read every grid, keep the clearest
        found.append(_read_all(x, y, rate, secret, track, sorted(set(SEGMENTS.values()))))
    if rate != OPUS_RATE:
        # an Opus copy of a 44.1 kHz original (Vorbis originals are marked as Opus), or a
        # copy resampled since: the marks sit on a 48 kHz grid
        x, _ = decode(original_path, OPUS_RATE)
        y, _ = decode(suspect_path, OPUS_RATE)
        found.append(_read_all(x, y, OPUS_RATE, secret, track, [SEGMENTS[AudioFormat.OPUS]]))
    if not found:
        raise CodecError(f"the suspect runs at {rate_y} Hz, the original at {rate} Hz")
    return max(found, key=lambda t: t.z)


def _read_all(x: Samples, y: Samples, rate: int, secret: bytes, track: str,
              sizes: list[int]) -> Trace:
    xm, ym = x.mean(axis=1).astype(np.float64), y.mean(axis=1).astype(np.float64)
    start = _align(ym, xm, rate)
    return max((_read(xm, ym, start, rate, secret, track, size) for size in sizes),
               key=lambda t: t.z)


def _read(xm: Floats, ym: Floats, start: int, rate: int, secret: bytes, track: str,
          size: int) -> Trace:
    sums = np.zeros(BITS)
    zs = []
    segments = 0
    for i in range(len(xm) // size):
        lo = i * size
        if lo - start < 0 or lo + size - start > len(ym):
            continue
        ref = xm[lo:lo + size]
        got = ym[lo - start:lo - start + size]
        gain = float(np.dot(got, ref) / (np.dot(ref, ref) or 1.0))
        residual = got - gain * ref
        w = _segment_noise(secret, track, i, rate, size)
        energy = float(np.dot(w, w)) or 1.0
        c = float(np.dot(residual, w)) / energy  # the mark's estimated amplitude, signed
        noise = float(np.sqrt(np.mean(residual**2) / energy)) or 1e-12
        z = c / noise
        sums[i % BITS] += z
        zs.append(abs(z))
        segments += 1
    bits = [0 if s >= 0 else 1 for s in sums]
    value = int("".join(map(str, bits)), 2)
    return Trace(bits, value, float(np.mean(zs)) if zs else 0.0, segments, start / rate)
