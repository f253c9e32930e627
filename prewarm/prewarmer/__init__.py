"""The prewarmer: the only part that changes the upstream (DESIGN.md, Parts).

`Prewarmer` implements the proxy's `ProxyHooks` and carries out the planning
state's decisions; `status` (in `report`) renders it for the admin API and the status page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prewarm._faces import lazy_face

if TYPE_CHECKING:
    from prewarm.prewarmer.core import Prewarmer
    from prewarm.prewarmer.metrics import PrewarmMetrics
    from prewarm.prewarmer.report import planning_status, status
    from prewarm.prewarmer.residency import ResidencyTracker

_EXPORTS = {
    "Prewarmer": "prewarm.prewarmer.core",
    "PrewarmMetrics": "prewarm.prewarmer.metrics",
    "ResidencyTracker": "prewarm.prewarmer.residency",
    "planning_status": "prewarm.prewarmer.report",
    "status": "prewarm.prewarmer.report",
}
__all__ = ["PrewarmMetrics", "Prewarmer", "ResidencyTracker", "planning_status", "status"]
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
