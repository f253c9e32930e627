"""The replay figure: cold-start rate and VRAM-GB-hours per policy against budget, and the forecast policy's residency."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from prewarm.sim.engine import ReplayResult
from prewarm.sim.report import SUGGEST_POINTS, SUGGEST_STEP, label, suggested_budget
from prewarm.sim.trace import Trace

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MAX_TIMELINE_MODELS = 40


def plot_results(results: Sequence[ReplayResult], trace: Trace, path: str) -> None:
    """Four panels per budget sweep (cold-start rate, added wait, GB-hours against budget, and the Pareto view:
    cold-start rate against GB-hours, one point per policy and budget, sweeps joined), then the timeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label(r) for r in results))
    timeline = next((r for r in reversed(results) if r.timeline), None)
    rows = 3 if timeline is not None else 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 4.8 * rows), squeeze=False)
    ax_rate, ax_wait = axes[0]
    ax_mem, ax_pareto = axes[1]
    # tab10 while it lasts: tab20's neighbours are light and dark shades of one hue, too alike for two policies.
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    ncolors = cmap.N
    for k, name in enumerate(labels):
        rs = sorted((r for r in results if label(r) == name), key=lambda r: r.budget)
        xs = [r.budget / 1e9 for r in rs]
        style = {"marker": "o", "label": name, "color": cmap(k % ncolors), "lw": 2.2 if name.startswith("forecast") else 1.2}
        ax_rate.plot(xs, [100 * r.cold_start_rate for r in rs], **style)
        ax_wait.plot(xs, [r.mean_added_latency_s for r in rs], **style)
        ax_mem.plot(xs, [r.vram_gb_hours for r in rs], **style)
    budgets = sorted({r.budget for r in results})
    for b, marker in zip(budgets, "osD^v<>ph*", strict=False):
        for policy in dict.fromkeys(r.policy for r in results):
            rs = sorted((r for r in results if r.policy == policy and r.budget == b), key=lambda r: r.vram_gb_hours)
            k = labels.index(label(rs[0])) if rs else 0
            ax_pareto.plot([r.vram_gb_hours for r in rs], [100 * r.cold_start_rate for r in rs], marker=marker,
                           color=cmap(k % ncolors), lw=1, label=f"{policy} @ {b / 1e9:g} GB")
    ax_rate.set(xlabel="VRAM budget (GB)", ylabel="cold-start rate (%)", title="Cold starts (scored span)")
    ax_wait.set(xlabel="VRAM budget (GB)", ylabel="mean added wait per request (s)", title="Added wait")
    ax_mem.set(xlabel="VRAM budget (GB)", ylabel="VRAM GB-hours", title="VRAM held (scored span)")
    ax_pareto.set(xlabel="VRAM GB-hours held", ylabel="cold-start rate (%)",
                  title="Cold starts for the VRAM held (lower left is better)")
    suggested = suggested_budget(results)
    if suggested is not None:
        for ax in (ax_rate, ax_wait, ax_mem):
            ax.axvline(suggested / 1e9, color="0.3", ls="--", lw=1,
                       label=f"suggested budget {suggested / 1e9:g} GB (< {SUGGEST_POINTS:g} pt per "
                             f"+{100 * SUGGEST_STEP:g} % beyond)")
    for ax in (ax_rate, ax_wait, ax_mem, ax_pareto):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    if timeline is not None:
        gs = axes[2][0].get_gridspec()
        for ax in axes[2]:
            ax.remove()
        ax_tl = fig.add_subplot(gs[2, :])
        _timeline(ax_tl, timeline, trace)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _timeline(ax: Axes, result: ReplayResult, trace: Trace) -> None:
    """Resident intervals per model (most requested models only, so the chart stays legible)."""
    import numpy as np
    from matplotlib.patches import Patch

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
    cold = np.asarray(result.request_cold, dtype=np.bool_) if result.request_cold else np.zeros(len(trace), bool)
    for kind, mask, color, size in (("warm request", ~cold, "black", 3), ("cold start", cold, "tab:red", 7)):
        for k, m in enumerate(shown):
            sel = scored & (trace.mid == m) & mask
            ax.plot((trace.ts[sel] - t0) / 3600, np.full(int(sel.sum()), row[m]), "|", color=color, ms=size,
                    mew=1.4, label=kind if k == 0 else None)
    handles = ax.get_legend_handles_labels()[0]
    ax.legend(handles=[Patch(color="tab:blue", label="resident"), *handles], fontsize=7, loc="upper right")
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([trace.names[m][:24] for m in shown], fontsize=6)
    ax.set(xlabel="hours into the scored span",
           title=f"{result.policy} @ {result.budget / 1e9:g} GB: resident models (bars), warm requests and cold "
                 "starts (ticks), "
                 f"top {len(shown)} models")
