"""Rights declarations, all from one per-track policy file: `rules/rights.yaml`.

The EU text-and-data-mining exception (DSM Directive art. 4) yields to a reservation "expressed
in an appropriate manner, such as machine-readable means". Every machine-readable place one
can be expressed gets it, from the same file, so they never disagree:

- response headers on every answer: `tdm-reservation: 1` and `tdm-policy` (W3C TDMRep),
  `Content-Usage: train-ai=n` (IETF aipref), `X-Robots-Tag: noai, noimageai`;
- `/.well-known/tdmrep.json` (TDMRep), `/ai.txt` (Spawning), and `Content-Signal` and
  `Content-Usage` lines in robots.txt's `User-agent: *` group;
- rights tags inside every variant SonicShield serves (ID3 TCOP/WCOP/TSRC/TXXX, Vorbis
  comments, MP4 atoms);
- `sonicshield rights export`: the declarations keyed by ISRC, as CSV or JSON, the shape a
  rights registry takes in.

The file:

    version: 1
    defaults:                 # for every path; tracks override any of these
      reservation: true       # reserve text and data mining (tdm-reservation: 1)
      policy: https://artist.example/licensing    # where a licence can be asked for
      contact: mailto:rights@artist.example
      copyright: "2026 Example Artist"
      search: true            # Content-Signal search=yes: being found is fine
    tracks:
      - paths: [/stream/harbour-at-dawn.mp3, /download/harbour-at-dawn.flac]
        isrc: GBXXX2600001
        title: Harbour at Dawn
        artist: Example Artist
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .yamlsource import (
    ConfigError,
    LocatedDict,
    LocatedList,
    Mark,
    Problem,
    load_yaml_file,
    suggest,
)

_ISRC = re.compile(r"[A-Z]{2}[A-Z0-9]{3}[0-9]{7}")
_TERMS = ("reservation", "policy", "contact", "copyright", "search")
_TRACK_KEYS = ("paths", "isrc", "title", "artist", *_TERMS)
AUDIO_EXTENSIONS = ("mp3", "flac", "ogg", "oga", "opus", "wav", "m4a", "aac", "aif", "aiff")


@dataclass(frozen=True, slots=True)
class Terms:
    reservation: bool = True
    policy: str = ""
    contact: str = ""
    copyright: str = ""
    search: bool = True

    def headers(self) -> tuple[tuple[str, str], ...]:
        if not self.reservation:
            return (("tdm-reservation", "0"),)
        out = [("tdm-reservation", "1")]
        if self.policy:
            out.append(("tdm-policy", self.policy))
        out += [("Content-Usage", "train-ai=n"), ("X-Robots-Tag", "noai, noimageai")]
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Track:
    paths: tuple[str, ...]
    isrc: str
    title: str
    artist: str
    terms: Terms


@dataclass(frozen=True, slots=True)
class Rights:
    defaults: Terms = field(default_factory=Terms)
    tracks: tuple[Track, ...] = ()
    _by_path: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict, compare=False)

    def __reduce__(self) -> tuple[type[Rights], tuple[Terms, tuple[Track, ...]]]:
        # pickled without its path cache: the proxy hands the evidence writer a copy with
        # every batch, ten a second, and a full cache is some 100 KB and 1.4 ms of pickling
        return Rights, (self.defaults, self.tracks)

    def track(self, path: str) -> Track | None:
        for t in self.tracks:
            if any(fnmatch.fnmatchcase(path, p) for p in t.paths):
                return t
        return None

    def headers(self, path: str) -> tuple[tuple[str, str], ...]:
        """The declaration headers for a response to `path` (cached per path, bounded)."""
        hit = self._by_path.get(path)
        if hit is None:
            if len(self._by_path) >= 4096:
                self._by_path.clear()
            t = self.track(path)
            hit = self._by_path[path] = (t.terms if t else self.defaults).headers()
        return hit

    def tags(self, path: str) -> dict[str, str]:
        """Rights tags for a variant of `path` (written by proxy/audio/codec.py)."""
        t = self.track(path)
        terms = t.terms if t else self.defaults
        tags = {"copyright": terms.copyright, "rights_url": terms.policy,
                "tdm": "reserved: no text and data mining, no AI training"
                if terms.reservation else "not reserved"}
        if terms.contact:
            tags["contact"] = terms.contact
        if t is not None:
            tags.update(isrc=t.isrc, title=t.title, artist=t.artist)
        return {k: v for k, v in tags.items() if v}

    def tdmrep(self) -> str:
        """/.well-known/tdmrep.json: the tracks' own terms first, then the site's."""
        entries = []
        for t in self.tracks:
            for p in t.paths:
                entries.append(_tdmrep_entry(p, t.terms))
        entries.append(_tdmrep_entry("/*", self.defaults))
        return json.dumps(entries, indent=2) + "\n"

    def ai_txt(self) -> str:
        lines = ["# ai.txt (Spawning): what this site allows AI training to use.",
                 "User-Agent: *"]
        if self.defaults.reservation:
            lines += [f"Disallow: *.{ext}" for ext in AUDIO_EXTENSIONS]
            lines.append("Disallow: /")
        else:
            lines.append("Allow: /")
        return "\n".join(lines) + "\n"

    def robots_lines(self) -> list[str]:
        """Lines for robots.txt's `User-agent: *` group (Content Signals; IETF aipref)."""
        d = self.defaults
        search = "yes" if d.search else "no"
        train = "no" if d.reservation else "yes"
        return [f"Content-Signal: search={search}, ai-input={train}, ai-train={train}",
                f"Content-Usage: train-ai={'n' if d.reservation else 'y'}"]

    def export(self, fmt: str) -> str:
        """The declarations keyed by ISRC, as 'csv' or 'json'."""
        rows = [{"isrc": t.isrc, "title": t.title, "artist": t.artist,
                 "tdm_reservation": int(t.terms.reservation), "ai_training": "no"
                 if t.terms.reservation else "yes", "policy": t.terms.policy,
                 "contact": t.terms.contact, "copyright": t.terms.copyright,
                 "paths": " ".join(t.paths)} for t in self.tracks]
        if fmt == "json":
            return json.dumps({"tracks": rows}, indent=2) + "\n"
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["isrc"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()


def _tdmrep_entry(location: str, terms: Terms) -> dict[str, Any]:
    entry: dict[str, Any] = {"location": location, "tdm-reservation": int(terms.reservation)}
    if terms.reservation and terms.policy:
        entry["tdm-policy"] = terms.policy
    return entry


def load_rights(path: Path, display: str) -> Rights | None:
    """None when the file does not exist (declarations off, the store's own files pass)."""
    if not path.exists():
        return None
    doc = load_yaml_file(path, display)
    problems: list[Problem] = []
    if not isinstance(doc, LocatedDict) or doc.get("version") != 1:
        raise ConfigError([Problem(Mark(display, 1, 1),
                                   "expected a mapping with 'version: 1'")])
    for key in doc:
        if key not in ("version", "defaults", "tracks"):
            problems.append(Problem(doc.key_mark(key), f"unknown key '{key}'"
                                    f"{suggest(key, ('version', 'defaults', 'tracks'))}"))
    defaults = _terms(doc.get("defaults", {}), doc, "defaults", Terms(), problems)
    tracks = []
    items = doc.get("tracks", [])
    if not isinstance(items, LocatedList):
        if items:
            problems.append(Problem(doc.value_mark("tracks"), "'tracks' must be a list"))
        items = []
    seen: dict[str, Mark] = {}
    for i, item in enumerate(items):
        mark = items.item_mark(i) if isinstance(items, LocatedList) else doc.mark
        if not isinstance(item, LocatedDict):
            problems.append(Problem(mark, "each track must be a mapping"))
            continue
        for key in item:
            if key not in _TRACK_KEYS:
                problems.append(Problem(item.key_mark(key), f"unknown key '{key}'"
                                        f"{suggest(key, _TRACK_KEYS)}"))
        paths = item.get("paths")
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not paths or not all(
                isinstance(p, str) and p.startswith("/") for p in paths):
            problems.append(Problem(item.value_mark("paths") if "paths" in item else mark,
                                    "'paths' must be paths or globs starting with '/'"))
            paths = []
        isrc = str(item.get("isrc", "")).replace("-", "").upper()
        if not _ISRC.fullmatch(isrc):
            problems.append(Problem(item.value_mark("isrc") if "isrc" in item else mark,
                                    f"'isrc' must be an ISRC like GBXXX2600001 (country, "
                                    f"registrant, year, number), got {item.get('isrc')!r}"))
        elif isrc in seen:
            problems.append(Problem(item.value_mark("isrc"), f"ISRC {isrc} is listed twice "
                                    f"(first at {seen[isrc]})"))
        else:
            seen[isrc] = item.value_mark("isrc")
        for key in ("title", "artist"):
            if key in item and not isinstance(item[key], str | int):
                problems.append(Problem(item.value_mark(key), f"'{key}' must be text"))
        terms = _terms(item, None, "", defaults, problems)
        tracks.append(Track(tuple(paths), isrc, str(item.get("title", "")),
                            str(item.get("artist", "")), terms))
    if problems:
        raise ConfigError(problems)
    return Rights(defaults=defaults, tracks=tuple(tracks))


def _terms(raw: Any, parent: LocatedDict | None, key: str, base: Terms,
           problems: list[Problem]) -> Terms:
    if not isinstance(raw, LocatedDict):
        if parent is not None and key in parent:
            problems.append(Problem(parent.value_mark(key), f"'{key}' must be a mapping"))
        return base
    values: dict[str, Any] = {}
    for name in _TERMS:
        if name not in raw:
            continue
        value = raw[name]
        if name in ("reservation", "search"):
            if not isinstance(value, bool):
                problems.append(Problem(raw.value_mark(name), f"'{name}' must be true or false"))
                continue
        elif not isinstance(value, str):
            problems.append(Problem(raw.value_mark(name), f"'{name}' must be text"))
            continue
        values[name] = value
    if parent is not None:
        for name in raw:
            if name not in _TERMS:
                problems.append(Problem(raw.key_mark(name), f"unknown key '{name}' in "
                                        f"'{key}'{suggest(name, _TERMS)}"))
    return replace(base, **values)
