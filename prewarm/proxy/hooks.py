"""The seam between the proxy and the parts that act on the GPU.

The proxy forwards and logs; whether a model is resident, what must be evicted
before a request may trigger a load, and which keep_alive a request should carry
are decided elsewhere (the prewarmer). The proxy only calls these hooks, so it
works the same with a plain residency tracker (no prewarming) or the full prewarmer.
"""

from __future__ import annotations

from typing import Any, Protocol

from prewarm.records import RequestEvent


class ProxyHooks(Protocol):
    def canonical(self, model: str) -> str:
        """The upstream kind's own name for `model` (Ollama: "llama3" is "llama3:latest"). The proxy calls it
        once, where a request enters: every other part, and the request log, sees only canonical names."""

    def user_seen(self, user: str) -> None:
        """A known user listed or inspected models (Open WebUI does on login and on opening a chat): have their
        usual models ready. Must return at once; any loading happens in the background."""

    def upstream_problem(self) -> str | None:
        """Why the upstream cannot be used now (it does not answer), else None; for /prewarm/health. No I/O."""

    def is_resident(self, model: str) -> bool | None:
        """Whether the upstream holds the model loaded and ready now (None: not known); a model still loading
        is not, since a request for it waits for the load. The proxy's `cold` flag. Must not do I/O."""

    async def before_forward(self, model: str, body: dict[str, Any], endpoint: str) -> dict[str, Any] | None:
        """Called before a request for `model` is forwarded.

        May wait (making room under the budget) and may return a replacement body
        (e.g. with keep_alive set); None forwards the client's bytes untouched.
        """

    def upstream_for(self, model: str) -> str | None:
        """Base URL of the server that serves `model` (vLLM runs one per model); None: the configured upstream."""

    def model_servers(self) -> dict[str, tuple[str, int]] | None:
        """model -> (its server's base URL, its size in bytes) where each model has its own server (vLLM,
        SGLang), so that no single upstream can list them all; None where the upstream lists its models.
        Must not do I/O."""

    def request_started(self, model: str) -> None:
        """A request for `model` is in flight: it must not be evicted until finished."""

    def upstream_answered(self, model: str) -> None:
        """The upstream began its answer (status line) to a request for `model`: any load that request waited
        for is done. Must return at once."""

    def request_finished(self, model: str, event: RequestEvent) -> None:
        """The request is done (any status); `event` is the row about to be logged."""
