"""prewarm's own reads of the contract tables: the prewarmer's, the plan command's and the status page's.

Each is one statement with parameters, nothing formatted in (but
`recent_requests_sql`'s float, for a reader that takes no parameters). "The last
day" is anchored at the newest request rather than at the wall clock,
so a database read after the fact (a demo's, a copy from another host) shows its
own last day instead of an empty one; on a live service the two are the same.
"""

from __future__ import annotations

# The latest forecast run: every model's windows over the horizon (what the planner reads and the page shows).
LATEST_FORECAST = """
SELECT model, epoch(window_start) AS window_start, epoch(window_end) AS window_end, p_any, expected_requests,
       epoch(made_at) AS made_at
FROM forecasts WHERE made_at = (SELECT max(made_at) FROM forecasts)
ORDER BY model, window_start
"""

# The requests that seed each model's decayed request count at start: those of the last RECENT_HALF_LIVES
# half-lives (an older request weighs under 1/256).
RECENT_HALF_LIVES = 8


def recent_requests_sql(now: float, half_life_s: float) -> str:
    """The log's requests of the last RECENT_HALF_LIVES half-lives before ``now`` (epoch seconds), oldest first."""
    since = float(now) - RECENT_HALF_LIVES * half_life_s
    return (f"SELECT model, epoch(ts_start) AS ts FROM requests WHERE model IS NOT NULL "
            f"AND status IS DISTINCT FROM 404 AND ts_start >= to_timestamp({since!r}) ORDER BY ts_start")


# Each model's share of the user's ($user) answered requests over the week (of all of them, not only the rows kept).
USUAL_MODELS = """
SELECT model, count(*) / sum(count(*)) OVER () AS share FROM requests
WHERE user_id = $user AND model IS NOT NULL AND status = 200 AND ts_start >= now() - INTERVAL 7 DAY
GROUP BY model ORDER BY share DESC, model LIMIT 5
"""

# Each model's median load time: cold requests' measured loads and the prewarmer's own loads.
LOAD_MS = """
SELECT model, median(load_ms) AS load_ms_p50, count(*) AS n FROM (
    SELECT model, load_ms FROM requests WHERE cold AND load_ms IS NOT NULL AND model IS NOT NULL
    UNION ALL
    SELECT model, duration_ms AS load_ms FROM prewarm_actions WHERE action = 'load' AND ok AND duration_ms IS NOT NULL
) GROUP BY model
"""

# The pins set as the pin_events log leaves it.
PINS = "SELECT model FROM pins"

# What happened per model and window from `since` (epoch s) on, in windows of `window` s: [window, window, since].
REQUESTS_PER_WINDOW = """
SELECT model, floor(epoch(ts_start) / $window) * $window AS start, count(*) AS requests,
       count(*) FILTER (WHERE cold) AS cold
FROM requests WHERE model IS NOT NULL AND epoch(ts_start) >= $since
GROUP BY ALL ORDER BY model, start
"""

# The first and the last request of the log's last day.
LAST_DAY_SPAN = """
SELECT epoch(min(ts_start)) AS since, epoch(max(ts_start)) AS until
FROM requests
WHERE model IS NOT NULL
  AND ts_start > (SELECT max(ts_start) FROM requests WHERE model IS NOT NULL) - INTERVAL 1 DAY
"""

# Requests, cold starts and time to first token per bucket of `bucket` s from `since` on.
LAST_DAY = """
SELECT floor(epoch(ts_start) / $bucket) * $bucket AS start, count(*) AS requests,
       count(*) FILTER (WHERE cold) AS cold,
       quantile_cont(ttft_ms, 0.5) AS ttft_p50_ms, quantile_cont(ttft_ms, 0.95) AS ttft_p95_ms
FROM requests WHERE model IS NOT NULL AND epoch(ts_start) >= $since
GROUP BY ALL ORDER BY start
"""

LATEST_ACTIONS = """
SELECT epoch(ts) AS ts, model, action, reason, ok, error, duration_ms, vram_after
FROM prewarm_actions ORDER BY ts DESC LIMIT $limit
"""

LATEST_TRAINING_RUNS = """
SELECT run_id, epoch(started_at) AS started_at, epoch(finished_at) AS finished_at, n_models, metrics
FROM training_runs ORDER BY started_at DESC LIMIT $limit
"""
