"""Synthetic workload: reproducible, in the trace format, with the structure the forecaster must learn."""

from __future__ import annotations

import numpy as np
import pandas as pd

from prewarm.catalog import default_entry
from prewarm.cli import main
from prewarm.forecast import load_trace
from prewarm.workload import EPOCH_START, synth


def test_same_seed_same_trace_other_seed_differs() -> None:
    a = synth(models=8, users=50, days=2, seed=3)
    b = synth(models=8, users=50, days=2, seed=3)
    c = synth(models=8, users=50, days=2, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not (len(a) == len(c) and a["ts"].equals(c["ts"]))


def test_columns_sorted_and_inside_the_span() -> None:
    df = synth(models=5, users=30, days=3, seed=1)
    assert list(df.columns) == ["ts", "model", "user"]
    ts = df["ts"].to_numpy()
    assert np.all(np.diff(ts) >= 0)
    assert ts[0] >= EPOCH_START and ts[-1] < EPOCH_START + 3 * 86400
    assert df["user"].notna().all() and df["model"].notna().all()


def test_zipf_skew_and_sticky_users() -> None:
    df = synth(models=30, users=300, days=7, seed=2)
    share = df["model"].value_counts(normalize=True)
    assert share.iloc[0] > 4 * share.median()
    per_user = df.groupby("user")["model"].nunique()
    assert per_user.median() <= 4


def test_weekends_and_nights_are_quieter() -> None:
    df = synth(models=10, users=200, days=7, seed=5)
    day = ((df["ts"] - EPOCH_START) // 86400).astype(int)
    per_day = day.value_counts().sort_index()
    assert per_day.loc[[5, 6]].mean() < 0.5 * per_day.loc[[0, 1, 2, 3, 4]].mean()  # trace starts on a Monday


def test_some_models_appear_late() -> None:
    df = synth(models=40, users=300, days=10, seed=7)
    first = df.groupby("model")["ts"].min() - EPOCH_START
    assert (first > 3 * 86400).any()


def test_model_names_get_sizes_from_the_catalog_rule() -> None:
    df = synth(models=45, users=40, days=1, seed=0)
    names = df["model"].unique()
    assert all(":" in m for m in names)
    sized = [m for m in names if default_entry(m).size_bytes != 5 * 10**9]
    assert len(sized) >= 0.8 * len(names)


def test_cli_writes_a_trace_the_replay_reader_loads(tmp_path) -> None:
    out = tmp_path / "w.parquet"
    assert main(["workload", "synth", "--models", "4", "--users", "20", "--days", "1", "--seed", "9",
                 "-o", str(out)]) == 0
    back = load_trace(out)
    expected = synth(models=4, users=20, days=1, seed=9)
    assert len(back) == len(expected)
    np.testing.assert_allclose(back["ts"].to_numpy(), expected["ts"].to_numpy())
