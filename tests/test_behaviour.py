"""Behaviour: decayed counters in a capped store, flags a listener never raises."""

from __future__ import annotations

import pytest

from proxy.signals.behaviour import BehaviourTracker, RequestFacts, fingerprint
from proxy.state import AUDIO, LONG_HALF_LIFE, NO_CONTEXT, REQ, ClientStore

CHROME_FP = fingerprint("Mozilla/5.0 ... Chrome/131", "*/*", "en-GB", "gzip", '"Chromium"')
CRAWLER_FP = fingerprint("Mozilla/5.0 ... Chrome/131", "*/*", "", "gzip, deflate", "")


def facts(ip: str, path: str, *, fp: str = CHROME_FP, method: str = "GET", rng: bool = True,
          referer: bool = True, streams: int = 0) -> RequestFacts:
    audio = path.endswith((".mp3", ".flac"))
    return RequestFacts(ip=ip, fingerprint=fp, method=method, path=path, is_audio=audio,
                        is_page="." not in path.rsplit("/", 1)[-1], has_range=rng,
                        same_site_referer=referer, open_streams=streams)


def observe(t: BehaviourTracker, f: RequestFacts, now: float):
    return t.observe(f, t.store.row("i:" + f.ip, now))


def test_store_never_exceeds_its_capacity():
    store = ClientStore(1000, seed=1)
    for i in range(20_000):
        store.row(f"i:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", float(i))
    assert len(store) == 1000
    assert store.evictions == 19_000
    assert all(store.keys[r] == k for k, r in store.rows.items())


def test_counters_halve_every_half_life():
    store = ClientStore(10)
    r = store.row("i:1.2.3.4", 0.0)
    store.add(r, NO_CONTEXT, 8.0)
    store.add(r, REQ, 8.0)
    store.row("i:1.2.3.4", LONG_HALF_LIFE)
    assert store.value(r, NO_CONTEXT) == pytest.approx(4.0)
    assert store.value(r, REQ) == pytest.approx(8.0 / 2**10)  # the short half-life: 60 s


def test_counters_survive_the_hourly_rebase():
    # the epoch moves every REBASE_EVERY seconds and every stored sum is rescaled with it
    store = ClientStore(10)
    r = store.row("i:1.2.3.4", 0.0)
    store.add(r, AUDIO, 6.0)
    for t in range(0, 50_001, 2_500):  # 14 hours in steps: the weights would overflow by then
        store.row("i:5.6.7.8", float(t))
        store.add(store.row("i:5.6.7.8", float(t)), REQ)
    assert store.value(r, AUDIO) == pytest.approx(6.0 * 2 ** (-50_000 / LONG_HALF_LIFE))
    assert store.w_short < 2 ** 61
    assert store.value(store.rows["i:5.6.7.8"], REQ) == pytest.approx(1.0)


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


def test_a_rotating_crawler_is_flagged_by_its_second_track():
    t = BehaviourTracker(ClientStore(1000))
    results = []
    for i, track in enumerate(["harbour-at-dawn", "salt-and-cedar", "low-tide-lanterns"]):
        ip = f"127.0.0.{2 + i}"  # a new address for every request
        results.append(observe(t, facts(ip, f"/stream/{track}.mp3", fp=CRAWLER_FP, rng=False,
                                       referer=False), float(i)))
    assert results[0].score < 0.5
    assert {"no-context", "whole-file"} <= set(results[1].flags)
    assert results[1].score >= 0.5


def test_rotation_itself_is_named():
    t = BehaviourTracker(ClientStore(1000))
    result = None
    for i in range(8):
        result = observe(t, facts(f"203.0.113.{10 + i}", f"/stream/t{i}.mp3", fp=CRAWLER_FP,
                                 referer=False), float(i))
    assert result is not None
    assert "rotating" in result.flags


def test_head_sweeps_404_runs_and_parallel_streams():
    t = BehaviourTracker(ClientStore(100))
    for i in range(5):
        r = observe(t, facts("192.0.2.1", f"/stream/t{i}.mp3", method="HEAD"), float(i))
    assert "head-sweep" in r.flags
    for i in range(10):
        t.finish("192.0.2.2", 404, 0, float(i))
    assert "not-found" in observe(t, facts("192.0.2.2", "/x"), 11.0).flags
    assert "parallel-audio" in observe(t, facts("192.0.2.3", "/stream/a.mp3", streams=4),
                                         1.0).flags
