"""The status page's reads of the contract tables, each one statement with parameters, nothing formatted in.

"The last day" is anchored at the newest request rather than at the wall clock,
so a database read after the fact (a demo's, a copy from another host) shows its
own last day instead of an empty one; on a live service the two are the same.
"""

from __future__ import annotations

# The latest forecast run: every model's windows over the horizon.
LATEST_FORECAST = """
SELECT model, epoch(window_start) AS start, epoch(window_end) AS "end", p_any, expected_requests, epoch(made_at) AS made_at
FROM forecasts WHERE made_at = (SELECT max(made_at) FROM forecasts)
ORDER BY model, window_start
"""

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
