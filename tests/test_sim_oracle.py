"""The oracle: Belady eviction, prefetch, and that no policy beats it."""

from __future__ import annotations

import pytest

from prewarm.sim.engine import Span, replay
from prewarm.sim.policies.histogram import HistogramPolicy
from prewarm.sim.policies.lru import LRUPolicy
from prewarm.sim.policies.ollama import OllamaPolicy
from prewarm.sim.policies.oracle import OraclePolicy, next_request_times
from prewarm.sim.policies.topn import TopNPolicy
from sim_helpers import drive, make_trace, max_overlap, random_trace

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
