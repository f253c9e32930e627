"""Run folders under ``models_dir``: one per training run, a ``latest`` pointer, the last N kept.

``latest`` is a small text file holding the run id, not a symlink: it works on
every file system, and replacing it is one atomic rename, so a reader never sees
a half-written pointer. A run that failed its backtest still gets a folder (its
manifest explains why) but never becomes ``latest``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, cast

from prewarm.forecast.model import MANIFEST_FILE, HeatForecaster

LATEST = "latest"


def new_run_id(now: float | None = None) -> str:
    """Sortable by time (UTC, to the second), unique with a short random suffix."""
    t = time.gmtime(time.time() if now is None else now)
    return time.strftime("%Y%m%dT%H%M%SZ", t) + "-" + uuid.uuid4().hex[:6]


def run_dirs(models_dir: Path) -> list[Path]:
    """Run folders, oldest first."""
    if not models_dir.is_dir():
        return []
    return sorted(p for p in models_dir.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file())


def latest_run(models_dir: Path) -> Path | None:
    pointer = Path(models_dir) / LATEST
    if not pointer.is_file():
        return None
    run = Path(models_dir) / pointer.read_text(encoding="utf-8").strip()
    return run if (run / MANIFEST_FILE).is_file() else None


def set_latest(models_dir: Path, run_dir: Path) -> None:
    pointer = Path(models_dir) / LATEST
    tmp = pointer.with_name(LATEST + f".tmp{os.getpid()}")
    tmp.write_text(run_dir.name + "\n", encoding="utf-8")
    tmp.replace(pointer)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((Path(run_dir) / MANIFEST_FILE).read_text(encoding="utf-8")))


def load_latest(models_dir: str | Path) -> HeatForecaster:
    run = latest_run(Path(models_dir))
    if run is None:
        raise FileNotFoundError(f"no trained forecaster in {models_dir} (run `prewarm train` first)")
    return HeatForecaster.load(run)


def prune(models_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` runs; the run ``latest`` points at is never deleted."""
    runs = run_dirs(models_dir)
    current = latest_run(models_dir)
    doomed = [r for r in runs[: max(len(runs) - max(keep, 1), 0)] if current is None or r != current]
    for r in doomed:
        shutil.rmtree(r, ignore_errors=True)
    return doomed
