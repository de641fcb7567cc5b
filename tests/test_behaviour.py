"""Behaviour: decayed counters in a capped store, flags a listener never raises."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from proxy.signals.behaviour import (
    FAMILIES,
    WEIGHTS,
    BehaviourTracker,
    RequestFacts,
    families,
    score,
)
from proxy.signals.listings import Listings
from proxy.state import AUDIO, LONG_HALF_LIFE, NO_CONTEXT, REQ, ClientStore, StoreError


def facts(ip: str, path: str, *, method: str = "GET", rng: bool = True,
          referer: bool = True, streams: int = 0) -> RequestFacts:
    audio = path.endswith((".mp3", ".flac"))
    return RequestFacts(ip=ip, method=method, path=path, is_audio=audio,
                        is_page="." not in path.rsplit("/", 1)[-1], has_range=rng,
                        same_site_referer=referer, open_streams=streams)


def observe(t: BehaviourTracker, f: RequestFacts, now: float):
    return t.observe(f, t.store.row("i:" + f.ip, now))


def test_store_never_exceeds_its_capacity():
    store = ClientStore(1000, seed=1)
    keys = [f"i:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(20_000)]
    rows = {}
    for i, key in enumerate(keys):
        rows[key] = store.row(key, float(i))
    assert len(store) == 1000
    assert store.evictions == 19_000
    # every key still held is found at its row (the index survived 19,000 deletions) ...
    held = [k for k in keys if store.find(k) >= 0]
    assert len(held) == 1000
    assert all(store.find(k) == rows[k] for k in held)
    assert len({rows[k] for k in held}) == 1000
    # ... and the most recent keys are among them (the least recently seen go first)
    assert all(store.find(k) >= 0 for k in keys[-10:])


def test_counters_halve_every_half_life():
    store = ClientStore(10)
    r = store.row("i:1.2.3.4", 0.0)
    store.add(r, NO_CONTEXT, 8.0)
    store.add(r, REQ, 8.0)
    store.row("i:1.2.3.4", LONG_HALF_LIFE)
    assert store.value(r, NO_CONTEXT) == pytest.approx(4.0)
    assert store.value(r, REQ) == pytest.approx(8.0 / 2**10)  # the short half-life: 60 s


def test_counters_decay_across_frames_and_weights_stay_small():
    # counts are scaled to their row's frame (FRAME seconds) and rescaled on its first access
    # in a later one; a weight never exceeds 2
    store = ClientStore(10)
    r = store.row("i:1.2.3.4", 0.0)
    store.add(r, AUDIO, 6.0)
    other = -1
    for t in range(0, 50_001, 2_500):  # 14 hours in steps
        other = store.row("i:5.6.7.8", float(t) + 0.5)
        store.add(other, REQ)
        assert 1.0 <= store.w_short < 2.0
        assert 1.0 <= store.w_long < 2.0
    assert store.value(other, REQ) == pytest.approx(1.0, abs=1e-9)
    store.row("i:1.2.3.4", 50_000.5)
    assert store.value(r, AUDIO) == pytest.approx(6.0 * 2 ** (-50_000.5 / LONG_HALF_LIFE))


def test_workers_share_one_store(tmp_path):
    # two maps of one shared file, as two workers hold them: a key counted in one is the same
    # row, with the same counts, in the other; keys added by either are found by both
    path = tmp_path / "clients"
    ClientStore.create(path, 1000)
    a, b = ClientStore.attach(path, seed=1), ClientStore.attach(path, seed=2)
    ra = a.row("i:1.2.3.4", 10.0)
    a.add(ra, AUDIO, 3.0)
    rb = b.row("i:1.2.3.4", 10.0)
    assert rb == ra
    assert b.value(rb, AUDIO) == pytest.approx(3.0)
    b.add(rb, AUDIO)
    for i in range(3000):  # both add keys until well past the capacity
        (a if i % 2 else b).row(f"i:10.0.{i >> 8}.{i & 255}", 11.0 + i)
    assert len(a) == len(b) == 1000
    assert a.evictions == b.evictions == 2001
    for i in range(2990, 3000):
        key = f"i:10.0.{i >> 8}.{i & 255}"
        assert a.find(key) == b.find(key) >= 0


def test_a_store_for_other_hashes_or_no_store_is_refused(tmp_path):
    path = tmp_path / "clients"
    path.write_bytes(bytes(4096))
    with pytest.raises(StoreError, match="is not a SonicShield client store"):
        ClientStore.attach(path)
    path.unlink()
    ClientStore.create(path, 1000)
    ClientStore.attach(path)  # this process's hashes are the store's from now on
    seed = "54321" if os.environ.get("PYTHONHASHSEED") == "12345" else "12345"
    code = f"from proxy.state import ClientStore; ClientStore.attach({str(path)!r})"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}, timeout=60)
    assert other.returncode == 1
    assert other.stderr.strip().endswith(
        f"proxy.state.StoreError: {path}: this process hashes keys differently from the "
        "workers already using the store (PYTHONHASHSEED must be the same in all)")


def test_a_listener_session_raises_nothing():
    t = BehaviourTracker(ClientStore(100))
    now = 0.0
    session = ["/", "/static/style.css", "/cover/a.png", "/album/first-light",
               "/stream/harbour-at-dawn.mp3", "/stream/salt-and-cedar.mp3",
               "/track/moth-waltz", "/stream/moth-waltz.mp3"]
    for path in session:
        now += 2.0
        assert observe(t, facts("198.51.100.7", path), now).flags == ()
    # buying and downloading the album: whole files, but from the store's own page
    for track in ("harbour-at-dawn", "salt-and-cedar", "low-tide-lanterns"):
        now += 5.0
        result = observe(t, facts("198.51.100.7", f"/download/{track}.flac", rng=False), now)
        assert result.score < 0.3, result
    # a hundred other fans with the same browser and the same network do not add up
    for i in range(100):
        now += 0.5
        ip = f"198.51.100.{i}"
        observe(t, facts(ip, "/album/night-orchard"), now)
        assert observe(t, facts(ip, "/stream/glasshouse.mp3"), now).flags == ()


def test_a_rotating_crawler_is_flagged_by_its_second_track_and_tied_by_its_third():
    """Its network carries the context flags from the second track on (one family: weak, as
    two colleagues opening a shared link would be); the third address of the /24 doing the
    same adds rotation, a second family."""
    t = BehaviourTracker(ClientStore(1000))
    results = []
    for i, track in enumerate(["harbour-at-dawn", "salt-and-cedar", "low-tide-lanterns",
                               "moth-waltz", "glasshouse"]):
        ip = f"127.0.0.{2 + i}"  # a new address for every request
        results.append(observe(t, facts(ip, f"/stream/{track}.mp3", rng=False,
                                       referer=False), float(i)))
    assert results[0].score < 0.5
    assert {"no-context", "whole-file"} <= set(results[1].flags)
    assert results[1].score < 0.5
    assert "rotating" in results[2].flags
    assert all(r.score >= 0.5 for r in results[2:])


def test_one_family_of_flags_never_reaches_half():
    """The ladder: one kind of oddity is weak evidence, however many of its flags are up."""
    assert set(FAMILIES) == set(WEIGHTS)
    by_family: dict[str, list[str]] = {}
    for flag, family in FAMILIES.items():
        by_family.setdefault(family, []).append(flag)
    for family, flags in by_family.items():
        assert score(tuple(flags)) < 0.5, family
        assert families(tuple(flags)) == (family,)
    assert score(("no-context", "rotating")) >= 0.5
    assert score(("no-context", "whole-file")) == WEIGHTS["no-context"]


def test_a_fingerprint_never_ties_two_addresses_together():
    """A crawler with a popular browser's exact headers takes audio without context from
    one network; a listener elsewhere with those same headers, pasting a stream URL, is
    judged on its own doings."""
    t = BehaviourTracker(ClientStore(100))
    for i in range(8):
        observe(t, facts("203.0.113.9", f"/stream/t{i}.mp3", rng=False, referer=False),
                float(i))
    pasted = observe(t, facts("198.51.100.20", "/stream/t1.mp3", referer=False), 10.0)
    assert pasted.flags == ()


def test_a_player_starting_track_after_track_raises_track_run():
    """A claimed player taking the catalogue starts a new track every few seconds; a real
    one plays each before the next, and a podcast app takes the episodes of the feed it
    read, in a burst or not."""
    t = BehaviourTracker(ClientStore(100))
    first = observe(t, facts("192.0.2.40", "/download/a.flac", referer=False), 0.0)
    second = observe(t, facts("192.0.2.40", "/download/b.flac", referer=False), 4.0)
    assert "track-run" not in first.flags
    assert "track-run" in second.flags
    # the same track again (a seek, a replay) is no new start
    t2 = BehaviourTracker(ClientStore(100))
    for i in range(6):
        r = observe(t2, facts("192.0.2.41", "/stream/a.mp3", referer=False), float(i))
        assert "track-run" not in r.flags
    # a playlist of three-minute tracks, played through
    t3 = BehaviourTracker(ClientStore(100))
    for i in range(5):
        r = observe(t3, facts("192.0.2.42", f"/stream/t{i}.mp3", referer=False), i * 180.0)
        assert "track-run" not in r.flags
    # the feed's episodes, all at once, after reading the feed
    listings = Listings()
    feed = [f"/stream/t{i}.mp3" for i in range(6)]
    tap = listings.tap("/feed.xml", 200, "GET", {"Content-Type": "application/rss+xml"})
    assert tap is not None
    tap(b"<rss><channel>" + b"".join(
        f'<item><enclosure url="https://store.example{p}" type="audio/mpeg"/></item>'.encode()
        for p in feed) + b"</channel></rss>")
    t4 = BehaviourTracker(ClientStore(100), listings)
    observe(t4, facts("192.0.2.43", "/feed.xml"), 0.0)
    t4.fetched_listing("i:192.0.2.43", listings.learn(tap), 0.0)
    for i, path in enumerate(feed):
        r = observe(t4, facts("192.0.2.43", path, referer=False, rng=False), 1.0 + i)
        assert "track-run" not in r.flags


def test_rotation_itself_is_named():
    t = BehaviourTracker(ClientStore(1000))
    result = None
    for i in range(8):
        result = observe(t, facts(f"203.0.113.{10 + i}", f"/stream/t{i}.mp3",
                                 referer=False), float(i))
    assert result is not None
    assert "rotating" in result.flags


def test_head_sweeps_404_runs_and_parallel_streams():
    t = BehaviourTracker(ClientStore(100))
    for i in range(5):
        r = observe(t, facts("192.0.2.1", f"/stream/t{i}.mp3", method="HEAD"), float(i))
    assert "head-sweep" in r.flags
    for i in range(10):
        t.finish("i:192.0.2.2", 404, 0, float(i))
    assert "not-found" in observe(t, facts("192.0.2.2", "/x"), 11.0).flags
    assert "parallel-audio" in observe(t, facts("192.0.2.3", "/stream/a.mp3", streams=4),
                                         1.0).flags


def test_a_listener_is_not_flagged_for_what_a_crawler_on_its_network_did():
    """A crawler on 192.0.2.0/24 takes whole files without their pages: its network row
    carries no-context and whole-file. A listener on the same network (the same address
    even, with another browser) who loaded the page and plays from it is judged on its own
    key; a request of its own without context is judged on the network's too."""
    t = BehaviourTracker(ClientStore(100))
    for i in range(6):
        crawled = observe(t, facts("192.0.2.9", f"/stream/t{i}.mp3", rng=False,
                                   referer=False), float(i))
    assert {"no-context", "whole-file"} <= set(crawled.flags)
    listener = facts("192.0.2.10", "/album/a")
    observe(t, listener, 10.0)  # the page
    played = observe(t, facts("192.0.2.10", "/stream/t1.mp3"), 11.0)
    assert played.flags == ()
    lone = observe(t, facts("192.0.2.11", "/stream/t2.mp3", referer=False), 12.0)
    assert "no-context" in lone.flags  # no page of its own: the network's doings count
