"""The DuckDB schema: the tables and views users query with SQL (a DESIGN.md contract).

Migrations are a list of SQL scripts; ``schema_version`` records how many ran, so
an older database file is brought forward on open and never rebuilt.
"""

from __future__ import annotations

import duckdb

MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS requests (
        id VARCHAR,
        ts_start TIMESTAMPTZ,
        ts_end TIMESTAMPTZ,
        model VARCHAR,
        user_id VARCHAR,
        api VARCHAR,
        endpoint VARCHAR,
        stream BOOLEAN,
        status INTEGER,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        load_ms DOUBLE,
        ttft_ms DOUBLE,
        total_ms DOUBLE,
        cold BOOLEAN,
        upstream VARCHAR,
        error VARCHAR
    );
    CREATE TABLE IF NOT EXISTS forecasts (
        run_id VARCHAR,
        made_at TIMESTAMPTZ,
        model VARCHAR,
        window_start TIMESTAMPTZ,
        window_end TIMESTAMPTZ,
        expected_requests DOUBLE,
        p_any DOUBLE,
        lower DOUBLE,
        upper DOUBLE
    );
    CREATE TABLE IF NOT EXISTS training_runs (
        run_id VARCHAR,
        started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ,
        n_models INTEGER,
        params JSON,
        metrics JSON,
        artifact_path VARCHAR
    );
    CREATE TABLE IF NOT EXISTS prewarm_actions (
        ts TIMESTAMPTZ,
        model VARCHAR,
        action VARCHAR,
        reason VARCHAR,
        vram_before BIGINT,
        vram_after BIGINT,
        duration_ms DOUBLE,
        ok BOOLEAN,
        error VARCHAR
    );
    CREATE TABLE IF NOT EXISTS model_catalog (
        model VARCHAR PRIMARY KEY,
        size_bytes BIGINT,
        load_ms_p50 DOUBLE,
        source VARCHAR,
        updated_at TIMESTAMPTZ
    );
    CREATE OR REPLACE VIEW v_heat AS
        SELECT time_bucket(INTERVAL 5 MINUTE, ts_start) AS window_start,
               time_bucket(INTERVAL 5 MINUTE, ts_start) + INTERVAL 5 MINUTE AS window_end,
               model,
               count(*) AS requests,
               count(*) FILTER (WHERE cold) AS cold_starts,
               count(DISTINCT user_id) AS users
        FROM requests
        WHERE model IS NOT NULL
        GROUP BY ALL;
    CREATE OR REPLACE VIEW v_cold_starts AS
        SELECT ts_start, model, user_id, api, endpoint, load_ms, ttft_ms, total_ms, status
        FROM requests
        WHERE cold;
    CREATE OR REPLACE VIEW v_forecast_vs_actual AS
        WITH latest AS (
            SELECT * FROM forecasts
            WHERE made_at <= window_start
            QUALIFY row_number() OVER (PARTITION BY model, window_start ORDER BY made_at DESC) = 1
        )
        SELECT f.model, f.window_start, f.window_end, f.run_id, f.made_at,
               f.expected_requests, f.p_any, f.lower, f.upper,
               count(r.id) AS actual_requests,
               count(r.id) > 0 AS actual_any
        FROM latest f
        LEFT JOIN requests r
          ON r.model = f.model AND r.ts_start >= f.window_start AND r.ts_start < f.window_end
        GROUP BY ALL;
    """,
    # Pins set through the API outlive a restart: each pin and unpin is a row of pin_events (the history),
    # and `pins` is what is pinned now (the config file's pins are added to it at start, not written here).
    """
    CREATE TABLE IF NOT EXISTS pin_events (
        ts TIMESTAMPTZ,
        model VARCHAR,
        pinned BOOLEAN,
        source VARCHAR
    );
    CREATE OR REPLACE VIEW pins AS
        SELECT model, ts AS pinned_at, source FROM pin_events
        QUALIFY row_number() OVER (PARTITION BY model ORDER BY ts DESC) = 1 AND pinned;
    """,
]


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Bring the schema up to date; returns the version now in the file."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, applied_at TIMESTAMPTZ)")
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    current = int(row[0]) if row else 0
    for version, script in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        con.execute("BEGIN")
        try:
            con.execute(script)
            con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
