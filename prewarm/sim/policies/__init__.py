"""Replay policies: what people run (Ollama's keep-alive, LRU, static top-N), the published ones (the hybrid
histogram, greedy-dual, decayed LFU), this project's forecast, and the clairvoyant references.

The names live here, without importing any policy, so the CLI can list them cheaply.
"""

BASELINES = ("ollama", "lru", "topn", "histogram", "gdsf", "gdsf-lifetime", "lfu")
POLICY_NAMES = (*BASELINES, "forecast", "forecast-perfect", "oracle")
# The forecast policy with a part of its forecaster taken out: run only when asked for (each trains its own).
ABLATIONS = ("forecast-recency", "forecast-nousers", "forecast-noseasonal")
# llama.cpp's router evicting on its own (--models-max K, least recently used by count): asked for by name,
# since K is the router's setting, not a budget (bench/live_replay.py compares it with the live router).
OPT_IN = ("router",)

__all__ = ["ABLATIONS", "BASELINES", "OPT_IN", "POLICY_NAMES"]
