"""The replay figure: cold-start rate and VRAM-GB-hours per policy against budget, and the forecast policy's residency."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from prewarm.sim.engine import ReplayResult
from prewarm.sim.trace import Trace

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MAX_TIMELINE_MODELS = 40


def plot_results(results: Sequence[ReplayResult], trace: Trace, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(dict.fromkeys(r.policy for r in results))
    timeline = next((r for r in reversed(results) if r.timeline), None)
    rows = 2 if timeline is not None else 1
    fig, axes = plt.subplots(rows, 2, figsize=(13, 4.5 * rows), squeeze=False)
    ax_rate, ax_mem = axes[0]
    for p in policies:
        rs = sorted((r for r in results if r.policy == p), key=lambda r: r.budget)
        xs = [r.budget / 1e9 for r in rs]
        ax_rate.plot(xs, [100 * r.cold_start_rate for r in rs], marker="o", label=p)
        ax_mem.plot(xs, [r.vram_gb_hours for r in rs], marker="o", label=p)
    ax_rate.set(xlabel="VRAM budget (GB)", ylabel="cold-start rate (%)", title="Cold starts (scored span)")
    ax_mem.set(xlabel="VRAM budget (GB)", ylabel="VRAM GB-hours", title="VRAM held (scored span)")
    ax_rate.legend()
    ax_rate.grid(alpha=0.3)
    ax_mem.grid(alpha=0.3)
    if timeline is not None:
        gs = axes[1][0].get_gridspec()
        for ax in axes[1]:
            ax.remove()
        ax_tl = fig.add_subplot(gs[1, :])
        _timeline(ax_tl, timeline, trace)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _timeline(ax: Axes, result: ReplayResult, trace: Trace) -> None:
    """Resident intervals per model (most requested models only, so the chart stays legible)."""
    import numpy as np

    counts = np.bincount(trace.mid, minlength=trace.n_models)
    shown = [int(m) for m in np.argsort(-counts, kind="stable")[:MAX_TIMELINE_MODELS]]
    row = {m: k for k, m in enumerate(shown)}
    t0 = result.scored_from
    for iv in result.timeline:
        if iv.model in row and iv.end > t0:
            start = max(iv.start, t0)
            ax.broken_barh([((start - t0) / 3600, (iv.end - start) / 3600)], (row[iv.model] - 0.4, 0.8),
                           color="tab:blue")
    scored = (trace.ts >= t0)
    for m in shown:
        sel = scored & (trace.mid == m)
        ax.plot((trace.ts[sel] - t0) / 3600, np.full(int(sel.sum()), row[m]), "|", color="tab:red", ms=4, alpha=0.4)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([trace.names[m][:24] for m in shown], fontsize=6)
    ax.set(xlabel="hours into the scored span",
           title=f"{result.policy} @ {result.budget / 1e9:g} GB: resident models (bars) and requests (ticks), "
                 f"top {len(shown)} models")
