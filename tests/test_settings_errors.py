"""Bad settings: one line naming the setting, exit 1, before the upstream, NVML or the database is touched.

Each case runs `prewarm serve` in-process with the bad value in the environment,
an upstream nobody listens on and a database path that must still not exist
afterwards: a serve that got as far as the database or the upstream would leave
the file or fail with another message.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from prewarm.cli import main

BAD = [
    ({"PREWARM_WINDOW": "0"}, "window"),
    ({"PREWARM_HORIZON_WINDOWS": "-3"}, "horizon_windows"),
    ({"PREWARM_TRAIN_CRON": "bogus"}, "train_cron"),
    ({"PREWARM_PLAN_KEEP_ALIVE": "forever"}, "-1 means forever"),
    ({"PREWARM_ROOM_WAIT": "-5"}, "room_wait"),
    ({"PREWARM_VRAM_BUDGET": "16"}, "vram_budget"),
    ({"PREWARM_UPSTREAM": "notaurl"}, "upstream"),
    ({"PREWARM_UPSTREAM_KIND": "vllm"}, "vllm.servers"),
    ({"PREWARM_VLLM_SLEEP_LEVEL": "7"}, "vllm_sleep_level"),
    ({"PREWARM_ADMIN_TOKEN": "   "}, "admin_token"),
    ({"PREWARM_SQL_TIMEOUT": "0"}, "sql_timeout"),
    ({"PREWARM_RECENCY_HALF_LIFE": "0s"}, "recency_half_life"),
    ({"PREWARM_CATALOG": "/nonexistent/catalog.csv"}, "catalog"),
]


@pytest.mark.parametrize("env,named", BAD, ids=[next(iter(e)) + "=" + next(iter(e.values())) for e, _ in BAD])
def test_a_bad_setting_is_one_line_before_anything_is_touched(env: dict[str, str], named: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    db = tmp_path / "never.duckdb"
    rc = main(["serve", "--listen", "127.0.0.1:0", "--db", str(db)] +
              ([] if "PREWARM_UPSTREAM" in env else ["--upstream", "http://127.0.0.1:9"]))
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and named in err, err
    assert not db.exists() and not list(tmp_path.iterdir())


def test_a_busy_port_is_one_line_and_leaves_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        db = tmp_path / "never.duckdb"
        rc = main(["serve", "--listen", f"127.0.0.1:{port}", "--db", str(db), "--upstream", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "cannot listen" in err and str(port) in err, err
    assert not list(tmp_path.iterdir())


def test_every_cli_option_has_help() -> None:
    import argparse

    from prewarm.cli import build_parser

    def parsers(p: argparse.ArgumentParser):
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    missing = [f"{p.prog} {a.option_strings or a.dest}" for p in parsers(build_parser()) for a in p._actions
               if not isinstance(a, argparse._SubParsersAction) and a.dest != "help" and not (a.help or "").strip()]
    assert missing == []


def test_config_example_lists_every_setting_and_parses_back_to_the_defaults(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses
    import re

    from prewarm.config import Settings, load_settings
    from prewarm.config_example import MEANINGS

    assert set(MEANINGS) == {f.name for f in dataclasses.fields(Settings)}
    assert main(["config", "--example"]) == 0
    text = capsys.readouterr().out
    uncommented = "\n".join(re.sub(r"^# (?=[a-z_.]+ = )", "", line) for line in text.splitlines()
                            if "(unset by default)" not in line)
    path = tmp_path / "prewarm.toml"
    path.write_text(uncommented)
    assert load_settings(path, environ={}) == Settings()
