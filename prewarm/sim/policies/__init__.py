"""Replay policies: what people run (Ollama's keep-alive, LRU, static top-N), the published ones (the hybrid
histogram, greedy-dual, decayed LFU), this project's forecast, and the clairvoyant references.

The names live here, without importing any policy, so the CLI can list them cheaply; the classes are
imported on first use (prewarm._faces).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prewarm._faces import lazy_face

if TYPE_CHECKING:
    from prewarm.sim.policies.base import Policy
    from prewarm.sim.policies.forecast import ForecastPerfectPolicy, ForecastPolicy, ForecastSchedule, WindowForecast
    from prewarm.sim.policies.gdsf import GDSFLifetimePolicy, GDSFPolicy
    from prewarm.sim.policies.histogram import HistogramPolicy, IdleHistogram
    from prewarm.sim.policies.lfu import LFUPolicy
    from prewarm.sim.policies.lru import LRUPolicy, RouterLRUPolicy
    from prewarm.sim.policies.ollama import OllamaPolicy
    from prewarm.sim.policies.oracle import OraclePolicy, next_request_times
    from prewarm.sim.policies.topn import TopNPolicy

BASELINES = ("ollama", "lru", "topn", "histogram", "gdsf", "gdsf-lifetime", "lfu")
POLICY_NAMES = (*BASELINES, "forecast", "forecast-perfect", "oracle")
# The forecast policy with a part of its forecaster taken out: run only when asked for (each trains its own).
ABLATIONS = ("forecast-recency", "forecast-nousers", "forecast-noseasonal")
# llama.cpp's router evicting on its own (--models-max K, least recently used by count): asked for by name,
# since K is the router's setting, not a budget (bench/live_replay.py compares it with the live router).
OPT_IN = ("router",)

_EXPORTS = {
    "ForecastPerfectPolicy": "prewarm.sim.policies.forecast",
    "ForecastPolicy": "prewarm.sim.policies.forecast",
    "ForecastSchedule": "prewarm.sim.policies.forecast",
    "GDSFLifetimePolicy": "prewarm.sim.policies.gdsf",
    "GDSFPolicy": "prewarm.sim.policies.gdsf",
    "HistogramPolicy": "prewarm.sim.policies.histogram",
    "IdleHistogram": "prewarm.sim.policies.histogram",
    "LFUPolicy": "prewarm.sim.policies.lfu",
    "LRUPolicy": "prewarm.sim.policies.lru",
    "OllamaPolicy": "prewarm.sim.policies.ollama",
    "OraclePolicy": "prewarm.sim.policies.oracle",
    "Policy": "prewarm.sim.policies.base",
    "RouterLRUPolicy": "prewarm.sim.policies.lru",
    "TopNPolicy": "prewarm.sim.policies.topn",
    "WindowForecast": "prewarm.sim.policies.forecast",
    "next_request_times": "prewarm.sim.policies.oracle",
}
__all__ = [
    "ABLATIONS",
    "BASELINES",
    "OPT_IN",
    "POLICY_NAMES",
    "ForecastPerfectPolicy",
    "ForecastPolicy",
    "ForecastSchedule",
    "GDSFLifetimePolicy",
    "GDSFPolicy",
    "HistogramPolicy",
    "IdleHistogram",
    "LFUPolicy",
    "LRUPolicy",
    "OllamaPolicy",
    "OraclePolicy",
    "Policy",
    "RouterLRUPolicy",
    "TopNPolicy",
    "WindowForecast",
    "next_request_times",
]
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
