"""The replay table's notes for people choosing a budget: the suggested budget and the models a budget leaves out."""

from __future__ import annotations

from prewarm.sim import ReplayResult, suggested_budget, to_table

GB = 10**9


def _result(policy: str, budget_gb: float, cold: int, requests: int = 100,
            oversized: list[str] | None = None) -> ReplayResult:
    return ReplayResult(policy=policy, budget=int(budget_gb * GB), requests=requests, cold_starts=cold,
                        added_latency_s_total=0.0, p99_added_latency_s=0.0, mean_added_latency_s=0.0,
                        vram_gb_hours=budget_gb, loads=0, evictions=0, scored_from=0.0, scored_to=1.0,
                        oversized_requests=3 if oversized else 0, oversized_models=oversized or [],
                        replay_seconds=0.0)


def test_suggested_budget_is_the_knee_of_the_best_policy() -> None:
    # Best rates 50 %, 20 %, 19 %: from 10 GB to 20 GB (ten steps of 10 %) 3 points a step, worth it; from
    # 20 GB to 40 GB (ten steps of 10 % of 20 GB) 0.1 point a step, not: 20 GB.
    results = [_result("lru", 10, 60), _result("forecast", 10, 50), _result("lru", 20, 20), _result("lru", 40, 19)]
    assert suggested_budget(results) == 20 * GB
    assert "suggested budget: 20 GB" in to_table(results)


def test_suggested_budget_looks_at_every_larger_budget() -> None:
    # 20 -> 22 GB gains nothing, but 20 -> 40 GB gains 15 points over ten steps (1.5 a step): not 20 GB yet.
    results = [_result("lru", 10, 50), _result("lru", 20, 20), _result("lru", 22, 20), _result("lru", 40, 5)]
    assert suggested_budget(results) == 40 * GB


def test_requests_a_budget_leaves_out_count_as_cold_for_the_suggestion() -> None:
    # At 6 GB only 40 of 100 requests fit, 4 of them cold: 4 % of the served, but 64 % of those asked for.
    small = _result("lru", 6, 4, requests=40)
    small.oversized_requests, small.oversized_models = 60, ["big"]
    results = [small, _result("lru", 12, 20), _result("lru", 24, 18)]
    assert suggested_budget(results) == 12 * GB


def test_no_suggestion_from_one_budget() -> None:
    assert suggested_budget([_result("lru", 10, 5)]) is None
    assert "suggested budget" not in to_table([_result("lru", 10, 5)])


def test_each_budget_that_leaves_models_out_says_so_once() -> None:
    out = ["big:70b", "mid:32b"]
    results = [_result("lru", 8, 10, oversized=out), _result("forecast", 8, 9, oversized=out),
               _result("lru", 20, 5, oversized=out[:1]), _result("lru", 80, 1)]
    text = to_table(results)
    assert text.count("8 GB leaves 2 model(s) out") == 1 and "big:70b, mid:32b" in text
    assert text.count("20 GB leaves 1 model(s) out") == 1
    assert "80 GB leaves" not in text
