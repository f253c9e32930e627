"""Planner: hand-worked examples and hypothesis property tests of its invariants."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prewarm.planner import (
    ModelView,
    PlanAction,
    PlanConfig,
    RecentDemand,
    VramAccount,
    make_room,
    plan,
)

GB = 10**9


def mv(name: str, size_gb: float, load_s: float, p: float, **kw) -> ModelView:
    return ModelView(model=name, size_bytes=int(size_gb * GB), load_seconds=load_s, p_any=p, **kw)


def by_action(actions: list[PlanAction]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"load": [], "unload": [], "keep": []}
    for a in actions:
        out[a.action].append(a.model)
    return out


def apply(models: list[ModelView], actions: list[PlanAction]) -> list[ModelView]:
    state = {m.model: m.resident for m in models}
    for a in actions:
        if a.action == "load":
            state[a.model] = True
        elif a.action == "unload":
            state[a.model] = False
    return [dataclasses.replace(m, resident=state[m.model]) for m in models]


# ---------------------------------------------------------------- hand-worked examples


def test_fills_budget_by_value_density():
    # densities (s/GB): a 12*0.9/6=1.8, b 5.5*0.8/3.4=1.29, c 20*0.5/10.4=0.96, d 2*0.9/0.9=2.0
    models = [mv("a", 6, 12, 0.9), mv("b", 3.4, 5.5, 0.8), mv("c", 10.4, 20, 0.5), mv("d", 0.9, 2, 0.9)]
    actions = plan(models, 12 * GB)
    # d (0.9) + a (6.9) + b (10.3) fit; c (20.7) does not
    # no next_demand_s known: loads go highest value first (a 10.8 s, b 4.4 s, d 1.8 s)
    assert by_action(actions) == {"load": ["a", "b", "d"], "unload": [], "keep": []}
    assert actions[-1].resident_bytes_after == int(10.3 * GB)


def test_loads_soonest_demand_first_then_value():
    models = [
        mv("late", 1, 10, 0.9, next_demand_s=600),
        mv("soon", 1, 1, 0.9, next_demand_s=30),
        mv("unknown_big", 1, 20, 0.9),
        mv("unknown_small", 1, 5, 0.9),
    ]
    loads = [a.model for a in plan(models, 10 * GB) if a.action == "load"]
    assert loads == ["soon", "late", "unknown_big", "unknown_small"]


def test_hysteresis_keeps_resident_against_slightly_better_candidate():
    resident = mv("old", 5, 10, 0.5, resident=True)  # density 1.0 s/GB
    slightly = mv("new", 5, 12, 0.5)  # 1.2: less than 1.25x
    actions = plan([resident, slightly], 5 * GB)
    assert by_action(actions) == {"load": [], "unload": [], "keep": ["old"]}
    clearly = mv("new", 5, 13, 0.5)  # 1.3: beats 1.25x
    actions = plan([resident, clearly], 5 * GB)
    assert [(a.action, a.model) for a in actions] == [("unload", "old"), ("load", "new")]
    assert [a.resident_bytes_after for a in actions] == [0, 5 * GB]


def test_in_flight_and_pinned_stay_even_over_budget_and_then_only_evictions():
    models = [
        mv("busy", 6, 10, 0.0, resident=True, in_flight=2),
        mv("pin", 6, 10, 0.0, resident=True, pinned=True),
        mv("idle", 2, 10, 0.9, resident=True),
        mv("wanted", 1, 60, 1.0),
    ]
    actions = plan(models, 10 * GB)
    assert by_action(actions) == {"load": [], "unload": ["idle"], "keep": ["busy", "pin"]}
    assert actions[-1].resident_bytes_after == 12 * GB  # still over: nothing else may be evicted


def test_below_min_p_any_not_loaded_and_low_resident_let_go():
    cfg = PlanConfig(hysteresis=0.25, min_p_any=0.05)
    models = [mv("rare", 1, 10, 0.04), mv("fading", 1, 10, 0.045, resident=True), mv("gone", 1, 10, 0.03, resident=True)]
    acts = plan(models, 100 * GB, cfg)
    # 0.045 >= 0.05/1.25 = 0.04 keeps its place; 0.03 is let go; 0.04 is not loaded
    assert by_action(acts) == {"load": [], "unload": ["gone"], "keep": ["fading"]}
    assert "not expected" in next(a.reason for a in acts if a.model == "gone")


def test_pinned_not_resident_is_loaded_first_regardless_of_forecast():
    models = [mv("pin", 4, 10, 0.0, pinned=True), mv("hot", 4, 60, 1.0), mv("warm", 4, 30, 1.0)]
    acts = plan(models, 8 * GB)
    assert sorted(by_action(acts)["load"]) == ["hot", "pin"]
    assert next(a.reason for a in acts if a.model == "pin") == "pinned"


def test_keep_actions_carry_a_reason_and_the_unchanged_total():
    models = [mv("a", 2, 10, 0.9, resident=True), mv("b", 3, 10, 0.9, resident=True)]
    acts = plan(models, 10 * GB)
    assert [a.action for a in acts] == ["keep", "keep"]
    assert all(a.reason and a.resident_bytes_after == 5 * GB for a in acts)


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="p_any"):
        mv("x", 1, 1, 1.5)
    with pytest.raises(ValueError, match="twice"):
        plan([mv("x", 1, 1, 0.5), mv("x", 1, 1, 0.5)], GB)
    with pytest.raises(ValueError, match="budget"):
        plan([], -1)
    with pytest.raises(ValueError, match="not among"):
        make_room([mv("x", 1, 1, 0.5)], "y", GB)


def test_make_room_evicts_least_likely_and_puts_back_unneeded():
    models = [
        mv("small_cold", 1, 1, 0.1, resident=True),  # density 0.1
        mv("big_cold", 8, 4, 0.5, resident=True),  # density 0.25
        mv("hot", 4, 20, 1.0, resident=True),  # density 5
        mv("incoming", 6, 10, 1.0),
    ]
    # resident 13 GB, budget 16 GB, incoming 6 GB: need 3 GB. Greedy takes small_cold (1) then big_cold (8);
    # small_cold is not needed once big_cold goes, so it is put back.
    acts = make_room(models, "incoming", 16 * GB)
    assert acts is not None
    assert [(a.action, a.model, a.resident_bytes_after) for a in acts] == [("unload", "big_cold", 5 * GB)]


def test_make_room_never_evicts_in_flight_or_pinned_and_says_when_impossible():
    models = [
        mv("busy", 6, 1, 0.0, resident=True, in_flight=1),
        mv("pin", 4, 1, 0.0, resident=True, pinned=True),
        mv("incoming", 6, 10, 1.0),
    ]
    assert make_room(models, "incoming", 12 * GB) is None
    assert make_room(models, "incoming", 16 * GB) == []
    assert make_room([mv("r", 1, 1, 1, resident=True)], "r", 0) == []


# ---------------------------------------------------------------- properties

names = st.sampled_from([f"m{i}" for i in range(12)])


@st.composite
def model_views(draw) -> list[ModelView]:
    chosen = draw(st.lists(names, min_size=0, max_size=10, unique=True))
    out = []
    for name in chosen:
        resident = draw(st.booleans())
        out.append(
            ModelView(
                model=name,
                size_bytes=draw(st.integers(0, 20)) * GB // 2,
                load_seconds=draw(st.floats(0, 120, allow_nan=False)),
                p_any=draw(st.floats(0, 1, allow_nan=False)),
                next_demand_s=draw(st.none() | st.floats(0, 3600, allow_nan=False)),
                resident=resident,
                in_flight=draw(st.integers(0, 3)) if resident and draw(st.booleans()) else 0,
                pinned=draw(st.booleans()) if draw(st.integers(0, 4)) == 0 else False,
            )
        )
    return out


budgets = st.integers(0, 40).map(lambda n: n * GB // 2)
configs = st.builds(
    PlanConfig, hysteresis=st.floats(0, 2, allow_nan=False), min_p_any=st.floats(0, 0.5, allow_nan=False)
)


@settings(max_examples=1000, deadline=None)
@given(model_views(), budgets, configs)
def test_prop_budget_never_exceeded_at_any_step(models, budget, cfg):
    actions = plan(models, budget, cfg)
    size = {m.model: m.size_bytes for m in models}
    resident = {m.model for m in models if m.resident}
    start = sum(size[m] for m in resident)
    total = start
    seen_load = False
    for a in actions:
        if a.action == "load":
            seen_load = True
            assert a.model not in resident
            resident.add(a.model)
            total += size[a.model]
            assert total <= budget
        elif a.action == "unload":
            assert not seen_load, "evictions come before loads"
            assert a.model in resident
            resident.discard(a.model)
            total -= size[a.model]
        else:
            assert a.model in resident
        assert a.resident_bytes_after == total
        assert total <= max(budget, start)
    if start > budget and any(m.resident and (m.in_flight or m.pinned) for m in models):
        forced = sum(m.size_bytes for m in models if m.resident and (m.in_flight or m.pinned))
        if forced > budget:
            assert not seen_load, "over budget through forced models: only evictions"


@settings(max_examples=1000, deadline=None)
@given(model_views(), budgets, configs)
def test_prop_in_flight_never_evicted_and_pins_kept(models, budget, cfg):
    actions = plan(models, budget, cfg)
    unloaded = {a.model for a in actions if a.action == "unload"}
    kept = {a.model for a in actions if a.action == "keep"}
    for m in models:
        if m.resident and (m.in_flight > 0 or m.pinned):
            assert m.model not in unloaded
            assert m.model in kept
    # every resident model gets exactly one decision
    decided = [a.model for a in actions if a.action != "load"]
    assert sorted(decided) == sorted(m.model for m in models if m.resident)


@settings(max_examples=1000, deadline=None)
@given(model_views(), budgets, configs)
def test_prop_no_flapping_under_unchanged_inputs(models, budget, cfg):
    first = plan(models, budget, cfg)
    after = apply(models, first)
    again = plan(after, budget, cfg)
    assert all(a.action == "keep" for a in again), again
    assert {a.model for a in again} == {m.model for m in after if m.resident}


@settings(max_examples=1000, deadline=None)
@given(model_views(), budgets, configs)
def test_prop_loads_in_demand_order_and_never_below_min_p_any(models, budget, cfg):
    actions = plan(models, budget, cfg)
    view = {m.model: m for m in models}
    loads = [view[a.model] for a in actions if a.action == "load"]
    keys = [m.next_demand_s if m.next_demand_s is not None else float("inf") for m in loads]
    assert keys == sorted(keys)
    for m in loads:
        assert m.pinned or m.p_any >= cfg.min_p_any


@settings(max_examples=1000, deadline=None)
@given(model_views(), budgets, st.data())
def test_prop_make_room_fits_or_is_impossible(models, budget, data):
    if not models:
        return
    incoming = data.draw(st.sampled_from([m.model for m in models]))
    result = make_room(models, incoming, budget)
    view = {m.model: m for m in models}
    resident_total = sum(m.size_bytes for m in models if m.resident)
    target = view[incoming]
    if result is None:
        evictable = sum(
            m.size_bytes for m in models if m.resident and not m.in_flight and not m.pinned and m.model != incoming
        )
        assert not target.resident
        assert resident_total - evictable + target.size_bytes > budget
        return
    total = resident_total
    for a in result:
        m = view[a.model]
        assert a.action == "unload" and m.resident and m.in_flight == 0 and not m.pinned and m.model != incoming
        total -= m.size_bytes
        assert a.resident_bytes_after == total
    if not target.resident:
        assert total + target.size_bytes <= budget


def test_make_room_breaks_ties_by_least_recently_used():
    # the forecast has no opinion on any of them (p_any 0): the one idle longest goes, then the never-used one
    models = [
        dataclasses.replace(mv("recent", 4, 10, 0.0, resident=True), idle_s=30.0),
        dataclasses.replace(mv("stale", 4, 10, 0.0, resident=True), idle_s=3000.0),
        mv("unknown", 4, 10, 0.0, resident=True),
        mv("incoming", 4, 10, 1.0),
    ]
    acts = make_room(models, "incoming", 12 * GB)
    assert [a.model for a in acts] == ["unknown"]
    acts = make_room(models[:2] + models[3:], "incoming", 8 * GB)
    assert [a.model for a in acts] == ["stale"]


def test_recent_demand_reads_the_hazard_of_a_models_idle_time():
    rd = RecentDemand(memory_s=1e12)  # nothing forgotten: the counts below are exact
    assert rd.p_within("m", 0.0, 60.0) is None and rd.idle_s("m", 0.0) is None and rd.blend("m", 0.2, 0.0, 60.0) == 0.2
    rd.observe("m", 0.0)
    # one request, no gap yet: the heavy-tailed prior alone, h / (idle + 2h)
    assert rd.p_within("m", 0.0, 100.0) == pytest.approx(1 / 2)
    assert rd.p_within("m", 100.0, 100.0) == pytest.approx(1 / 3)
    # asked for every 3 minutes: ten gaps of 180 s (all in the bin [129.7, 194.6) s)
    for k in range(1, 11):
        rd.observe("m", 180.0 * k)
    now = 1800.0
    # idle 60 s: every gap is longer, none ends within the next minute -> (0 + prior 60/180) / (10 + 1)
    assert rd.p_within("m", now + 60, 60.0) == pytest.approx((60 / 180) / 11)
    # ... but all ten end within the next 150 s -> (10 + 150/360) / 11
    assert rd.p_within("m", now + 60, 150.0) == pytest.approx((10 + 150 / 360) / 11)
    # idle far longer than ever: only the prior speaks, and it fades with the idle time
    assert rd.p_within("m", now + 3600, 600.0) == pytest.approx(600 / 4800)
    assert rd.idle_s("m", now + 60) == 60.0
    # blended with the forecast as an independent source of demand
    p = rd.p_within("m", now + 60, 150.0)
    assert rd.blend("m", 0.2, now + 60, 150.0) == pytest.approx(1 - 0.8 * (1 - p))


def test_recent_demand_forgets_demand_that_changed():
    def fed(memory_s: float) -> RecentDemand:
        rd = RecentDemand(memory_s=memory_s)
        for k in range(21):  # a day ago: every 5 minutes
            rd.observe("m", 300.0 * k)
        for k in range(11):  # now: every 30 s, after a long pause
            rd.observe("m", 100_000.0 + 30.0 * k)
        return rd

    t = 100_300.0 + 60.0  # idle 60 s
    # remembering everything, the old 5-minute gaps say a request within 600 s is nearly sure: of the 21 gaps
    # longer than 60 s all but the pause end by 660 s
    assert fed(1e12).p_within("m", t, 600.0) == pytest.approx((20 + 600 / 1260) / 22)
    # with an hour's memory they are forgotten (weight ~2^-26); the pause, 300 s older than the latest gap
    # (weight 2^(-300/3600)), is the only gap longer than 60 s: the prior speaks
    pause = 2 ** (-300 / 3600)
    assert fed(3600.0).p_within("m", t, 600.0) == pytest.approx((600 / 1260) / (pause + 1), rel=1e-6)


def test_recent_demand_rescales_its_weights_instead_of_overflowing():
    rd = RecentDemand(memory_s=1.0)
    for k in range(101):  # 1000 s = 1000 memories: weights would reach 2^1000 without rescaling
        rd.observe("m", 10.0 * k)
    # the latest gap weighs 1, the one before 2^-10 ...: (S(5) - S(15) + 10/25) / (S(5) + 1), S(5) ~ 1.001
    s5 = sum(2.0 ** (-10 * k) for k in range(100))
    assert rd.p_within("m", 1005.0, 10.0) == pytest.approx((s5 + 10 / 25) / (s5 + 1))
    with pytest.raises(ValueError):
        RecentDemand(memory_s=0.0)


def test_vram_account_shadow_is_an_lru_cache_under_the_budget():
    acc = VramAccount(horizon_s=3600.0)
    # before any request there is no on-demand cache to compare with: the whole budget, nothing booked
    assert acc.allowance(0.0, 5 * GB, 12 * GB) == 12 * GB and acc.balance == 0.0
    for t, key in enumerate(["a", "b", "c", "a", "d"]):
        acc.request(key, 4 * GB, float(t), 0, 12 * GB)
    # a, b, c fill 12 GB; a is used again; d pushes out the least recently used, b
    assert list(acc.lru) == ["c", "a", "d"] and acc.lru_bytes == 12 * GB
    acc.request("huge", 13 * GB, 5.0, 0, 12 * GB)  # larger than the budget: no cache holds it
    assert "huge" not in acc.lru and acc.lru_bytes == 12 * GB
    acc.seed([("e", 4 * GB, None)], 8 * GB)  # a smaller budget (NVML says less is free): the oldest go
    assert list(acc.lru) == ["d", "e"]


def test_vram_account_keep_horizon_is_the_idle_time_of_the_caches_oldest_entry():
    acc = VramAccount(horizon_s=3600.0)
    assert acc.keep_horizon_s(50.0, 600.0) == 600.0  # empty cache: the floor
    for t, key in ((0.0, "a"), (10.0, "b"), (20.0, "c")):
        acc.request(key, 4 * GB, t, 0, 12 * GB)
    # a model idle now would stay as long as a, requested 1000 s ago, has
    assert acc.keep_horizon_s(1000.0, 600.0) == 1000.0
    assert acc.keep_horizon_s(100.0, 600.0) == 600.0  # never under the floor (the plan's horizon)
    acc.request("d", 4 * GB, 1000.0, 0, 12 * GB)  # a goes; b is the oldest
    assert acc.keep_horizon_s(1000.0, 1.0) == 990.0
    acc.seed([("b", 4 * GB, None), ("c", 4 * GB, None)], 12 * GB)  # from a log without times: d is the oldest
    assert acc.keep_horizon_s(1100.0, 1.0) == 100.0
    acc.seed([("d", 4 * GB, None)], 12 * GB)  # nothing known: the floor
    assert acc.keep_horizon_s(1100.0, 7.0) == 7.0


def test_vram_account_lends_saved_vram_hours_over_the_horizon_and_takes_back_overspending():
    target = VramAccount.TARGET
    acc = VramAccount(horizon_s=1000.0)
    acc.request("a", 10 * GB, 0.0, 0, 40 * GB)
    # nothing booked yet (a fresh account, e.g. a restarted serve): the allowance is the on-demand cache's bytes
    assert acc.allowance(0.0, 0, 40 * GB) == 10 * GB
    # 100 s holding 4 GB while the target is TARGET x 10 GB: that much saved, spread over the 1000 s horizon
    saved = (target * 10 - 4) * GB * 100
    assert acc.allowance(100.0, 4 * GB, 40 * GB) == int(10 * GB + saved / 1000)
    # within [0, budget] whatever the balance
    assert acc.allowance(100.0, 4 * GB, 10 * GB) == 10 * GB
    # then 100 s holding 30 GB: overspent, the allowance drops below the cache's bytes
    after = saved + (target * 10 - 30) * GB * 100
    assert after < 0
    assert acc.allowance(200.0, 30 * GB, 40 * GB) == int(10 * GB + after / 1000)
    assert acc.allowance(10**6, 40 * GB, 40 * GB) == 0
    # holding exactly what the cache holds still runs the balance down, by 1 - TARGET: the margin over the horizon
    steady = VramAccount(horizon_s=1000.0)
    steady.request("a", 10 * GB, 0.0, 10 * GB, 40 * GB)
    assert steady.allowance(1000.0, 10 * GB, 40 * GB) == pytest.approx(target * 10 * GB, rel=1e-9)
    with pytest.raises(ValueError):
        VramAccount(horizon_s=0.0)


def test_vram_account_lets_a_request_use_what_the_on_demand_cache_holds():
    acc = VramAccount(horizon_s=1000.0)
    acc.request("a", 10 * GB, 0.0, 0, 40 * GB)
    # 100 s holding 30 GB against a 10 GB cache: the allowance is below the cache's bytes
    allowance = acc.allowance(100.0, 30 * GB, 40 * GB)
    assert allowance < 10 * GB
    # a prefetch is held to the allowance; a request may use what the on-demand cache holds
    assert acc.room_limit(100.0, 30 * GB, 40 * GB, request=False) == allowance
    assert acc.room_limit(100.0, 30 * GB, 40 * GB, request=True) == 10 * GB


def test_a_plan_filling_the_allowance_loads_nothing_the_on_demand_cache_has_no_room_for():
    # a and b were asked for (4 GB each) and are resident: an on-demand cache would hold those 8 GB.
    acc = VramAccount(horizon_s=3600.0)
    acc.request("a", 4 * GB, 0.0, 0, 24 * GB)
    acc.request("b", 4 * GB, 0.0, 4 * GB, 24 * GB)
    allowance = acc.allowance(0.0, 8 * GB, 24 * GB)
    assert allowance == 8 * GB
    a = mv("a", 4, 10, 0.9, resident=True)
    b = mv("b", 4, 10, 0.3, resident=True)
    c = mv("c", 4, 10, 0.8)
    # within the allowance c, more likely to be asked for, takes b's place
    assert by_action(plan([a, b, c], allowance)) == {"load": ["c"], "unload": ["b"], "keep": ["a"]}
    # with the whole budget the plan would hold all three: more VRAM than loading on demand
    assert by_action(plan([a, b, c], 24 * GB)) == {"load": ["c"], "unload": [], "keep": ["a", "b"]}
