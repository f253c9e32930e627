"""Each baseline policy on a hand-worked case, checked against its source's rules."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sim_helpers import drive, make_trace

from prewarm.sim.policies import HistogramPolicy, IdleHistogram, LRUPolicy, OllamaPolicy, TopNPolicy

GB = 10**9


def same(names, size=GB, load=10.0):
    return {n: size for n in names}, {n: load for n in names}


# --- ollama -----------------------------------------------------------------

def test_ollama_keep_alive_runs_from_the_end_of_the_last_request():
    tr = make_trace([(0, "a"), (305, "a"), (610, "a"), (1000, "a")])
    sizes, loads = same(["a"])
    out, _ = drive(OllamaPolicy(), tr, sizes, loads, 4 * GB)
    # a ready at 10 -> expires 310; 305 warm -> expires 605; 610 cold (ready 620 -> expires 920); 1000 cold
    assert out == [10.0, -1.0, 10.0, 10.0]


def test_ollama_evicts_idle_models_in_blob_order_not_lru():
    names = [f"model-{k}" for k in range(40)]
    digest = {n: hashlib.sha256(n.encode()).hexdigest() for n in names}
    # x used first (least recent), y later; pick them so y's digest sorts first: Ollama unloads y, LRU unloads x
    x, y = next((p, q) for p in names for q in names if digest[q] < digest[p])
    z = next(n for n in names if n not in (x, y))
    tr = make_trace([(0, x), (20, y), (40, z), (60, x), (80, y)])
    sizes, loads = same([x, y, z])
    out, _ = drive(OllamaPolicy(), tr, sizes, loads, 2 * GB)
    assert out[3] == -1.0 and out[4] == 10.0  # x survived, y was unloaded
    out_lru, _ = drive(LRUPolicy(), tr, sizes, loads, 2 * GB)
    assert out_lru[3] == 10.0  # LRU unloaded x instead


def test_ollama_unloads_expired_models_before_idle_ones():
    tr = make_trace([(0, "a"), (20, "b"), (400, "b"), (410, "c"), (420, "b")])
    sizes, loads = same(["a", "b", "c"])
    out, gpu = drive(OllamaPolicy(), tr, sizes, loads, 2 * GB)
    assert out[4] == -1.0  # a had expired (310), so c took its place and b stayed


# --- lru --------------------------------------------------------------------

def test_lru_evicts_the_least_recently_used_and_has_no_timer():
    tr = make_trace([(0, "a"), (20, "b"), (40, "a"), (60, "c"), (10_000, "a"), (10_020, "b")])
    sizes, loads = same(["a", "b", "c"])
    out, gpu = drive(LRUPolicy(), tr, sizes, loads, 2 * GB)
    # c evicts b (a was used at 40); a is still there hours later; b evicts c
    assert out == [10.0, 10.0, -1.0, 10.0, -1.0, 10.0]
    assert gpu.evictions == 2


# --- topn -------------------------------------------------------------------

def test_topn_reloads_the_top_models_at_each_reevaluation():
    ev = [(t, "a") for t in (0, 10, 20, 30, 40, 50)] + [(t, "b") for t in (15, 25, 35)] + [(45, "c")]
    ev += [(310, "d"), (320, "d"), (700, "b")]
    tr = make_trace(sorted(ev))
    sizes, loads = same(["a", "b", "c", "d"])
    out, _ = drive(TopNPolicy(), tr, sizes, loads, 2 * GB)
    res = dict(zip([(t, tr.names[m]) for t, m in zip(tr.ts.tolist(), tr.mid.tolist(), strict=False)], out, strict=False))
    # c at 45 evicts b (LRU). At 300: top = a(6), b(3), both fit 2 GB: b is loaded again, c goes.
    # d at 310 (a miss) evicts the least recent of the top two: a. At 600: last 15 min a 6, b 3, d 2:
    # a is loaded again in place of d, b stays, so b at 700 is warm where LRU has it cold.
    assert res[(45, "c")] == 10.0
    assert res[(310, "d")] == 10.0 and res[(320, "d")] == -1.0
    assert res[(700, "b")] == -1.0
    out_lru, _ = drive(LRUPolicy(), tr, sizes, loads, 2 * GB)
    assert out_lru[-1] == 10.0


def test_topn_takes_as_many_models_as_fit_in_rank_order():
    ev = [(t, "a") for t in range(10, 60, 10)] + [(t, "big") for t in (12, 22, 32)] + [(14, "c"), (16, "c")]
    ev += [(320, "a")]
    tr = make_trace(sorted(ev))
    sizes = {"a": GB, "big": 3 * GB, "c": GB}
    loads = {"a": 10.0, "big": 10.0, "c": 10.0}
    pol = TopNPolicy()
    out, gpu = drive(pol, tr, sizes, loads, 3 * GB)
    assert pol.target == {tr.names.index("a")}  # a fits, big does not: the list ends there
    assert out[-1] == -1.0  # a was loaded at the 310 s re-evaluation


# --- histogram --------------------------------------------------------------

def test_idle_histogram_percentiles_match_a_direct_computation():
    rng = np.random.default_rng(7)
    h = IdleHistogram(240)
    its = np.concatenate([rng.exponential(900, 500), rng.uniform(0, 20000, 50)])
    for k, it in enumerate(its):
        h.add(float(it), 1000)
        inr = np.asarray(its[: k + 1])
        b = (inr[inr < 14400] // 60).astype(int)
        if len(b) == 0:
            continue
        c = np.cumsum(np.bincount(b, minlength=240))
        assert h.h_idx == int(np.searchsorted(c, 0.05 * len(b)))
        assert h.t_idx == int(np.searchsorted(c, 0.99 * len(b)))
    counts = np.bincount(b, minlength=240)
    assert h.cv() == pytest.approx(counts.std(ddof=1) / counts.mean())


def test_histogram_prewarms_a_periodic_model_and_unloads_it_between_requests():
    tr = make_trace([(600.0 * k, "a") for k in range(30)])
    sizes, loads = same(["a"], load=10.0)
    out, gpu = drive(HistogramPolicy(), tr, sizes, loads, 4 * GB)
    # 4 h keep-alive until 10 ITs are seen; then ITs of ~600 s (bin 9 or 10, CV high) give
    # pre-warm ~ 0.9 * 540 s: unloaded after each request, loaded again before the next
    assert out[0] == 10.0 and all(w == -1.0 for w in out[1:])
    assert gpu.loads >= 15
    assert gpu.byte_seconds < 0.5 * GB * 29 * 600  # far less than always-resident


def test_histogram_uses_a_four_hour_keep_alive_while_not_representative():
    tr = make_trace([(0, "a"), (3 * 3600, "a"), (3 * 3600 + 4 * 3600 + 100, "a")])
    sizes, loads = same(["a"])
    out, _ = drive(HistogramPolicy(), tr, sizes, loads, 4 * GB)
    assert out == [10.0, -1.0, 10.0]


def test_histogram_uses_arima_when_idle_times_fall_out_of_range():
    it = 5 * 3600.0
    tr = make_trace([(k * it, "a") for k in range(6)])
    sizes, loads = same(["a"], load=0.0)
    pol = HistogramPolicy()
    out, _ = drive(pol, tr, sizes, loads, 4 * GB)
    # first IT (5 h) is out of range -> OOB rate 1 -> ARIMA predicts 5 h -> pre-warm at 4.25 h, keep to 5.75 h
    assert out[0] == 0.0 and out[1] == 0.0  # second request: no IT seen before the first
    assert all(w == -1.0 for w in out[2:])
    assert pol.arima_fits >= 4


def test_histogram_evicts_lru_under_the_budget():
    tr = make_trace([(0, "a"), (20, "b"), (40, "a"), (60, "c"), (80, "a")])
    sizes, loads = same(["a", "b", "c"])
    out, _ = drive(HistogramPolicy(), tr, sizes, loads, 2 * GB)
    assert out[3] == 10.0 and out[4] == -1.0  # b (least recent) went, a stayed


# --- gdsf, gdsf-lifetime, lfu -------------------------------------------------

def test_gdsf_evicts_the_lowest_clock_plus_frequency_times_cost_per_byte():
    from prewarm.sim.policies.gdsf import GDSFPolicy

    tr = make_trace([(0, "a"), (20, "a"), (30, "a"), (40, "b"), (60, "c"), (80, "b"), (100, "c"), (120, "a")])
    sizes, loads = same(["a", "b", "c"])
    w = 10.0 / GB  # cost / size
    pol = GDSFPolicy()
    out, _ = drive(pol, tr, sizes, loads, 2 * GB)
    # 60: a has 3 requests (3w), b one (w): b goes, clock = w, c = 2w. 80: c (2w) < a (3w): c goes, clock 2w,
    # b = 3w. 100: a and b tie at 3w: a, used at 30, goes first. So a is cold at 120; LRU would keep a at 60.
    assert out == [10.0, -1.0, -1.0, 10.0, 10.0, 10.0, 10.0, 10.0]
    assert pol.clock == pytest.approx(3 * w)
    out_lru, _ = drive(LRUPolicy(), tr, sizes, loads, 2 * GB)
    assert out_lru[4] == 10.0 and out_lru[5] == -1.0  # LRU evicted a at 60, so b stayed warm at 80


def test_gdsf_sends_the_largest_model_per_second_of_load_away_first():
    from prewarm.sim.policies.gdsf import GDSFPolicy

    tr = make_trace([(0, "b"), (20, "a"), (40, "c"), (50, "b"), (60, "a")])
    sizes = {"a": 2 * GB, "b": GB, "c": GB}
    loads = {"a": 10.0, "b": 10.0, "c": 10.0}
    out, _ = drive(GDSFPolicy(), tr, sizes, loads, 3 * GB)
    # c needs room at 40: a (10 s / 2 GB) ranks below b (10 s / 1 GB) although b is the less recent
    assert out[3] == -1.0 and out[4] == 10.0
    out_lru, _ = drive(LRUPolicy(), tr, sizes, loads, 3 * GB)
    assert out_lru[3] == 10.0  # LRU evicted b, the least recent


def test_gdsf_lifetime_keeps_the_count_across_evictions_and_gdsf_starts_again():
    from prewarm.sim.policies.gdsf import GDSFLifetimePolicy, GDSFPolicy

    tr = make_trace([(0, "a"), (20, "a"), (30, "a"), (40, "b"), (60, "a")])
    sizes, loads = same(["a", "b"])
    for cls, count in ((GDSFPolicy, 1), (GDSFLifetimePolicy, 4)):
        pol = cls()
        out, gpu = drive(pol, tr, sizes, loads, GB)
        assert out == [10.0, -1.0, -1.0, 10.0, 10.0]
        assert pol.freq[tr.names.index("a")] == count, cls.name


def test_gdsf_counts_the_requests_that_waited_for_the_load():
    from prewarm.sim.policies.gdsf import GDSFPolicy

    tr = make_trace([(0, "a"), (2, "a"), (4, "a")])
    sizes, loads = same(["a"])
    pol = GDSFPolicy()
    out, _ = drive(pol, tr, sizes, loads, GB)
    assert out == [10.0, 8.0, 6.0]
    assert pol.freq[0] == 3


def test_lfu_evicts_the_fewest_decayed_requests_not_the_least_recent():
    from prewarm.sim.policies.lfu import LFUPolicy

    tr = make_trace([(0, "a"), (10, "a"), (20, "a"), (30, "b"), (31, "b"), (40, "c"), (60, "a"), (70, "b")])
    sizes, loads = same(["a", "b", "c"])
    out, _ = drive(LFUPolicy(), tr, sizes, loads, 2 * GB)
    assert out[6] == -1.0 and out[7] == 10.0  # b (2 requests) went, a (3, older) stayed


def test_lfu_half_life_lets_old_demand_fade():
    from prewarm.sim.policies.lfu import LFUPolicy, log2_add

    tr = make_trace([(0, "a"), (1, "a"), (2, "a"), (200, "b"), (210, "c"), (230, "a"), (240, "b")])
    sizes, loads = same(["a", "b", "c"])
    # half-life 100 s: a's three requests weigh ~3 x 2^(0..0.02), b's one 2^2 = 4 at 200: a goes
    out, _ = drive(LFUPolicy(half_life_s=100.0), tr, sizes, loads, 2 * GB)
    assert out[5] == 10.0
    out_long, _ = drive(LFUPolicy(half_life_s=1e9), tr, sizes, loads, 2 * GB)
    assert out_long[5] == -1.0  # without decay a's three requests keep it
    assert log2_add(3.0, 3.0) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        LFUPolicy(half_life_s=0)


def test_router_policy_evicts_by_count_past_models_max() -> None:
    """llama.cpp's router with --models-max 2: three small models that fit the budget together still take turns,
    the least recently used one going when a third starts; with a cap of 3 they all stay."""
    from prewarm.sim.policies.lru import RouterLRUPolicy

    tr = make_trace([(0, "a"), (10, "b"), (20, "c"), (30, "a"), (40, "b"), (50, "c")])
    sizes = {"a": 1, "b": 1, "c": 1}
    loads = {"a": 1.0, "b": 1.0, "c": 1.0}
    capped, _ = drive(RouterLRUPolicy(2), tr, sizes, loads, 10)
    free, _ = drive(RouterLRUPolicy(3), tr, sizes, loads, 10)
    assert [w >= 0 for w in capped] == [True] * 6  # every request cold: a, b, c, then a again after c evicted it
    assert [w >= 0 for w in free] == [True] * 3 + [False] * 3
    assert RouterLRUPolicy(2).report() == {"models_max": 2}
    with pytest.raises(ValueError, match="models-max"):
        RouterLRUPolicy(0)
