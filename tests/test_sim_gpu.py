"""The simulated GPU and the replay loop: one loader, the budget, waits, scoring and VRAM-GB-hours."""

from __future__ import annotations

import pytest
from sim_helpers import drive, make_trace, max_overlap, random_trace

from prewarm.sim import Span, replay
from prewarm.sim.policies import LRUPolicy, OllamaPolicy

GB = 10**9


def test_loads_run_one_at_a_time_and_queueing_counts_as_added_latency():
    tr = make_trace([(0, "a"), (1, "b")])
    out, gpu = drive(LRUPolicy(), tr, {"a": GB, "b": GB}, {"a": 10.0, "b": 5.0}, 4 * GB)
    assert out == [10.0, 14.0]  # b starts loading at 10, when a's load is done
    assert gpu.ready_at[1] == 15.0


def test_request_for_a_loading_model_is_cold_with_the_remaining_wait():
    tr = make_trace([(0, "a"), (4, "a"), (12, "a")])
    out, _ = drive(LRUPolicy(), tr, {"a": GB}, {"a": 10.0}, 4 * GB)
    assert out == [10.0, 6.0, -1.0]


def test_vram_is_taken_when_a_load_starts_and_queued_requests_wait_for_it():
    # budget for two; a, b, c queue behind each other. c's room is made when c STARTS (t=20), by evicting
    # the least recently used resident model then (b: a was asked for again at 3), not when c was queued.
    tr = make_trace([(0, "a"), (1, "b"), (2, "c"), (3, "a")])
    out, gpu = drive(LRUPolicy(), tr, {n: GB for n in "abc"}, {n: 10.0 for n in "abc"}, 2 * GB)
    assert out == [10.0, 19.0, 28.0, 7.0]
    stays = sorted((tr.names[iv.model], iv.start, iv.end) for iv in gpu.timeline)
    assert ("b", 10.0, 20.0) in stays  # b left when c started, not when c was queued
    assert gpu.evictions == 1 and max_overlap(gpu) <= 2 * GB


class NeverEvict(LRUPolicy):
    """A policy that refuses to evict anything: the GPU must count the load it cannot start."""

    name = "never-evict"

    def victim(self, m, t):
        return None


def test_a_load_that_cannot_fit_when_it_starts_is_counted_not_dropped():
    tr = make_trace([(0, "a"), (1, "b"), (30, "b"), (40, "a")])
    r = replay(tr, [GB, GB], [10.0, 10.0], GB, NeverEvict(), Span(0, 40))
    assert r.extra["failed_loads"] == 2 and r.extra["unserved_requests"] == 2
    assert r.requests == 2 and r.cold_starts == 1  # a at 0 (cold), a at 40 (warm); both b unserved


@pytest.mark.parametrize("policy", [LRUPolicy, OllamaPolicy])
def test_vram_never_exceeds_the_budget_counting_loading_models(policy):
    tr = random_trace(3, n=2000)
    sizes = {n: (1 + k % 4) * GB for k, n in enumerate(tr.names)}
    loads = {n: 5.0 + k for k, n in enumerate(tr.names)}
    _, gpu = drive(policy(), tr, sizes, loads, 7 * GB)
    assert max_overlap(gpu) <= 7 * GB


def test_scoring_span_metrics_and_gb_hours():
    # one 2 GB model loaded at 0 (ready at 10), used until the end at 7200; warm-up = first half
    tr = make_trace([(0, "a"), (100, "a"), (3700, "a"), (7200, "a")])
    span = Span.from_warmup(tr, 0.5)
    assert (span.scored_from, span.scored_to) == (3600.0, 7200.0)
    r = replay(tr, [2 * GB], [10.0], 4 * GB, LRUPolicy(), span)
    assert r.requests == 2 and r.cold_starts == 0 and r.loads == 0
    assert r.vram_gb_hours == pytest.approx(2.0)  # 2 GB for the scored hour
    assert r.as_dict()["scored_from"] == 3600.0


def test_oversized_model_is_reported_not_dropped():
    tr = make_trace([(0, "big"), (1, "a"), (2, "big"), (3, "a")])
    r = replay(tr, [GB, 5 * GB], [1.0, 1.0], 4 * GB, LRUPolicy(), Span(0, 3))  # names sort: a, big
    assert r.oversized_requests == 2 and r.oversized_models == ["big"]
    assert r.requests == 2 and r.cold_starts == 1


def test_p99_and_total_added_latency():
    tr = make_trace([(0, "a"), (1, "a"), (50, "a")])
    r = replay(tr, [GB], [10.0], 4 * GB, LRUPolicy(), Span(0, 50))
    assert r.cold_starts == 2 and r.added_latency_s_total == pytest.approx(19.0)
    assert r.p99_added_latency_s == pytest.approx(10.0 - 0.02 * 1.0, abs=0.2)
