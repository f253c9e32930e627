"""The runner options (num_ctx, num_gpu, ...) traffic uses per model, so a planned load matches them.

Ollama reloads a model whose request asks for other runner options than the
loaded runner's; a prefetch with the wrong ones would be a load wasted and a
cold start still to come. The most common options per model are what a load
uses, kept current as requests arrive (on the request path, so no rescan).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from prewarm.backends.ollama import runner_options


class OptionsTally:
    def __init__(self, load_options: dict[str, dict[str, Any]]) -> None:
        self.load_options = load_options  # the backend's: model -> the options its loads send
        self._counts: dict[str, Counter[tuple[tuple[str, Any], ...]]] = {}
        self._best: dict[str, tuple[tuple[str, Any], ...]] = {}

    def count(self, model: str, body: dict[str, Any]) -> None:
        raw = body.get("options")
        key = tuple(sorted(runner_options(raw).items())) if raw else ()
        tally = self._counts.setdefault(model, Counter())
        tally[key] += 1
        # The best changes only when another key overtakes it; a tie keeps the earlier one, as
        # Counter.most_common does.
        best = self._best.get(model)
        if best is None or (key != best and tally[key] > tally[best]):
            self._best[model] = key
            self.load_options[model] = dict(key)

    def models(self) -> set[str]:
        return set(self._counts)

    def forget(self, models: Iterable[str]) -> None:
        for m in models:
            self._counts.pop(m, None)
            self._best.pop(m, None)
            self.load_options.pop(m, None)
