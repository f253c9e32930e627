"""gpu: the real no-driver path on this machine, and NVML arithmetic through a stand-in module.

The stand-in (FakeNvml) replaces the NVIDIA C library, which cannot be loaded on
a machine without a driver; it has the same function names pynvml exposes and
returns fixed memory figures, so the budget arithmetic and the fallbacks on NVML
errors can be checked.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from prewarm.config import ConfigError, Settings
from prewarm.gpu import GpuMonitor

GB = 10**9


class FakeNvml:
    class NVMLError(Exception):
        pass

    def __init__(self, devices: list[dict], fail_init: bool = False):
        self.devices = devices
        self.fail_init = fail_init
        self.fail_reads = False
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self):
        pass

    def _check(self):
        if self.fail_reads:
            raise self.NVMLError("GPU is lost")

    def nvmlDeviceGetCount(self):
        self._check()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        self._check()
        return i

    def nvmlDeviceGetMemoryInfo(self, h):
        self._check()
        d = self.devices[h]
        return SimpleNamespace(total=d["total"], used=d["used"], free=d["total"] - d["used"])

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA Fake 24GB"

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        self._check()
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in self.devices[h]["procs"]]


def one_gpu() -> FakeNvml:
    # upstream pid 100 holds 10 GB, pid 200 (someone else's job) 3 GB, pid 300 reports no figure
    return FakeNvml([{"total": 24 * GB, "used": 13 * GB + 300 * 10**6, "procs": [(100, 10 * GB), (200, 3 * GB), (300, None)]}])


def test_no_driver_here_logs_once_and_uses_configured_budget(caplog):
    caplog.set_level(logging.WARNING, logger="prewarm.gpu")
    mon = GpuMonitor(Settings(vram_budget=16 * GB))
    assert mon.read() is None
    b1 = mon.budget()
    b2 = mon.budget(upstream_resident_bytes=5 * GB, upstream_total=24 * GB)
    assert (b1.bytes, b1.source) == (16 * GB, "config")
    assert (b2.bytes, b2.source) == (16 * GB, "config")
    assert not mon.available
    lines = [r.getMessage() for r in caplog.records if r.name == "prewarm.gpu"]
    assert len(lines) == 1
    assert "NVML" in lines[0] and "configured vram_budget" in lines[0]


def test_no_driver_falls_back_to_upstream_total_then_refuses_to_guess():
    mon = GpuMonitor(Settings())
    b = mon.budget(upstream_total=24 * GB)
    assert (b.bytes, b.source) == (24 * GB, "upstream")
    assert "NVML" in b.detail
    with pytest.raises(ConfigError, match="no VRAM budget"):
        mon.budget(upstream_total=None)


def test_nvml_budget_subtracts_reserve_and_other_processes_by_pid():
    mon = GpuMonitor(Settings(vram_reserve=512 * 10**6), nvml=one_gpu(), upstream_pids=[100])
    r = mon.read()
    assert r is not None and r.total == 24 * GB and r.foreign == 3 * GB
    assert r.devices[0].name == "NVIDIA Fake 24GB"
    b = mon.budget()
    assert (b.bytes, b.source) == (24 * GB - 512 * 10**6 - 3 * GB, "nvml")


def test_nvml_budget_without_pids_compares_with_upstream_sizes():
    mon = GpuMonitor(Settings(vram_reserve=0), nvml=one_gpu())
    # NVML used 13.3 GB, upstream reports 10 GB of models: 3.3 GB is someone else's
    b = mon.budget(upstream_resident_bytes=10 * GB)
    assert (b.bytes, b.source) == (24 * GB - 3 * GB - 300 * 10**6, "nvml")


def test_configured_budget_wins_when_smaller_and_nvml_when_larger():
    small = GpuMonitor(Settings(vram_budget=8 * GB, vram_reserve=0), nvml=one_gpu(), upstream_pids=[100]).budget()
    assert (small.bytes, small.source) == (8 * GB, "config")
    big = GpuMonitor(Settings(vram_budget=80 * GB, vram_reserve=0), nvml=one_gpu(), upstream_pids=[100]).budget()
    assert (big.bytes, big.source) == (21 * GB, "nvml")


def test_devices_are_summed_or_one_is_chosen():
    two = FakeNvml(
        [{"total": 24 * GB, "used": 2 * GB, "procs": []}, {"total": 48 * GB, "used": 0, "procs": [(7, 5 * GB)]}]
    )
    summed = GpuMonitor(Settings(vram_reserve=0), nvml=two, upstream_pids=[]).budget()
    assert summed.bytes == 72 * GB - 5 * GB
    second = GpuMonitor(Settings(vram_reserve=0, gpu_index=1), nvml=two, upstream_pids=[]).budget()
    assert second.bytes == 43 * GB
    with pytest.raises(ConfigError, match="gpu_index 5"):
        GpuMonitor(Settings(gpu_index=5), nvml=two).read()


def test_nvml_error_mid_run_falls_back_and_says_so(caplog):
    caplog.set_level(logging.WARNING, logger="prewarm.gpu")
    fake = one_gpu()
    mon = GpuMonitor(Settings(vram_budget=10 * GB, vram_reserve=0), nvml=fake, upstream_pids=[100])
    assert mon.budget().source == "config"  # 10 GB < 21 GB from NVML
    fake.fail_reads = True
    b = mon.budget()
    assert (b.bytes, b.source) == (10 * GB, "config") and "GPU is lost" in b.detail
    assert any("GPU is lost" in r.getMessage() for r in caplog.records)
    fake.fail_reads = False
    assert mon.read() is not None
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_driver_missing_at_start_is_not_retried_every_poll():
    fake = FakeNvml([], fail_init=True)
    mon = GpuMonitor(Settings(vram_budget=GB), nvml=fake)
    for _ in range(5):
        assert mon.read() is None
    assert fake.inits == 1
