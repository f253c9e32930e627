"""Fixtures more than one test module uses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A 4 MB tmpfs: a real ENOSPC without filling the machine's disk. Needs root (mount)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the disk-full path is then untested here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One `prewarm demo --quick` for the session: its output and its kept folder (the demo test reads both,
    the status page's test serves its database)."""
    import sys

    from prewarm.localproc import clean_env

    workdir = tmp_path_factory.mktemp("demo")
    out = subprocess.run([sys.executable, "-m", "prewarm", "demo", "--quick", "--workdir", str(workdir)],
                         capture_output=True, text=True, timeout=600, env=clean_env())
    return out, workdir
