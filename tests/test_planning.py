"""The planning state's decisions on their own: worth, victims, steps and the paper plan `prewarm plan` shows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prewarm.planner import Candidate, Outlook, PlanningState, plan

GB = 10**9


def test_worth_is_seconds_of_waiting_saved_per_gigabyte_hour() -> None:
    state = PlanningState()
    state.set_forecast({"a": 2 / 3600})  # two requests an hour
    a = Candidate("a", 4 * GB, 30.0)
    assert state.worth(a, 0.0) == pytest.approx(2 * 30 / 4)  # 60 s saved an hour, over 4 GB
    assert "2.00 requests/h expected (forecast)" in state.explain(a, 0.0)


def test_without_a_forecast_the_rate_is_the_decayed_count() -> None:
    state = PlanningState(half_life_s=3600.0)
    for t in (0.0, 0.0):
        state.observe("a", t)
    assert state.recent_rate("a", 0.0) == pytest.approx(2 * math.log(2) / 3600)
    assert state.recent_rate("a", 3600.0) == pytest.approx(math.log(2) / 3600)  # one half-life later: half
    state.set_forecast({"a": 0.0})
    assert state.rate("a", 0.0) == 0.0  # the forecast's opinion wins where it has one


def test_the_decayed_rate_is_at_most_one_over_the_idle_age() -> None:
    """A burst of 100 requests, then silence: the decayed count still says ~0.019 requests/s an hour later
    (100 x ln 2 / 6 h x 2^(-1/6)), but an hour of silence caps the rate at 1 / 3600 s."""
    state = PlanningState()
    for _ in range(100):
        state.observe("busy-then-quiet", 0.0)
    assert state.recent_rate("busy-then-quiet", 0.0) == pytest.approx(100 * math.log(2) / 21600)  # no idle age yet
    assert state.recent_rate("busy-then-quiet", 3600.0) == pytest.approx(1 / 3600)
    state.observe("steady", 3590.0)  # one request, 10 s ago: its decayed rate is below 1 / 10 s, uncapped
    assert state.recent_rate("steady", 3600.0) == pytest.approx(2 ** (-10 / 21600) * math.log(2) / 21600)


def test_forget_idle_drops_only_models_idle_longer_than_asked_and_not_kept() -> None:
    state = PlanningState()
    state.observe("old", 0.0)
    state.observe("kept", 0.0)
    state.observe("new", 900.0)
    assert state.forget_idle(1000.0, 500.0, keep={"kept"}) == ["old"]
    assert not state.knows("old") and state.knows("kept") and state.knows("new")


def test_a_pinned_model_is_loaded_whatever_its_worth_and_room_is_made_lowest_worth_first() -> None:
    state = PlanningState()
    state.set_forecast({"busy": 1.0, "idle": 0.001})
    resident = [Candidate("busy", 4 * GB, 10.0), Candidate("idle", 4 * GB, 10.0)]
    step = state.step(resident, [Candidate("pin", 3 * GB, 5.0, pinned=True)], 0, 0.0)
    assert step is not None and (step.unload, step.load, step.why) == (["idle"], "pin", "pinned")


def test_a_model_that_may_not_be_evicted_is_never_a_victim() -> None:
    state = PlanningState()
    state.set_forecast({"x": 0.0, "y": 1.0})
    resident = [Candidate("x", 4 * GB, 10.0, evictable=False), Candidate("y", 4 * GB, 10.0)]
    assert state.victims(resident, 2 * GB, 0.0) == ["y"]
    assert state.victims(resident, 5 * GB, 0.0) is None


# (rates from a few values: a sum of a 1e-308 and a 1e-2 does not grow in floating point)
RATES = st.sampled_from([0.0, 1e-4, 5e-4, 1e-3, 3e-3, 1e-2])
models = st.lists(st.tuples(st.integers(1, 8), st.floats(1.0, 60.0), RATES, st.booleans(), st.booleans()),
                  min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(models=models, budget_gb=st.integers(1, 20), vram_cost=st.sampled_from([0.0, 1.0, 30.0]))
def test_a_plan_never_exceeds_the_budget_never_touches_a_busy_model_and_only_gains(models, budget_gb, vram_cost):
    """From any resident set within the budget: every step stays within it, a model that may not be evicted
    stays, and each prefetch raises the resident set's rate x load over what its own unloads left (so a plan
    ends and never swaps back)."""
    state = PlanningState(vram_cost)
    state.set_forecast({k: m[2] for k, m in enumerate(models)})
    budget = budget_gb * GB
    resident, absent, used = [], [], 0
    for k, (size, load, _, busy, want_resident) in enumerate(models):
        c = Candidate(k, size * GB, load, evictable=not busy)
        if want_resident and used + c.size_bytes <= budget:
            resident.append(c)
            used += c.size_bytes
        elif c.size_bytes <= budget:
            absent.append(Candidate(k, size * GB, load))
    actions = plan(state, resident, absent, budget, 0.0)
    busy = {c.key for c in resident if not c.evictable}
    assert not busy & {int(a.model) for a in actions if a.action == "unload"}
    assert all(a.resident_bytes_after <= budget for a in actions)
    held = {c.key for c in resident}
    value = sum(state.rate(k, 0.0) * models[k][1] for k in held)
    for a in actions:
        if a.action == "unload":
            held.discard(int(a.model))
            value = sum(state.rate(k, 0.0) * models[k][1] for k in held)
        elif a.action == "load":
            held.add(int(a.model))
            after = sum(state.rate(k, 0.0) * models[k][1] for k in held)
            assert after > value or a.reason == "pinned"
            value = after
    if vram_cost > 0:  # what stays at a price is worth at least the price
        kept = [c for c in resident if c.key in held and c.evictable]
        assert all(state.worth(c, 0.0) >= vram_cost for c in kept)


def test_the_rate_is_the_outlooks_over_the_cache_time_then_the_decayed_counts() -> None:
    """A model is worth the requests it is expected to see while the cache would keep it: the outlook's over the
    characteristic time where it covers it, the decayed count's past its end."""
    state = PlanningState(half_life_s=3600.0)
    state.observe("a", 0.0)
    state.observe("v", 0.0)
    state.set_forecast(Outlook(np.array([0.0, 300.0, 600.0]), ("a",), np.array([[0.02, 0.0]])))
    assert state.rate("a", 100.0) == 0.02  # no eviction yet: no characteristic time, the rate at the instant
    assert state.rate("a", 400.0) == 0.0
    state.evicted("v", 200.0)  # a model evicted after 200 s idle: the cache keeps idle models ~200 s
    assert state.keep_time() == pytest.approx(200.0)
    assert state.rate("a", 0.0) == pytest.approx(0.02)
    assert state.rate("a", 200.0) == pytest.approx(0.01)  # half of the next 200 s busy, half quiet
    r = state.recent_rate("a", 500.0)
    assert r > 0 and state.rate("a", 500.0) == pytest.approx(r / 2)  # the outlook ends half-way
    assert state.rate("v", 100.0) == state.recent_rate("v", 100.0)  # no row: the decayed count alone


def test_a_flat_outlook_needs_a_start_for_its_horizon() -> None:
    with pytest.raises(ValueError, match="finite start"):
        Outlook.flat({"a": 1.0}, horizon_s=600.0)
    o = Outlook.flat({"a": 1.0}, at=100.0, horizon_s=600.0)
    assert list(o.edges) == [100.0, 700.0] and o.mean_rates() == {"a": 1.0}


def test_a_prefetch_that_would_be_the_next_victim_is_not_made() -> None:
    """Big b saves more waiting per second than small v (rate x load), but per GB-hour it is worth less: loaded,
    it would be the first to go at the next eviction, so it is not prefetched in v's place."""
    state = PlanningState()
    state.set_forecast({"v": 0.01, "b": 0.02})
    resident = [Candidate("v", 1 * GB, 10.0)]
    absent = [Candidate("b", 8 * GB, 10.0)]
    assert state.worth(absent[0], 0.0) < state.worth(resident[0], 0.0)
    assert state.prefetch(absent, resident, 0, 0.0) is None
    assert state.prefetch(absent, resident, 8 * GB, 0.0) == ("b", [])  # with room, nothing is displaced


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from("abcd"), st.floats(0.0, 86400.0)), max_size=12),
       forecast=st.dictionaries(st.sampled_from("abce"), st.lists(RATES, min_size=3, max_size=3)),
       edges=st.lists(st.floats(0.0, 2 * 86400.0), min_size=4, max_size=4, unique=True),
       evict_at=st.floats(0.0, 86400.0), t=st.floats(0.0, 2 * 86400.0))
def test_the_batch_scorer_is_rate_and_worth_to_the_last_bit(events, forecast, edges, evict_at, t):
    """Decisions rank many models through ``_scorer``; ``explain`` and the tests read ``rate`` and ``worth``:
    the two must agree exactly, or the reason shown would not be the one decided by."""
    state = PlanningState()
    for key, at in sorted(events, key=lambda e: e[1]):
        state.observe(key, at)
    for key in "ab":
        state.evicted(key, evict_at)
    keys = tuple(forecast)
    state.set_forecast(Outlook(np.array(sorted(edges)), keys, np.array([forecast[k] for k in keys]).reshape(-1, 3)))
    scored = state._scorer(t)
    for key in "abcde":
        c = Candidate(key, 3 * GB, 7.5)
        assert scored(c) == (state.rate(key, t), state.worth(c, t),
                             state.recent_rate(key, t) * c.load_seconds / c.size_bytes)


def test_serves_default_half_life_is_the_planners() -> None:
    """config cannot import the planner (the proxy imports config and must not load the parts that decide), so the
    6 h is written twice; this holds the two copies equal."""
    from prewarm.config import Settings
    from prewarm.planner import HALF_LIFE_S

    assert Settings().recency_half_life == HALF_LIFE_S == PlanningState().half_life_s
