"""Shared set-up for tests of the proxy app on its own (no prewarmer, no upstream to poll)."""

from __future__ import annotations

from prewarm.prewarmer.residency import ResidencyTracker


async def _nothing_resident() -> dict[str, int]:
    return {}


def idle_tracker() -> ResidencyTracker:
    """Hooks for a proxy whose upstream reports nothing resident: the admin and SQL routes need no upstream."""
    return ResidencyTracker(_nothing_resident, 60)
