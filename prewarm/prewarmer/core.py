"""The prewarmer: carries out the planning state's decisions on the upstream and guards the budget on the request path.

It implements ProxyHooks by holding a ResidencyTracker (which knows what is
resident and what is in flight) and the PlanningState (prewarm.planner: each
model's rate, and the worth-ranked decisions the replay's forecast policy makes
too), and adds three things around them:

* before a request for a model that is not resident is forwarded, it evicts the
  lowest worth (``PlanningState.victims``) so the upstream's own eviction never
  has to act and the budget holds for client-triggered loads too; the room is
  then reserved for that request until it finishes, so a planned load cannot take it;
* it sets ``plan_keep_alive`` on forwarded Ollama bodies (an explicit 0, a client
  unloading, excepted): what stays resident is the planning state's decision, so
  Ollama's idle timer must not undo it;
* whenever the loader would otherwise idle (a new forecast, a cold request
  done), ``fill`` takes the planning state's steps one at a time under the
  actuator's lock: what does not earn its memory at ``vram_cost`` goes, pinned
  models come back, the prefetch that pays is loaded. State is re-read before
  each step, because requests keep arriving while a plan runs.

Its parts, one job each: `facts` (sizes, load times, what is served), `actuator`
(the upstream calls and their prewarm_actions rows), `holds` (manual holds and
keep-outs), `options` (runner options per model); `report` renders it as JSON.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from prewarm.backends.base import Backend
from prewarm.backends.ollama import keep_alive_value
from prewarm.catalog import Catalog, load_catalog
from prewarm.config import Settings
from prewarm.errors import ActionRefused, BackendError
from prewarm.forecast.horizon import canonical_outlook, horizon_outlook
from prewarm.gpu import Budget, GpuMonitor
from prewarm.planner import Candidate, PlanAction, PlanningState, Step
from prewarm.prewarmer.actuator import Actuator
from prewarm.prewarmer.facts import ModelFacts
from prewarm.prewarmer.holds import Holds
from prewarm.prewarmer.metrics import PrewarmMetrics
from prewarm.prewarmer.options import OptionsTally
from prewarm.prewarmer.residency import ResidencyTracker
from prewarm.records import RequestEvent
from prewarm.store import queries
from prewarm.units import parse_duration

log = logging.getLogger(__name__)

# A user's presence (listing models) starts a hint at most this often, for at most this many users remembered.
PRESENCE_EVERY_S = 60.0
MAX_SEEN_USERS = 10_000
# Ollama endpoints whose body carries keep_alive (its OpenAI-compatible /v1 API ignores it).
KEEP_ALIVE_ENDPOINTS = frozenset({"/api/generate", "/api/chat", "/api/embed", "/api/embeddings"})


class Prewarmer:
    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        store: Any | None = None,
        tracker: ResidencyTracker | None = None,
        gpu: GpuMonitor | None = None,
        catalog: Catalog | None = None,
        metrics: PrewarmMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.store = store
        self.tracker = tracker or ResidencyTracker(backend.list_resident, settings.ps_refresh, backend.canonical)
        self.gpu = gpu or GpuMonitor(settings)
        self.metrics = metrics or PrewarmMetrics()
        self.clock = clock
        self.facts = ModelFacts(backend, catalog or load_catalog(settings.catalog), self.tracker)
        self.actuator = Actuator(backend, self.tracker, store, self.metrics, clock, settings.plan_keep_alive,
                                 self.resident_bytes, self.budget_bytes)
        self.holds = Holds(clock, settings.manual_hold)
        self.options = OptionsTally(backend.load_options)
        self.pins: set[str] = {backend.canonical(p) for p in settings.pins}
        self.budget: Budget | None = None
        self.planned_resident: set[str] = set()  # what the latest plan loaded or kept
        self.forecast_at: float | None = None
        # The one planning object: rates (forecast, else decayed counts) and every eviction and prefetch.
        self.state = PlanningState(settings.vram_cost, settings.recency_half_life)
        self.last_plan: list[PlanAction] = []
        self.last_plan_at: float | None = None
        self._reserved: dict[str, int] = {}  # model -> bytes made room for, until its request finishes
        self._seen_users: dict[str, float] = {}  # user -> when their presence last started a hint (clock())
        self._hints: set[asyncio.Task[Any]] = set()  # presence hints and fills running in the background
        self._filling = False  # a fill is running: another would only queue behind it for the same steps
        self._too_large: set[str] = set()  # models already reported as larger than the budget
        # Set (and replaced) when a request finishes and a request waiting for room holds it: room may be free.
        self._request_done = asyncio.Event()
        self._request_done_held = False
        self.metrics.bind(self)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, start_tracker: bool = True) -> None:
        if start_tracker:
            await self.tracker.start()
        else:
            await self.tracker.refresh()
        try:
            for note in await self.backend.check():
                log.warning("upstream: %s", note)
        except BackendError as exc:
            log.warning("upstream: cannot check how it was started: %s", exc)
        await self.facts.refresh(self.store)
        await self.refresh_budget()
        recent: list[tuple[str, float]] = []
        if self.store is not None:
            try:
                recent = (await self.store.query(queries.recent_requests_sql(self.clock(),
                                                                             self.state.half_life_s)))[1]
            except Exception as exc:  # the store may be unavailable: then recency starts from nothing
                log.warning("cannot read the request log (%s); recency starts from nothing", exc)
            try:
                self.pins |= {self.canonical(str(m)) for (m,) in (await self.store.query(queries.PINS))[1]}
            except Exception as exc:
                log.warning("cannot read the pins set through the API (%s); only the config's pins hold", exc)
        self.seed_recent(recent)

    def seed_recent(self, requests: Iterable[tuple[str, float]]) -> None:
        """Replay the log's (model, epoch seconds) requests, oldest first, into the decayed request counts, so a
        restarted serve reads recency as the one before it did."""
        for m, ts in requests:
            self.state.observe(self.canonical(m), float(ts))

    async def stop(self, stop_tracker: bool = True) -> None:
        for task in list(self._hints):
            task.cancel()
        if stop_tracker:
            await self.tracker.stop()
        await self.backend.close()
        self.gpu.close()  # NVML's handle goes with the service

    async def refresh_budget(self) -> Budget:
        total = None
        if self.settings.vram_budget is None:
            try:
                total = await self.backend.reported_vram_total()
            except BackendError as exc:
                log.warning("budget: the upstream's VRAM total is unknown: %s", exc)
        self.budget = self.gpu.budget(self.resident_bytes(), total)
        self.metrics.set_budget(self.budget)
        return self.budget

    # ------------------------------------------------------------------ the VRAM account

    def canonical(self, model: str) -> str:
        return self.backend.canonical(model)

    def resident(self) -> dict[str, int]:
        """Resident models with their bytes, plus the room reserved for requests now loading their model."""
        out = {m: (b or self.facts.size_of(m)) for m, b in self.tracker.resident.items()}
        for m, b in self._reserved.items():
            out.setdefault(m, b)
        return out

    def resident_bytes(self) -> int:
        return sum(self.resident().values())

    def in_flight(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m, n in self.tracker.in_flight.items():
            c = self.canonical(m)
            out[c] = out.get(c, 0) + n
        return out

    def budget_bytes(self) -> int:
        if self.budget is None:
            raise ActionRefused("no VRAM budget yet: start() has not run")
        return self.budget.bytes

    def reserved(self, model: str) -> bool:
        """Room is reserved for `model` (a request is loading it) and it is not resident yet."""
        return model in self._reserved and model not in self.tracker.resident

    def resident_candidates(self, holding: bool = True, but: str | None = None) -> list[Candidate]:
        """The resident models as the planning state sees them. Never evictable: requests in flight, pinned,
        room reserved for a request now loading; with ``holding``, also a model held after a manual load or a
        hint (``manual_hold``), which then goes only when nothing else makes room."""
        in_flight = self.in_flight()
        out = []
        for m, b in sorted(self.resident().items()):
            if m == but:
                continue
            busy = (bool(in_flight.get(m)) or m in self.pins or m in self._reserved
                    or (holding and self.holds.held(m)))
            out.append(Candidate(m, b, self.facts.load_seconds_of(m), evictable=not busy))
        return out

    def absent_candidates(self) -> list[Candidate]:
        """The models the upstream serves that are not resident and fit the budget (the forecast's and the pins
        where the upstream or the catalog knows them)."""
        resident = self.resident()
        budget = self.budget_bytes()
        names = set(self.facts.sizes) | {m for m in set(self.state.forecast) | self.pins if self.facts.known_now(m)}
        out = []
        for m in sorted(names - set(resident) - self.actuator.evicting):
            if m not in self.pins and self.holds.kept_out(m):
                continue
            size = self.facts.size_of(m)
            if size <= budget:
                out.append(Candidate(m, size, self.facts.load_seconds_of(m), pinned=m in self.pins))
        return out

    def victims_for(self, model: str) -> list[str] | None:
        """The evictions that let ``model`` load under the budget (lowest worth first, held models last), [] when
        it fits, None when the evictable models cannot free enough."""
        need = self.resident_bytes() + self.facts.size_of(model) - self.budget_bytes()
        now = self.clock()
        for holding in (True, False):
            gone = self.state.victims(self.resident_candidates(holding, but=model), need, now)
            if gone is not None:
                return [str(g) for g in gone]
        return None

    def worths(self) -> dict[str, float]:
        """Each resident model's worth now (seconds of waiting saved per GB-hour held)."""
        now = self.clock()
        return {c.key: self.state.worth(c, now) for c in self.resident_candidates(holding=False)}

    def explain(self, model: str) -> str:
        """The planning state's reason for ``model`` now (its rate, where it comes from, its worth)."""
        return self.state.explain(Candidate(model, self.facts.size_of(model), self.facts.load_seconds_of(model)),
                                  self.clock())

    def _room_reason(self, victim: str, model: str) -> str:
        return (f"make room for {model} ({self.facts.size_of(model) / 1e9:.2f} GB) under the "
                f"{self.budget_bytes() / 1e9:.2f} GB budget; lowest worth: {self.explain(victim)}")

    # ------------------------------------------------------------------ ProxyHooks

    def is_resident(self, model: str) -> bool | None:
        if not self.backend.resident_known:
            return None
        m = self.canonical(model)
        if m in self.actuator.evicting:
            return False
        return self.tracker.is_resident(m)

    def upstream_problem(self) -> str | None:
        return self.tracker.upstream_problem()

    def _resident_now(self, model: str) -> bool:
        return model not in self.actuator.evicting and bool(self.tracker.holds(model))

    async def before_forward(self, model: str, body: dict[str, Any], endpoint: str) -> dict[str, Any] | None:
        m = self.canonical(model)
        if not await self.facts.served(m):
            return None  # the upstream will answer 404: nothing to make room for, nothing to remember
        self.state.observe(m, self.clock())
        self.holds.wanted(m)
        self.options.count(m, body)
        if self.backend.resident_known and not self._resident_now(m) and m not in self._reserved:
            await self._make_room_for(m, f"request for {m}")
        if self.backend.sets_keep_alive and endpoint in KEEP_ALIVE_ENDPOINTS and not _unloads(body):
            want = keep_alive_value(self.settings.plan_keep_alive)
            if body.get("keep_alive") != want:
                return dict(body, keep_alive=want)
        return None

    def model_servers(self) -> dict[str, tuple[str, int]] | None:
        if not self.backend.routes_per_model:
            return None
        out = {}
        for m in sorted(self.facts.sizes) or sorted(self.facts.catalog.entries):
            try:
                out[m] = (self.backend.route_for(m), self.facts.size_of(m))
            except BackendError:
                continue
        return out

    def upstream_for(self, model: str) -> str | None:
        if not self.backend.routes_per_model:
            return None
        try:
            return self.backend.route_for(self.canonical(model))
        except BackendError:
            return None

    def request_started(self, model: str) -> None:
        self.tracker.request_started(model)

    def upstream_answered(self, model: str) -> None:
        self.tracker.upstream_answered(model)

    def request_finished(self, model: str, event: RequestEvent) -> None:
        self.tracker.request_finished(model, event)
        m = model  # the proxy canonicalised it where the request entered
        if not self.tracker.in_flight.get(m):
            self._reserved.pop(m, None)
        if self._request_done_held:
            self._request_done.set()
            self._request_done = asyncio.Event()
            self._request_done_held = False
        known = self.facts.known_now(m)
        self.metrics.observe_request(m if known else "other", event)
        if event.cold and known:
            self.fill_soon()  # the load it waited for is done: the loader would idle now

    def user_seen(self, user: str) -> None:
        """Presence (a model list or a model's details asked for): a background hint, at most one a minute
        per user; the table of users is bounded so client-chosen names cannot grow it."""
        now = self.clock()
        last = self._seen_users.get(user)
        if last is not None and now - last < PRESENCE_EVERY_S:
            return
        if len(self._seen_users) >= MAX_SEEN_USERS:
            self._seen_users.clear()
        self._seen_users[user] = now
        self._background(self._presence_hint(user))

    def prune(self) -> list[str]:
        """Forget the per-model state of models without a request for model_state_ttl that are neither
        served, resident nor pinned (names from the log of an upstream that no longer has them)."""
        keep = set(self.facts.sizes) | set(self.facts.catalog.entries) | set(self.tracker.resident) | self.pins
        gone = self.state.forget_idle(self.clock(), self.settings.model_state_ttl, keep)
        self.options.forget(m for m in self.options.models() - keep if m in gone or not self.state.knows(m))
        return gone

    async def _make_room_for(self, model: str, why: str) -> None:
        """Evict the lowest worth until `model` fits, then reserve its room; waits for a load in progress.

        When only models in flight (or pinned) could make room, the request waits for
        one of them to finish, as Ollama queues a request until a runner is idle,
        for at most ``room_wait`` seconds; then it is forwarded anyway and the
        shortfall is logged, because a late answer beats none.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.room_wait
        while True:
            freed = self._request_done
            self._request_done_held = True
            async with self.actuator.lock:
                if self._resident_now(model) or model in self._reserved:
                    return
                if self.budget is None:
                    await self.refresh_budget()
                size = self.facts.size_of(model)
                if size > self.budget_bytes():
                    # No eviction can ever make room: waiting room_wait would only delay the upstream's own answer.
                    if model not in self._too_large:
                        self._too_large.add(model)
                        log.warning("%s needs %d bytes, more than the whole %d-byte budget: forwarded without "
                                    "making room", model, size, self.budget_bytes())
                    return
                victims = self.victims_for(model)
                if victims is not None:
                    # Every victim counts as leaving from now: a request for one of them waits behind this
                    # lock instead of being forwarded to a model that is about to go.
                    await self._evict(victims, {v: self._room_reason(v, model) for v in victims}, for_room=True)
                    if self.backend.loads_on_request:
                        self._reserved[model] = size
                    else:
                        # A sleeping vLLM server refuses requests: it must be woken before this one is forwarded.
                        await self._load(model, why)
                    return
            try:
                await asyncio.wait_for(freed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                log.warning("no room for %s under the %d-byte budget after %.0f s: models in flight or pinned "
                            "hold it; forwarding anyway", model, self.budget_bytes(), self.settings.room_wait)
                self.actuator.record(model, "unload", f"{why}: no evictable model frees enough room", None, None,
                                     self.settings.room_wait * 1000.0, False, "no room")
                return

    # ------------------------------------------------------------------ actions (under actuator.lock)

    async def _evict(self, victims: list[str], reasons: dict[str, str], for_room: bool,
                     actions: list[PlanAction] | None = None) -> bool:
        """Unload `victims` in order, each counted as leaving from the start; False when one failed.

        A plan's step (``actions`` given) stops at the first failure: its load
        would not fit. Making room for a request goes on, because the request
        is forwarded anyway and every byte freed helps the upstream load it.
        A victim of making room feeds the planning state's characteristic time
        with its idle age."""
        ok = True
        self.actuator.evicting.update(victims)
        try:
            for v in victims:
                now = self.clock()
                if not await self._unload(v, reasons[v]):
                    ok = False
                    if actions is not None:
                        return False
                    continue
                if for_room:
                    self.state.evicted(v, now)
                if actions is not None:
                    actions.append(PlanAction(v, "unload", reasons[v], self.resident_bytes()))
        finally:
            self.actuator.evicting.difference_update(victims)
        return ok

    async def _unload(self, model: str, reason: str) -> bool:
        if not await self.actuator.unload(model, reason):
            return False
        self.planned_resident.discard(model)
        return True

    async def _load(self, model: str, reason: str) -> bool:
        return await self.actuator.load(model, self.facts.size_of(model), reason)

    async def apply_plan(self, forecasts: pd.DataFrame, made_at: float | None = None) -> list[PlanAction]:
        """Take the forecaster's latest word (its frame or the forecasts table) and fill from it."""
        if forecasts is None or forecasts.empty:
            raise ActionRefused("no forecasts: refusing to plan on nothing")
        if "expected_requests" not in forecasts.columns:
            raise ActionRefused("forecasts without expected_requests: the planner reads each model's expected "
                                "requests per window (retrain with this version)")
        now = self.clock()
        self.prune()
        self.set_forecast(forecasts, now)
        self.forecast_at = made_at if made_at is not None else now
        self.metrics.forecast_made(self.forecast_at)
        await self.tracker.refresh()
        await self.refresh_budget()
        before = set(self.resident())
        actions = await self.fill()
        for m in sorted(before & set(self.resident())):
            async with self.actuator.lock:
                if m not in self.resident():
                    continue
                reason = "worth its place: " + self.explain(m)
                await self.actuator.keep(m, reason)
                actions.append(PlanAction(m, "keep", reason, self.resident_bytes()))
        self.planned_resident = {a.model for a in actions if a.action in ("keep", "load")}
        self.last_plan, self.last_plan_at = actions, now
        return actions

    def set_forecast(self, forecasts: pd.DataFrame, now: float) -> None:
        """The forecaster's expected requests ahead become the planning state's outlook (nothing ahead: no
        forecast, every model's rate its decayed count)."""
        outlook = horizon_outlook(forecasts, now)
        self.state.set_forecast(None if outlook is None else canonical_outlook(outlook, self.canonical))

    def fill_soon(self) -> None:
        """Start a fill in the background unless one is running (a fill is a favour: a request never waits)."""
        if self._filling or not self.backend.resident_known:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._background(self._fill_quietly())

    def _background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._hints.add(task)
        task.add_done_callback(self._hints.discard)

    async def _fill_quietly(self) -> None:
        try:
            await self.fill()
        except Exception:  # a fill is a favour: its failure must never reach a request
            log.exception("prewarm fill failed")

    async def fill(self) -> list[PlanAction]:
        """Take the planning state's steps until none pays, one at a time under the actuator's lock (the loader
        is free each time a step begins).

        A step that fails ends the fill; the next forecast or cold request
        tries again. Returns the actions taken, as PlanActions.
        """
        if self._filling or not self.backend.resident_known:
            return []
        self._filling = True
        try:
            return await self._fill()
        finally:
            self._filling = False

    async def _fill(self) -> list[PlanAction]:
        if self.budget is None:
            await self.refresh_budget()
        actions: list[PlanAction] = []
        for _ in range(len(self.resident()) + len(self.facts.sizes) + len(self.pins) + 1):
            async with self.actuator.lock:
                step = self.state.step(self.resident_candidates(), self.absent_candidates(),
                                       self.budget_bytes() - self.resident_bytes(), self.clock())
                if step is None or not await self._take(step, actions):
                    break
        return actions

    async def _take(self, step: Step, actions: list[PlanAction]) -> bool:
        """Carry out one step (its unloads, then its load); False when any of it failed."""
        victims = [str(v) for v in step.unload]
        reasons = {v: step.why if step.load is None else self._room_reason(v, str(step.load)) for v in victims}
        if not await self._evict(victims, reasons, for_room=step.load is not None, actions=actions):
            return False
        if step.load is None:
            return True
        m = str(step.load)
        if not await self._load(m, step.why):
            return False
        actions.append(PlanAction(m, "load", step.why, self.resident_bytes()))
        return True

    # ------------------------------------------------------------------ admin and hints

    async def load_now(self, model: str, reason: str = "admin request") -> dict[str, Any]:
        m = self.canonical(model)
        async with self.actuator.lock:
            if self.tracker.holds(m):
                return {"model": m, "action": "load", "ok": True, "note": "already resident"}
            if self.budget is None:
                await self.refresh_budget()
            if self.facts.size_of(m) > self.budget_bytes():
                raise ActionRefused(f"{m} needs {self.facts.size_of(m)} bytes, more than the whole "
                                    f"{self.budget_bytes()}-byte budget")
            evictions = self.victims_for(m)
            if evictions is None:
                raise ActionRefused(f"no room for {m}: models in flight or pinned hold the budget")
            await self._evict(evictions, {v: self._room_reason(v, m) for v in evictions}, for_room=True)
            ok = await self._load(m, reason)
        self.planned_resident.add(m)
        if ok:
            self.holds.hold(m)
        return {"model": m, "action": "load", "ok": ok, "evicted": evictions,
                "error": None if ok else self.actuator.last_error()}

    async def unload_now(self, model: str, reason: str = "admin request") -> dict[str, Any]:
        m = self.canonical(model)
        if self.in_flight().get(m):
            raise ActionRefused(f"{m} has requests in flight; it is not evicted")
        async with self.actuator.lock:
            ok = await self._unload(m, reason)
        if ok:
            self.holds.keep_out(m)
        return {"model": m, "action": "unload", "ok": ok, "error": None if ok else self.actuator.last_error()}

    async def usual_models(self, user: str, limit: int = 2) -> list[str]:
        """The models that make up at least a quarter of `user`'s answered requests over the last week, most
        used first (at most `limit`): what a user who shows up is likely to ask for next."""
        if self.store is None:
            return []
        await self.store.flush()  # the user's latest requests count: they may still be in the writer's queue
        _, rows = await self.store.query(queries.USUAL_MODELS, {"user": user})
        return [self.canonical(str(m)) for m, share in rows if float(share) >= 0.25][:limit]

    async def hint(self, user: str | None, model: str | None = None) -> dict[str, Any]:
        """Have `model` (or `user`'s usual models) resident soon, under the budget and make_room's rules.

        What is loaded is held for manual_hold, so the next plan does not undo it
        before the user's first request arrives.
        """
        wanted = [self.canonical(model)] if model else (await self.usual_models(user) if user else [])
        out: dict[str, Any] = {"user": user, "models": wanted, "loaded": [], "resident": [], "skipped": []}
        for m in wanted:
            if self._resident_now(m):
                self.holds.hold(m)
                out["resident"].append(m)
                continue
            if not await self.facts.served(m):
                out["skipped"].append({"model": m, "reason": "the upstream does not serve it"})
                continue
            try:
                result = await self.load_now(m, reason=f"hint for user {user}" if user else "hint")
            except ActionRefused as exc:
                out["skipped"].append({"model": m, "reason": str(exc)})
                continue
            (out["loaded"] if result["ok"] else out["skipped"]).append(
                m if result["ok"] else {"model": m, "reason": result["error"]})
        return out

    async def _presence_hint(self, user: str) -> None:
        try:
            await self.hint(user)
        except Exception:  # a hint is a favour: its failure must never reach a request
            log.exception("presence hint for %s failed", user)

    def pin(self, model: str, source: str = "api") -> str:
        """Keep `model` resident from now on, across restarts (a pin_events row; the pins view reads it back)."""
        m = self.canonical(model)
        self.pins.add(m)
        self._record_pin(m, True, source)
        return m

    def unpin(self, model: str, source: str = "api") -> str:
        m = self.canonical(model)
        self.pins.discard(m)
        self._record_pin(m, False, source)
        return m

    def _record_pin(self, model: str, pinned: bool, source: str) -> None:
        if self.store is not None:
            self.store.put_rows("pin_events", [{"ts": datetime.fromtimestamp(self.clock(), UTC), "model": model,
                                                "pinned": pinned, "source": source}])


def _unloads(body: dict[str, Any]) -> bool:
    """An Ollama body asking to unload its model now (keep_alive 0, as `ollama stop` sends): passed as it is."""
    value = body.get("keep_alive")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return False
    try:
        return parse_duration(value) == 0
    except ValueError:
        return False
