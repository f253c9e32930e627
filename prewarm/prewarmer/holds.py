"""A person's (or a hint's) word on one model, for ``manual_hold`` seconds: held in, or kept out.

A manual load or a hint holds its model so the next plan does not undo it before
the user's first request; a manual unload keeps prefetches off the model for as
long, so the planner does not bring back what a person just sent away (a
request, a hint or an admin load still brings it).
"""

from __future__ import annotations

from collections.abc import Callable


class Holds:
    def __init__(self, clock: Callable[[], float], seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self._held_until: dict[str, float] = {}
        self._kept_out_until: dict[str, float] = {}

    def hold(self, model: str) -> None:
        self._kept_out_until.pop(model, None)
        self._held_until[model] = self.clock() + self.seconds

    def keep_out(self, model: str) -> None:
        self._held_until.pop(model, None)
        self._kept_out_until[model] = self.clock() + self.seconds

    def wanted(self, model: str) -> None:
        """A request came for `model`: a keep-out ends."""
        self._kept_out_until.pop(model, None)

    def held(self, model: str) -> bool:
        return self._ahead(self._held_until, model)

    def kept_out(self, model: str) -> bool:
        return self._ahead(self._kept_out_until, model)

    def _ahead(self, deadlines: dict[str, float], model: str) -> bool:
        """Whether ``model``'s deadline is still ahead (a passed one is dropped)."""
        until = deadlines.get(model)
        if until is None:
            return False
        if until <= self.clock():
            del deadlines[model]
            return False
        return True
