"""VRAM readings through NVML and the budget the planner may fill.

The budget must never be guessed silently: every reading says where it came from
(``nvml``, ``config`` or ``upstream``) and why. NVML sees the whole GPU, including
memory held by processes that are not the managed upstream (another user's job, a
desktop session); that memory is not ours to plan with, so it is taken off the
budget. Without an NVIDIA driver (this project's CI, the emulator demo, a Mac) the
monitor says so once and falls back to the configured budget, else to the total
the upstream itself reports.

NVML is reached through a module object (``pynvml`` by default) passed to
:class:`GpuMonitor`, so the arithmetic can be tested with a small stand-in object
that has the same function names where the real C library cannot be loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prewarm.config import ConfigError, Settings
from prewarm.units import format_size

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceVram:
    index: int
    name: str
    total: int
    used: int
    free: int
    foreign: int  # bytes held by processes other than the managed upstream


@dataclass(frozen=True, slots=True)
class VramReading:
    devices: tuple[DeviceVram, ...]

    @property
    def total(self) -> int:
        return sum(d.total for d in self.devices)

    @property
    def used(self) -> int:
        return sum(d.used for d in self.devices)

    @property
    def free(self) -> int:
        return sum(d.free for d in self.devices)

    @property
    def foreign(self) -> int:
        return sum(d.foreign for d in self.devices)


@dataclass(frozen=True, slots=True)
class Budget:
    bytes: int
    source: str  # "nvml" | "config" | "upstream"
    detail: str
    reading: VramReading | None = field(default=None)


def _load_pynvml() -> Any | None:
    """The pynvml module (typed Any: tests hand GpuMonitor a fake with the same functions), or None."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


class GpuMonitor:
    """Reads VRAM and computes the budget; keeps working (and says so) when NVML is absent or fails."""

    def __init__(self, settings: Settings, nvml: Any | None = None, upstream_pids: Iterable[int] | None = None):
        self.settings = settings
        self._nvml: Any = nvml if nvml is not None else _load_pynvml()
        self.upstream_pids: set[int] | None = set(upstream_pids) if upstream_pids is not None else None
        self._initialised = False
        self._unavailable_reason: str | None = None
        self._said_unavailable = False
        self._ever_started = False
        self._never_started = False  # NVML failed at the first start: no driver, and one will not appear mid-run

    @property
    def available(self) -> bool:
        """Whether the last attempt to use NVML worked (tries to initialise on first use)."""
        self._ensure_init()
        return self._unavailable_reason is None

    def _ensure_init(self) -> None:
        if self._initialised or self._never_started:
            return
        if self._nvml is None:
            self._note_unavailable("the pynvml module is not installed")
            return
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            self._never_started = not self._ever_started
            self._note_unavailable(f"NVML could not start ({exc}); no NVIDIA driver on this machine?")
            return
        self._initialised = True
        self._ever_started = True
        if self._said_unavailable:
            log.warning("gpu: NVML works again; the budget comes from NVML")
        self._unavailable_reason = None
        self._said_unavailable = False

    def _note_unavailable(self, reason: str) -> None:
        changed = reason != self._unavailable_reason
        self._unavailable_reason = reason
        if not self._said_unavailable or changed:
            log.warning("gpu: %s; the VRAM budget comes from %s", reason, self._fallback_words())
            self._said_unavailable = True

    def _fallback_words(self) -> str:
        if self.settings.vram_budget is not None:
            return f"the configured vram_budget ({format_size(self.settings.vram_budget)})"
        return "the upstream's own reported VRAM total"

    def read(self, upstream_resident_bytes: int = 0) -> VramReading | None:
        """Per-device VRAM now, or None when NVML is not usable (the reason is logged once).

        ``upstream_resident_bytes`` is what the upstream says its models hold; it is
        used to tell the upstream's memory from other processes' when the
        upstream's process ids are not known.
        """
        self._ensure_init()
        if not self._initialised:
            return None
        nv = self._nvml
        try:
            count = nv.nvmlDeviceGetCount()
            indices = range(count) if self.settings.gpu_index is None else [self.settings.gpu_index]
            devices = []
            for i in indices:
                if not 0 <= i < count:
                    raise ConfigError(f"gpu_index {i} does not exist: NVML sees {count} device(s)")
                h = nv.nvmlDeviceGetHandleByIndex(i)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                name = nv.nvmlDeviceGetName(h)
                if isinstance(name, bytes):
                    name = name.decode()
                procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
                foreign = self._foreign_bytes(procs) if self.upstream_pids is not None else None
                devices.append(
                    DeviceVram(
                        index=i, name=str(name), total=int(mem.total), used=int(mem.used), free=int(mem.free),
                        foreign=foreign if foreign is not None else 0,
                    )
                )
        except nv.NVMLError as exc:
            self._initialised = False
            self._note_unavailable(f"NVML failed while reading ({exc})")
            return None
        if self.upstream_pids is None:
            devices = _spread_foreign(devices, upstream_resident_bytes)
        return VramReading(tuple(devices))

    def _foreign_bytes(self, procs: Iterable[Any]) -> int:
        assert self.upstream_pids is not None
        return sum(int(p.usedGpuMemory or 0) for p in procs if p.pid not in self.upstream_pids)

    def budget(self, upstream_resident_bytes: int = 0, upstream_total: int | None = None) -> Budget:
        """The bytes the planner may fill, and where that number comes from.

        With NVML: min(configured vram_budget, total - vram_reserve - foreign usage).
        Without: the configured budget, else ``upstream_total`` (the upstream's own
        report, e.g. the emulator's VRAM or the sum of /api/ps sizes). Raises
        ConfigError when none of these exists, rather than inventing a number.
        """
        reading = self.read(upstream_resident_bytes)
        configured = self.settings.vram_budget
        if reading is not None:
            room = max(0, reading.total - self.settings.vram_reserve - reading.foreign)
            words = (
                f"NVML total {format_size(reading.total)} - reserve {format_size(self.settings.vram_reserve)}"
                f" - other processes {format_size(reading.foreign)} = {format_size(room)}"
            )
            if configured is not None and configured <= room:
                return Budget(configured, "config", f"configured vram_budget (within {words})", reading)
            note = "" if configured is None else f" (< configured {format_size(configured)})"
            return Budget(room, "nvml", words + note, reading)
        reason = self._unavailable_reason or "NVML unavailable"
        if configured is not None:
            return Budget(configured, "config", f"configured vram_budget; {reason}")
        if upstream_total is not None and upstream_total > 0:
            return Budget(upstream_total, "upstream", f"the upstream's reported VRAM; {reason}")
        raise ConfigError(
            f"no VRAM budget: {reason}, no vram_budget is configured and the upstream reports no total; "
            "set --vram-budget or vram_budget in the config file"
        )

    def close(self) -> None:
        if self._initialised:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._initialised = False


def _spread_foreign(devices: list[DeviceVram], upstream_resident_bytes: int) -> list[DeviceVram]:
    """Foreign usage when the upstream's pids are unknown: what NVML counts as used beyond what the upstream reports.

    The upstream's own CUDA context is not in its reported sizes, so this
    overstates other processes by a few hundred MB; vram_reserve absorbs that.
    The upstream's bytes are attributed to devices in order (fullest first).
    """
    remaining = max(0, upstream_resident_bytes)
    out = []
    for d in sorted(devices, key=lambda d: -d.used):
        mine = min(remaining, d.used)
        remaining -= mine
        out.append(
            DeviceVram(d.index, d.name, d.total, d.used, d.free, max(0, d.used - mine))
        )
    return sorted(out, key=lambda d: d.index)
