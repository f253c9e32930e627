"""The prewarmer: carries out the planning state's decisions on the upstream and guards the budget on the request path.

It implements ProxyHooks by holding a ResidencyTracker (which knows what is
resident and what is in flight) and the PlanningState (prewarm.planning: each
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
  operation lock: what does not earn its memory at ``vram_cost`` goes, pinned
  models come back, the prefetch that pays is loaded. Each action is a row in
  ``prewarm_actions``; state is re-read before each step, because requests keep
  arriving while a plan runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from prewarm.backends.base import Backend, BackendError
from prewarm.backends.ollama import keep_alive_value, runner_options
from prewarm.backends.sizing import LOAD_MS_SQL, catalog_rows, load_ms_p50
from prewarm.catalog import Catalog, load_catalog
from prewarm.config import Settings
from prewarm.forecast.horizon import canonical_rates, horizon_rates, horizon_span
from prewarm.gpu import Budget, GpuMonitor
from prewarm.metrics import PrewarmMetrics
from prewarm.planning import Candidate, PlanAction, PlanningState, Step, plan
from prewarm.records import RequestEvent
from prewarm.residency import ResidencyTracker
from prewarm.units import parse_duration

log = logging.getLogger(__name__)

# The requests that seed each model's decayed request count at start: those of the last RECENT_HALF_LIVES
# half-lives (an older request weighs under 1/256).
RECENT_HALF_LIVES = 8


def recent_requests_sql(now: float, half_life_s: float) -> str:
    """The log's requests of the last RECENT_HALF_LIVES half-lives before ``now`` (epoch seconds), oldest first."""
    since = float(now) - RECENT_HALF_LIVES * half_life_s
    return (f"SELECT model, epoch(ts_start) AS ts FROM requests WHERE model IS NOT NULL "
            f"AND status IS DISTINCT FROM 404 AND ts_start >= to_timestamp({since!r}) ORDER BY ts_start")


# An unknown model name makes the prewarmer ask the upstream for its models again, at most this often: a
# flood of made-up names must not become a flood of /api/tags calls.
SIZES_REFRESH_MIN_S = 5.0
# A user's presence (listing models) starts a hint at most this often, for at most this many users remembered.
PRESENCE_EVERY_S = 60.0
MAX_SEEN_USERS = 10_000
# Each model's share of the user's answered requests over the week (of all of them, not only the rows kept).
USUAL_MODELS_SQL = ("SELECT model, count(*) / sum(count(*)) OVER () AS share FROM requests WHERE user_id = ? "
                    "AND model IS NOT NULL AND status = 200 AND ts_start >= now() - INTERVAL 7 DAY "
                    "GROUP BY model ORDER BY share DESC, model LIMIT 5")
# Ollama endpoints whose body carries keep_alive (its OpenAI-compatible /v1 API ignores it).
KEEP_ALIVE_ENDPOINTS = frozenset({"/api/generate", "/api/chat", "/api/embed", "/api/embeddings"})


class PrewarmError(RuntimeError):
    """An admin action cannot be carried out (no room, model busy); the message says why."""


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
        self.catalog = catalog or load_catalog(settings.catalog)
        self.metrics = metrics or PrewarmMetrics()
        self.clock = clock
        self.pins: set[str] = {backend.canonical(p) for p in settings.pins}
        self.sizes: dict[str, int] = {}
        self.load_ms: dict[str, float] = {}
        self.budget: Budget | None = None
        self.planned_resident: set[str] = set()  # what the latest plan loaded or kept
        self.forecast_at: float | None = None
        # The one planning object: rates (forecast, else decayed counts) and every eviction and prefetch.
        self.state = PlanningState(settings.vram_cost)
        self.last_plan: list[PlanAction] = []
        self.last_plan_at: float | None = None
        self.last_actions: deque[dict[str, Any]] = deque(maxlen=50)
        self._options: dict[str, Counter[tuple]] = {}
        self._best_options: dict[str, tuple] = {}  # per model, the most common key of _options (kept as they count)
        self._reserved: dict[str, int] = {}  # model -> bytes made room for, until its request finishes
        # Models being unloaded now: not resident for any request that arrives meanwhile (it waits for the
        # unload, then makes room like any cold request), so the upstream never reloads one beside a newcomer.
        self._evicting: set[str] = set()
        self._sizes_at = 0.0  # monotonic time of the last sizes() refresh for an unknown name
        self._held_until: dict[str, float] = {}  # model -> until when a manual load or a hint keeps it (clock())
        self._kept_out_until: dict[str, float] = {}  # model -> until when a manual unload keeps prefetches off it
        self._seen_users: dict[str, float] = {}  # user -> when their presence last started a hint (clock())
        self._hints: set[asyncio.Task[Any]] = set()  # presence hints and fills running in the background
        self._filling = False  # a fill is running: another would only queue behind it for the same steps
        self._too_large: set[str] = set()  # models already reported as larger than the budget
        self._op_lock = asyncio.Lock()  # one load or unload at a time, as the upstream does them
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
        await self.refresh_catalog()
        await self.refresh_budget()
        recent: list[tuple[str, float]] = []
        if self.store is not None:
            try:
                recent = (await self.store.query(recent_requests_sql(self.clock(), self.state.half_life_s)))[1]
            except Exception as exc:  # the store may be unavailable: then recency starts from nothing
                log.warning("cannot read the request log (%s); recency starts from nothing", exc)
            try:
                self.pins |= {self.canonical(str(m)) for (m,) in (await self.store.query("SELECT model FROM pins"))[1]}
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
        self.budget = self.gpu.budget(self._resident_bytes(), total)
        self.metrics.set_budget(self.budget)
        return self.budget

    async def refresh_catalog(self) -> None:
        """Sizes from the upstream, load times from the log; both into model_catalog (the catalog CSV wins)."""
        try:
            self.sizes = await self.backend.sizes()
        except BackendError as exc:
            log.warning("sizes: %s; using the catalog and its default rule", exc)
        if self.store is not None:
            try:
                df = await asyncio.to_thread(self.store.read_df, LOAD_MS_SQL)
                self.load_ms = load_ms_p50(df)
            except Exception as exc:  # the store may be unavailable; load times then come from the catalog
                log.warning("load times: cannot read the log (%s); using the catalog", exc)
        source = self.backend.size_source
        rows = catalog_rows(self.sizes, source, self.load_ms, self.catalog)
        if self.store is not None and rows:
            self.store.put_rows("model_catalog", rows)

    # ------------------------------------------------------------------ model facts

    def canonical(self, model: str) -> str:
        return self.backend.canonical(model)

    def size_of(self, model: str) -> int:
        if model in self.catalog:
            return self.catalog.get(model).size_bytes
        if self.tracker.resident.get(model):
            return self.tracker.resident[model]
        return self.sizes.get(model) or self.catalog.get(model).size_bytes

    def load_seconds_of(self, model: str) -> float:
        if model in self.catalog:
            return self.catalog.get(model).load_seconds
        if model in self.load_ms:
            return self.load_ms[model] / 1000.0
        return self.catalog.get(model).load_seconds

    def _resident(self) -> dict[str, int]:
        """Resident models with their bytes, plus the room reserved for requests now loading their model."""
        out = {m: (b or self.size_of(m)) for m, b in self.tracker.resident.items()}
        for m, b in self._reserved.items():
            out.setdefault(m, b)
        return out

    def _resident_bytes(self) -> int:
        return sum(self._resident().values())

    def _in_flight(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m, n in self.tracker.in_flight.items():
            c = self.canonical(m)
            out[c] = out.get(c, 0) + n
        return out

    def resident_candidates(self, holding: bool = True, but: str | None = None) -> list[Candidate]:
        """The resident models as the planning state sees them. Never evictable: requests in flight, pinned,
        room reserved for a request now loading; with ``holding``, also a model held after a manual load or a
        hint (``manual_hold``), which then goes only when nothing else makes room."""
        in_flight = self._in_flight()
        out = []
        for m, b in sorted(self._resident().items()):
            if m == but:
                continue
            busy = bool(in_flight.get(m)) or m in self.pins or m in self._reserved or (holding and self._held(m))
            out.append(Candidate(m, b, self.load_seconds_of(m), evictable=not busy))
        return out

    def absent_candidates(self) -> list[Candidate]:
        """The models the upstream serves that are not resident and fit the budget (the forecast's and the pins
        where the upstream or the catalog knows them)."""
        resident = self._resident()
        budget = self._budget_bytes()
        names = set(self.sizes) | {m for m in set(self.state.forecast) | self.pins if self._known_now(m)}
        out = []
        for m in sorted(names - set(resident) - self._evicting):
            if m not in self.pins and self._kept_out(m):
                continue
            size = self.size_of(m)
            if size <= budget:
                out.append(Candidate(m, size, self.load_seconds_of(m), pinned=m in self.pins))
        return out

    def victims_for(self, model: str) -> list[str] | None:
        """The evictions that let ``model`` load under the budget (lowest worth first, held models last), [] when
        it fits, None when the evictable models cannot free enough."""
        need = self._resident_bytes() + self.size_of(model) - self._budget_bytes()
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

    def _explain(self, model: str) -> str:
        """The planning state's reason for ``model`` now (its rate, where it comes from, its worth)."""
        return self.state.explain(Candidate(model, self.size_of(model), self.load_seconds_of(model)), self.clock())

    def _room_reason(self, victim: str, model: str) -> str:
        return (f"make room for {model} ({self.size_of(model) / 1e9:.2f} GB) under the "
                f"{self._budget_bytes() / 1e9:.2f} GB budget; lowest worth: {self._explain(victim)}")

    def _budget_bytes(self) -> int:
        if self.budget is None:
            raise PrewarmError("no VRAM budget yet: start() has not run")
        return self.budget.bytes

    # ------------------------------------------------------------------ ProxyHooks

    def is_resident(self, model: str) -> bool | None:
        if not self.backend.resident_known:
            return None
        m = self.canonical(model)
        if m in self._evicting:
            return False
        return self.tracker.is_resident(m)

    def upstream_problem(self) -> str | None:
        return self.tracker.upstream_problem()

    def _resident_now(self, model: str) -> bool:
        return model not in self._evicting and bool(self.tracker.is_resident(model))

    async def before_forward(self, model: str, body: dict[str, Any], endpoint: str) -> dict[str, Any] | None:
        m = self.canonical(model)
        if not await self._known_model(m):
            return None  # the upstream will answer 404: nothing to make room for, nothing to remember
        self._observe(m)
        self._tally_options(m, body)
        if self.backend.resident_known and not self._resident_now(m) and m not in self._reserved:
            await self._make_room_for(m, f"request for {m}")
        if self.backend.sets_keep_alive and endpoint in KEEP_ALIVE_ENDPOINTS and not _unloads(body):
            want = keep_alive_value(self.settings.plan_keep_alive)
            if body.get("keep_alive") != want:
                return dict(body, keep_alive=want)
        return None

    async def _known_model(self, model: str) -> bool:
        """Whether the upstream serves `model`: a request for a misspelt name must not evict real models.

        A model pulled since the last size refresh is found by refreshing once.
        """
        if self._known_now(model):
            return True
        now = time.monotonic()
        if now - self._sizes_at < SIZES_REFRESH_MIN_S:
            return False
        self._sizes_at = now
        try:
            self.sizes = await self.backend.sizes()
        except BackendError as exc:
            log.warning("sizes: %s", exc)
        return model in self.sizes

    def _known_now(self, model: str) -> bool:
        return model in self.sizes or model in self.catalog or model in self.tracker.resident

    def model_servers(self) -> dict[str, tuple[str, int]] | None:
        if not self.backend.routes_per_model:
            return None
        out = {}
        for m in sorted(self.sizes) or sorted(self.catalog.entries):
            try:
                out[m] = (self.backend.route_for(m), self.size_of(m))
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

    def _observe(self, m: str) -> None:
        """A request for a model the upstream serves: its decayed request count sees it (and a manual unload's
        keep-out ends: it is wanted)."""
        self.state.observe(m, self.clock())
        self._kept_out_until.pop(m, None)

    def request_finished(self, model: str, event: RequestEvent) -> None:
        self.tracker.request_finished(model, event)
        m = model  # the proxy canonicalised it where the request entered
        if not self.tracker.in_flight.get(m):
            self._reserved.pop(m, None)
        if self._request_done_held:
            self._request_done.set()
            self._request_done = asyncio.Event()
            self._request_done_held = False
        self.metrics.observe_request(m if self._known_now(m) else "other", event)
        if event.cold and self._known_now(m):
            self.fill_soon()  # the load it waited for is done: the loader would idle now

    def prune(self) -> list[str]:
        """Forget the per-model state of models without a request for model_state_ttl that are neither
        served, resident nor pinned (names from the log of an upstream that no longer has them)."""
        keep = set(self.sizes) | set(self.catalog.entries) | set(self.tracker.resident) | self.pins
        gone = self.state.forget_idle(self.clock(), self.settings.model_state_ttl, keep)
        for m in set(self._options) - keep:
            if m in gone or not self.state.knows(m):
                self._options.pop(m, None)
                self._best_options.pop(m, None)
                self.backend.load_options.pop(m, None)
        return gone

    def _tally_options(self, model: str, body: dict[str, Any]) -> None:
        """Count the runner options traffic uses per model; loads use the most common so Ollama does not reload."""
        raw = body.get("options")
        key = tuple(sorted(runner_options(raw).items())) if raw else ()
        tally = self._options.setdefault(model, Counter())
        tally[key] += 1
        # Counted as they come (on the request path): the best changes only when another key overtakes it,
        # and a tie keeps the earlier one, as Counter.most_common does.
        best = self._best_options.get(model)
        if best is None or (key != best and tally[key] > tally[best]):
            self._best_options[model] = key
            self.backend.load_options[model] = dict(key)

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
            async with self._op_lock:
                if self._resident_now(model) or model in self._reserved:
                    return
                if self.budget is None:
                    await self.refresh_budget()
                if self.size_of(model) > self._budget_bytes():
                    # No eviction can ever make room: waiting room_wait would only delay the upstream's own answer.
                    if model not in self._too_large:
                        self._too_large.add(model)
                        log.warning("%s needs %d bytes, more than the whole %d-byte budget: forwarded without "
                                    "making room", model, self.size_of(model), self._budget_bytes())
                    return
                victims = self.victims_for(model)
                if victims is not None:
                    # Every victim counts as leaving from now: a request for one of them waits behind this
                    # lock instead of being forwarded to a model that is about to go.
                    reasons = {v: self._room_reason(v, model) for v in victims}
                    self._evicting.update(victims)
                    try:
                        for v in victims:
                            await self._unload_for_room(v, reasons[v])
                    finally:
                        self._evicting.difference_update(victims)
                    if self.backend.loads_on_request:
                        self._reserved[model] = self.size_of(model)
                    else:
                        # A sleeping vLLM server refuses requests: it must be woken before this one is forwarded.
                        await self._do_load(model, why)
                    return
            try:
                await asyncio.wait_for(freed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                log.warning("no room for %s under the %d-byte budget after %.0f s: models in flight or pinned "
                            "hold it; forwarding anyway", model, self._budget_bytes(), self.settings.room_wait)
                self._record(model, "unload", f"{why}: no evictable model frees enough room", None, None,
                             self.settings.room_wait * 1000.0, False, "no room")
                return

    # ------------------------------------------------------------------ actions

    def _record(self, model: str, action: str, reason: str, before: int | None, after: int | None,
                duration_ms: float, ok: bool, error: str | None, began: float | None = None) -> None:
        """One prewarm_actions row; ``ts`` is when the action began (the prewarmer's clock; now by default)."""
        ts = datetime.fromtimestamp(self.clock() if began is None else began, UTC)
        row = dict(ts=ts, model=model, action=action, reason=reason, vram_before=before, vram_after=after,
                   duration_ms=duration_ms, ok=ok, error=error)
        self.last_actions.append(row)
        if self.store is not None:
            self.store.put_rows("prewarm_actions", [row])

    async def _do_unload(self, model: str, reason: str) -> bool:
        before = self._resident_bytes()
        began, t0 = self.clock(), time.perf_counter()
        self._evicting.add(model)
        try:
            await self.backend.unload(model)
        except BackendError as exc:
            self._record(model, "unload", reason, before, before, _ms(t0), False, str(exc), began)
            return False
        finally:
            self._evicting.discard(model)
        self.tracker.mark_unloaded(model)
        await self.tracker.refresh()
        self.planned_resident.discard(model)
        self.metrics.evicted(model)
        self._record(model, "unload", reason, before, self._resident_bytes(), _ms(t0), True, None, began)
        return True

    async def _unload_for_room(self, model: str, reason: str) -> bool:
        """Unload a victim of making room; its idle age feeds the planning state's characteristic time."""
        now = self.clock()
        if not await self._do_unload(model, reason):
            return False
        self.state.evicted(model, now)
        return True

    async def _do_load(self, model: str, reason: str) -> bool:
        before = self._resident_bytes()
        size = self.size_of(model)
        if before + size > self._budget_bytes():
            self._record(model, "load", reason, before, before, 0.0, False,
                         f"skipped: {before + size} bytes would exceed the {self._budget_bytes()}-byte budget now")
            return False
        began, t0 = self.clock(), time.perf_counter()
        try:
            await self.backend.load(model, keep_alive=self.settings.plan_keep_alive)
        except BackendError as exc:
            self._record(model, "load", reason, before, before, _ms(t0), False, str(exc), began)
            return False
        self.tracker.mark_resident(model)
        await self.tracker.refresh()
        self.metrics.loaded(model, time.perf_counter() - t0)
        self._record(model, "load", reason, before, self._resident_bytes(), _ms(t0), True, None, began)
        return True

    async def _do_keep(self, model: str, reason: str) -> bool:
        """Renew the upstream's keep-alive (Ollama: a /v1 request may have reset its timer; same runner options,
        so no reload); a no-op on upstreams without one."""
        now = self._resident_bytes()
        t0 = time.perf_counter()
        ok, error = True, None
        try:
            await self.backend.keep(model, self.settings.plan_keep_alive)
        except BackendError as exc:
            ok, error = False, str(exc)
        self._record(model, "keep", reason, now, now, _ms(t0), ok, error)
        return ok

    async def apply_plan(self, forecasts: pd.DataFrame, made_at: float | None = None) -> list[PlanAction]:
        """Take the forecaster's latest word (its frame or the forecasts table) and fill from it."""
        if forecasts is None or forecasts.empty:
            raise PrewarmError("no forecasts: refusing to plan on nothing")
        if "expected_requests" not in forecasts.columns:
            raise PrewarmError("forecasts without expected_requests: the planner reads each model's expected "
                               "requests per window (retrain with this version)")
        now = self.clock()
        self.prune()
        self.state.set_forecast(canonical_rates(horizon_rates(forecasts, now), self.canonical),
                                horizon_span(forecasts, now))
        self.forecast_at = made_at if made_at is not None else now
        self.metrics.forecast_made(self.forecast_at)
        await self.tracker.refresh()
        await self.refresh_budget()
        before = set(self._resident())
        actions = await self.fill()
        for m in sorted(before & set(self._resident())):
            async with self._op_lock:
                if m not in self._resident():
                    continue
                reason = "worth its place: " + self._explain(m)
                await self._do_keep(m, reason)
                actions.append(PlanAction(m, "keep", reason, self._resident_bytes()))
        self.planned_resident = {a.model for a in actions if a.action in ("keep", "load")}
        self.last_plan, self.last_plan_at = actions, now
        return actions

    def fill_soon(self) -> None:
        """Start a fill in the background unless one is running (a fill is a favour: a request never waits)."""
        if self._filling or not self.backend.resident_known:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._fill_quietly())
        self._hints.add(task)
        task.add_done_callback(self._hints.discard)

    async def _fill_quietly(self) -> None:
        try:
            await self.fill()
        except Exception:  # a fill is a favour: its failure must never reach a request
            log.exception("prewarm fill failed")

    async def fill(self) -> list[PlanAction]:
        """Take the planning state's steps until none pays, one at a time under the operation lock (the loader
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
        for _ in range(len(self._resident()) + len(self.sizes) + len(self.pins) + 1):
            async with self._op_lock:
                step = self.state.step(self.resident_candidates(), self.absent_candidates(),
                                       self._budget_bytes() - self._resident_bytes(), self.clock())
                if step is None or not await self._take(step, actions):
                    break
        return actions

    async def _take(self, step: Step, actions: list[PlanAction]) -> bool:
        """Carry out one step (its unloads, then its load); False when any of it failed."""
        victims = [str(v) for v in step.unload]
        reasons = {v: step.why if step.load is None else self._room_reason(v, str(step.load)) for v in victims}
        self._evicting.update(victims)
        try:
            for v in victims:
                unloaded = (await self._do_unload(v, reasons[v]) if step.load is None
                            else await self._unload_for_room(v, reasons[v]))
                if not unloaded:
                    return False
                actions.append(PlanAction(v, "unload", reasons[v], self._resident_bytes()))
        finally:
            self._evicting.difference_update(victims)
        if step.load is None:
            return True
        m = str(step.load)
        if not await self._do_load(m, step.why):
            return False
        actions.append(PlanAction(m, "load", step.why, self._resident_bytes()))
        return True

    # ------------------------------------------------------------------ admin

    async def load_now(self, model: str, reason: str = "admin request") -> dict[str, Any]:
        m = self.canonical(model)
        async with self._op_lock:
            if self.tracker.is_resident(m):
                return {"model": m, "action": "load", "ok": True, "note": "already resident"}
            if self.budget is None:
                await self.refresh_budget()
            if self.size_of(m) > self._budget_bytes():
                raise PrewarmError(f"{m} needs {self.size_of(m)} bytes, more than the whole "
                                   f"{self._budget_bytes()}-byte budget")
            evictions = self.victims_for(m)
            if evictions is None:
                raise PrewarmError(f"no room for {m}: models in flight or pinned hold the budget")
            for v in evictions:
                await self._unload_for_room(v, self._room_reason(v, m))
            ok = await self._do_load(m, reason)
        self.planned_resident.add(m)
        if ok:
            self._hold(m)
        return {"model": m, "action": "load", "ok": ok, "evicted": evictions,
                "error": None if ok else self.last_actions[-1]["error"]}

    # ------------------------------------------------------------------ presence hints

    def _hold(self, model: str) -> None:
        self._kept_out_until.pop(model, None)
        self._held_until[model] = self.clock() + self.settings.manual_hold

    def _kept_out(self, model: str) -> bool:
        """Unloaded by hand within manual_hold: the planner does not prefetch it back (a request, a hint or an
        admin load still brings it)."""
        return self._until(self._kept_out_until, model)

    def _held(self, model: str) -> bool:
        return self._until(self._held_until, model)

    def _until(self, deadlines: dict[str, float], model: str) -> bool:
        """Whether ``model``'s deadline in ``deadlines`` is still ahead (a passed one is dropped)."""
        until = deadlines.get(model)
        if until is None:
            return False
        if until <= self.clock():
            del deadlines[model]
            return False
        return True

    async def usual_models(self, user: str, limit: int = 2) -> list[str]:
        """The models that make up at least a quarter of `user`'s answered requests over the last week, most
        used first (at most `limit`): what a user who shows up is likely to ask for next."""
        if self.store is None:
            return []
        await self.store.flush()  # the user's latest requests count: they may still be in the writer's queue
        _, rows = await self.store.query(USUAL_MODELS_SQL, [user])
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
                self._hold(m)
                out["resident"].append(m)
                continue
            if not await self._known_model(m):
                out["skipped"].append({"model": m, "reason": "the upstream does not serve it"})
                continue
            try:
                result = await self.load_now(m, reason=f"hint for user {user}" if user else "hint")
            except PrewarmError as exc:
                out["skipped"].append({"model": m, "reason": str(exc)})
                continue
            (out["loaded"] if result["ok"] else out["skipped"]).append(
                m if result["ok"] else {"model": m, "reason": result["error"]})
        return out

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
        task = asyncio.get_running_loop().create_task(self._presence_hint(user))
        self._hints.add(task)
        task.add_done_callback(self._hints.discard)

    async def _presence_hint(self, user: str) -> None:
        try:
            await self.hint(user)
        except Exception:  # a hint is a favour: its failure must never reach a request
            log.exception("presence hint for %s failed", user)

    async def unload_now(self, model: str, reason: str = "admin request") -> dict[str, Any]:
        m = self.canonical(model)
        if self._in_flight().get(m):
            raise PrewarmError(f"{m} has requests in flight; it is not evicted")
        async with self._op_lock:
            ok = await self._do_unload(m, reason)
        if ok:
            self._held_until.pop(m, None)
            self._kept_out_until[m] = self.clock() + self.settings.manual_hold
        return {"model": m, "action": "unload", "ok": ok, "error": None if ok else self.last_actions[-1]["error"]}

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

    def planning_status(self, limit: int = 50) -> dict[str, Any]:
        """The planning state as a person checks it: vram_cost, and per model (resident first, then the absent
        ones with a rate, highest worth first) its rate, where the rate comes from, and its worth."""
        now = self.clock()
        rows = []
        for c, resident in [(c, True) for c in self.resident_candidates(holding=False)] + [
                (c, False) for c in (self.absent_candidates() if self.budget is not None else [])]:
            rate = self.state.rate(c.key, now)
            if not resident and rate <= 0:
                continue
            rows.append({"model": c.key, "resident": resident, "requests_per_hour": round(rate * 3600, 4),
                         "rate_from": "forecast" if c.key in self.state.forecast else "recent requests",
                         "load_seconds": c.load_seconds, "size_bytes": c.size_bytes,
                         "worth": round(self.state.worth(c, now), 3)})
        rows.sort(key=lambda r: (not r["resident"], -r["worth"], r["model"]))
        return {"vram_cost": self.state.vram_cost, "half_life_s": self.state.half_life_s, "models": rows[:limit]}

    def status(self) -> dict[str, Any]:
        resident = self._resident()
        return {
            "upstream": self.backend.base_url,
            "upstream_kind": self.backend.kind,
            "budget": None if self.budget is None else {
                "bytes": self.budget.bytes, "source": self.budget.source, "detail": self.budget.detail},
            "resident": [{"model": m, "size_bytes": b, "reserved": m in self._reserved and m not in self.tracker.resident}
                         for m, b in sorted(resident.items())],
            "resident_bytes": sum(resident.values()),
            "planning": self.planning_status(),
            "in_flight": self._in_flight(),
            "pins": sorted(self.pins),
            "planned_resident": sorted(self.planned_resident),
            "last_plan_at": self.last_plan_at,
            "last_plan": [{"model": a.model, "action": a.action, "reason": a.reason,
                           "resident_bytes_after": a.resident_bytes_after} for a in self.last_plan],
            "last_actions": [dict(r, ts=r["ts"].isoformat()) for r in self.last_actions],
        }


def _unloads(body: dict[str, Any]) -> bool:
    """An Ollama body asking to unload its model now (keep_alive 0, as `ollama stop` sends): passed as it is."""
    value = body.get("keep_alive")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return False
    try:
        return parse_duration(value) == 0
    except ValueError:
        return False


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


LATEST_FORECASTS_SQL = """
SELECT model, epoch(window_start) AS window_start, epoch(window_end) AS window_end, expected_requests, p_any,
       epoch(made_at) AS made_at
FROM forecasts WHERE made_at = (SELECT max(made_at) FROM forecasts)
"""


def run_plan_command(args: argparse.Namespace) -> int:
    """`prewarm plan [--apply]`: the plan for the latest forecasts, as a table; --apply carries it out."""
    from prewarm.config import load_settings

    settings = load_settings(
        args.config,
        {"db": args.db, "upstream": args.upstream, "vram_budget": args.vram_budget, "catalog": args.catalog},
    )
    return asyncio.run(_plan_command(settings, args.apply))


async def _plan_command(settings: Settings, apply: bool) -> int:
    from prewarm.backends.registry import make_backend
    from prewarm.commands.sql import format_table
    from prewarm.errors import CommandError
    from prewarm.store.discovery import pid_alive, read_service_file
    from prewarm.store.reader import ReadError, read_query

    try:
        columns, rows = read_query(settings, LATEST_FORECASTS_SQL)
        # with --apply the store is opened and start() reads the log itself
        recent = [] if apply else read_query(settings, recent_requests_sql(time.time(),
                                                                            PlanningState().half_life_s))[1]
    except ReadError as exc:
        raise CommandError(str(exc)) from None
    forecasts = pd.DataFrame(rows, columns=columns)
    if forecasts.empty:
        raise CommandError(f"no forecasts in {settings.db}: run `prewarm train` and `prewarm forecast` first")
    made_at = float(forecasts["made_at"].max())
    store = None
    if apply:
        service = read_service_file(settings.db)
        if service is not None and pid_alive(service.pid):
            raise CommandError(
                f"prewarm serve (pid {service.pid}) runs on {settings.db} and applies plans itself every window; "
                "use its POST /prewarm/load and /prewarm/unload, or stop it first"
            )
        from prewarm.store.writer import Store

        store = Store(settings.db, settings)
        await asyncio.to_thread(store.open)
    catalog = load_catalog(settings.catalog)
    pw = Prewarmer(settings, make_backend(settings, catalog), store, catalog=catalog)
    try:
        try:
            await pw.start(start_tracker=False)
        except BackendError as exc:
            raise CommandError(str(exc)) from None
        if store is None:
            pw.seed_recent((str(m), float(t)) for m, t in recent)
        if apply:
            actions = await pw.apply_plan(forecasts, made_at)
        else:
            now = pw.clock()
            pw.state.set_forecast(canonical_rates(horizon_rates(forecasts, now), pw.canonical),
                                  horizon_span(forecasts, now))
            actions = plan(pw.state, pw.resident_candidates(), pw.absent_candidates(), pw._budget_bytes(), now)
    finally:
        await pw.stop(stop_tracker=False)
        if store is not None:
            await store.close()
    assert pw.budget is not None
    print(f"budget {pw.budget.bytes / 1e9:.2f} GB ({pw.budget.source}: {pw.budget.detail}); "
          f"vram_cost {pw.state.vram_cost:g} s per GB-hour; "
          f"forecast made {datetime.fromtimestamp(made_at, UTC).isoformat(timespec='seconds')}")
    table_rows = [[a.action, a.model, f"{a.resident_bytes_after / 1e9:.2f}", a.reason] for a in actions]
    print(format_table(["action", "model", "resident_gb_after", "reason"], table_rows), end="")
    if apply:
        failed = [r for r in pw.last_actions if not r["ok"]]
        for r in failed:
            print(f"failed: {r['action']} {r['model']}: {r['error']}")
        return 1 if failed else 0
    return 0
