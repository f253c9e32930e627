"""The replay simulator: a trace, a simulated GPU with one serial loader, the policies, and the report.

`run_replays` runs policies over a trace under budgets and returns a `ReplayResult` each;
the `forecast` policy drives the same planning state (`prewarm.planner`) as `serve`.
Nothing here imports the proxy, the prewarmer or the admin routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prewarm._faces import lazy_face

if TYPE_CHECKING:
    from prewarm.sim.device import SimGPU
    from prewarm.sim.engine import ReplayResult, Span, replay, run_requests
    from prewarm.sim.report import suggested_budget, to_table
    from prewarm.sim.run import ABLATIONS, BASELINES, POLICY_NAMES, ForecastOptions, ModelCosts, run_replays
    from prewarm.sim.trace import Trace, frame_to_trace, read_trace

_EXPORTS = {
    "ABLATIONS": "prewarm.sim.run",
    "BASELINES": "prewarm.sim.run",
    "ForecastOptions": "prewarm.sim.run",
    "ModelCosts": "prewarm.sim.run",
    "POLICY_NAMES": "prewarm.sim.run",
    "ReplayResult": "prewarm.sim.engine",
    "SimGPU": "prewarm.sim.device",
    "Span": "prewarm.sim.engine",
    "Trace": "prewarm.sim.trace",
    "frame_to_trace": "prewarm.sim.trace",
    "read_trace": "prewarm.sim.trace",
    "replay": "prewarm.sim.engine",
    "run_replays": "prewarm.sim.run",
    "run_requests": "prewarm.sim.engine",
    "suggested_budget": "prewarm.sim.report",
    "to_table": "prewarm.sim.report",
}
__all__ = [
    "ABLATIONS",
    "BASELINES",
    "ForecastOptions",
    "ModelCosts",
    "POLICY_NAMES",
    "ReplayResult",
    "SimGPU",
    "Span",
    "Trace",
    "frame_to_trace",
    "read_trace",
    "replay",
    "run_replays",
    "run_requests",
    "suggested_budget",
    "to_table",
]
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
