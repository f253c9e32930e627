"""The oracle: Belady eviction, prefetch, and that no policy beats it."""

from __future__ import annotations

import pytest
from sim_helpers import drive, make_trace, max_overlap, random_trace

from prewarm.sim import SimGPU, Span, replay
from prewarm.sim.policies import HistogramPolicy, LRUPolicy, OllamaPolicy, OraclePolicy, TopNPolicy, next_request_times

GB = 10**9


def test_next_request_times():
    tr = make_trace([(0, "a"), (1, "b"), (2, "a"), (5, "b"), (7, "a")])
    assert next_request_times(tr.ts, tr.mid).tolist() == [2.0, 5.0, 7.0, float("inf"), float("inf")]


def test_belady_evicts_the_model_needed_farthest_in_the_future():
    # a, b resident; c arrives: b is needed at 1000, a at 60 -> b goes (LRU would evict a)
    tr = make_trace([(0, "a"), (20, "b"), (40, "c"), (60, "a"), (1000, "b")])
    sizes = {n: GB for n in "abc"}
    loads = {n: 10.0 for n in "abc"}
    out, _ = drive(OraclePolicy(), tr, sizes, loads, 2 * GB)
    assert out[3] == -1.0


def test_belady_size_evicts_the_most_byte_seconds_per_load_second_until_the_next_use():
    """a (4 GB) is needed at 400, b (1 GB) at 1000: Belady evicts b, Belady-Size a (300 s x 4 GB / 10 s = 120
    against 900 s x 1 GB / 10 s = 90); then c, never needed again, makes room for a."""
    tr = make_trace([(0, "a"), (20, "b"), (100, "c"), (400, "a"), (1000, "b")])
    sizes = {"a": 4 * GB, "b": GB, "c": GB}
    loads = {n: 10.0 for n in "abc"}
    by_size, _ = drive(OraclePolicy("belady-size", prefetch=False), tr, sizes, loads, 5 * GB)
    assert by_size[3:] == [10.0, -1.0]
    belady, _ = drive(OraclePolicy("belady", prefetch=False), tr, sizes, loads, 5 * GB)
    assert belady[3:] == [-1.0, 10.0]


def test_gd_keep_counts_the_requests_within_the_cache_keep_time():
    """At 200 nothing has been evicted yet (no keep time): Belady evicts a (needed at 1000), idle 200 s, so the
    keep time is 200 s. At 400 d needs room: within 400-600 b is asked for once and c four times, so b goes
    (Belady would evict c, needed later); b's one request is cold, c's four are warm."""
    tr = make_trace([(0, "a"), (100, "b"), (200, "c"), (300, "b"), (400, "d"), (420, "b"),
                     (500, "c"), (510, "c"), (520, "c"), (530, "c"), (1000, "a")])
    sizes = {n: GB for n in "abcd"}
    loads = {n: 10.0 for n in "abcd"}
    out, _ = drive(OraclePolicy("gd-keep", prefetch=False), tr, sizes, loads, 2 * GB)
    assert out == [10.0, 10.0, 10.0, -1.0, 10.0, 10.0, -1.0, -1.0, -1.0, -1.0, 10.0]
    belady, _ = drive(OraclePolicy("belady", prefetch=False), tr, sizes, loads, 2 * GB)
    assert belady[5:7] == [-1.0, 10.0]


def test_oracle_prefetches_when_the_loader_is_idle():
    tr = make_trace([(0, "a"), (100, "b"), (200, "a")])
    sizes = {"a": GB, "b": GB}
    loads = {"a": 10.0, "b": 10.0}
    out, gpu = drive(OraclePolicy(), tr, sizes, loads, 2 * GB)
    assert out == [10.0, -1.0, -1.0]  # b was loaded as soon as a's load finished


def test_oracle_prefetch_swaps_only_when_belady_allows():
    # budget for one model: after a, b is needed next (at 100) and a not until 500 -> swap early
    tr = make_trace([(0, "a"), (100, "b"), (500, "a")])
    sizes = {"a": GB, "b": GB}
    loads = {"a": 10.0, "b": 10.0}
    out, gpu = drive(OraclePolicy(), tr, sizes, loads, GB)
    assert out == [10.0, -1.0, -1.0]
    assert max_overlap(gpu) <= GB


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_no_policy_beats_the_oracle_on_random_traces(seed):
    tr = random_trace(seed, n=2500, models=10)
    sizes = [(1 + (k * 7) % 5) * GB for k in range(tr.n_models)]
    loads = [4.0 * s / GB for s in sizes]
    span = Span.from_warmup(tr, 0.3)
    for budget in (6 * GB, 12 * GB):
        oracle = replay(tr, sizes, loads, budget, OraclePolicy(), span)
        for policy in (OllamaPolicy(), LRUPolicy(), TopNPolicy(), HistogramPolicy()):
            other = replay(tr, sizes, loads, budget, policy, span)
            assert oracle.cold_starts <= other.cold_starts, (policy.name, budget)


def test_saturated_loader_hand_worked():
    # budget for two 1 GB models, 10 s loads. a is asked for every 5 s. The loader is idle at 10: the oracle
    # prefetches b (needed at 11: 9 s left). c at 12 queues behind b and starts at 20 (waits 18 s); room is
    # made then: b (next needed at 52) goes, a stays. The loader is idle again from 30: the oracle prefetches
    # b, evicting c (never needed again), so b at 52 is warm. LRU loads b at 11 and c at 21 (evicting b,
    # the least recently used) and b again on demand at 52.
    ev = [(5.0 * k, "a") for k in range(13)] + [(11.0, "b"), (12.0, "c"), (52.0, "b")]
    tr = make_trace(sorted(ev))
    sizes = {n: GB for n in "abc"}
    loads = {n: 10.0 for n in "abc"}
    out, gpu = drive(OraclePolicy(), tr, sizes, loads, 2 * GB)
    got = {(t, tr.names[m]): w for t, m, w in zip(tr.ts.tolist(), tr.mid.tolist(), out, strict=False)}
    assert got[(0.0, "a")] == 10.0 and got[(5.0, "a")] == 5.0
    assert got[(11.0, "b")] == 9.0 and got[(12.0, "c")] == 18.0
    assert got[(52.0, "b")] == -1.0
    assert all(got[(5.0 * k, "a")] == -1.0 for k in range(2, 13))
    assert max_overlap(gpu) <= 2 * GB
    lru, _ = drive(LRUPolicy(), tr, sizes, loads, 2 * GB)
    assert sum(w >= 0 for w in out) == 4 and sum(w >= 0 for w in lru) == 5
    lru_got = {(t, tr.names[m]): w for t, m, w in zip(tr.ts.tolist(), tr.mid.tolist(), lru, strict=False)}
    assert lru_got[(12.0, "c")] == 19.0 and lru_got[(52.0, "b")] == 10.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_policy_beats_the_oracle_when_the_loader_saturates(seed):
    # 20 models, ~3000 requests in half an hour, loads of 3-45 s: the loader is busy all the time
    tr = random_trace(seed, n=3000, models=20, days=0.02)
    sizes = [(1 + (k * 7) % 5) * GB for k in range(tr.n_models)]
    loads = [6.0 * s / GB * (0.5 + (k % 3)) for k, s in enumerate(sizes)]
    span = Span.from_warmup(tr, 0.3)
    for budget in (6 * GB, 12 * GB):
        oracle = replay(tr, sizes, loads, budget, OraclePolicy(), span)
        assert oracle.loader_utilization > 0.9
        for policy in (OllamaPolicy(), LRUPolicy(), TopNPolicy(), HistogramPolicy()):
            other = replay(tr, sizes, loads, budget, policy, span)
            assert oracle.cold_starts <= other.cold_starts, (policy.name, budget)


def test_oracle_keeps_a_victim_the_other_evictions_already_make_room_for():
    # budget 4 GB: s (1 GB, next needed at 1000) and l (3 GB, next at 500) are resident when c (2 GB) comes.
    # Belady picks s first (needed farthest), but s alone frees too little, so l goes too; l alone was
    # enough, so s stays (timeline: s is never evicted) and its request at 1000 is warm.
    tr = make_trace([(0, "s"), (1, "l"), (20, "c"), (500, "l"), (1000, "s")])
    sizes = {"s": GB, "l": 3 * GB, "c": 2 * GB}
    loads = {"s": 1.0, "l": 1.0, "c": 1.0}
    out, gpu = drive(OraclePolicy(), tr, sizes, loads, 4 * GB)
    stays = [iv for iv in gpu.timeline if tr.names[iv.model] == "s"]
    assert len(stays) == 1 and stays[0].start == 0.0 and stays[0].end == 1000.0
    assert out[-1] == -1.0
    assert max_overlap(gpu) <= 4 * GB


def test_a_victims_cost_window_never_reaches_into_the_next_models_requests():
    # Every request is one sorted key, model id x key_range + time; the longest cost window (16 backlogs and a
    # load after a load start at the end of the trace) must stay inside the victim's own range. At 2000, a (no
    # request left) and b (asked for at 2050) are resident and c needs room: a costs nothing and goes. Had a's
    # window run past its range, b's eleven early requests would count against a, and b would go instead.
    tr = make_trace([(float(k), "b") for k in range(11)] + [(20.0, "a"), (2000.0, "c"), (2050.0, "b")])
    sizes = {n: GB for n in "abc"}
    loads = {n: 100.0 for n in "abc"}
    gpu = SimGPU([sizes[n] for n in tr.names], [loads[n] for n in tr.names], 2 * GB, 0.0, 1e12, len(tr))
    oracle = OraclePolicy()
    oracle.bind(gpu, tr)
    ids = {n: k for k, n in enumerate(tr.names)}
    oracle.resident[[ids["a"], ids["b"]]] = True
    oracle.next_use[ids["a"]] = float("inf")
    oracle.next_use[ids["b"]] = 2050.0
    assert oracle.victim(ids["c"], 2000.0) == ids["a"]
