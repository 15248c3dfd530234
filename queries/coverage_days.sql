-- coverage_days: per phone (numbers and ALL) and day, whether the store holds that day's data,
-- from the job ledger. One row per phone and day of the span: the --from/--to range when given,
-- else the store's span (the earliest to the latest day any job of any phone covers), so a
-- phone added later shows its earlier days as missing.
--
-- Answers: "which days can I trust for this number, which failed, which were never fetched?"
--
-- Columns:
--   scope          VARCHAR      'number' | 'all' (phone = ALL)
--   phone          VARCHAR      the number, or ALL
--   day            DATE         the day
--   state          VARCHAR      'held': a fetch of the job whose window covers the day is stored
--                               and visible (an empty reply counts: "no calls" is data);
--                               'failed': the job was tried and failed, nothing stored;
--                               'missing': no job covering the day was ever recorded
--   retry_failed   BOOLEAN      held, but the latest re-fetch failed (the older data stays)
--   window_start   DATE         the covering job's window (held: the visible fetch; failed: the
--   window_end     DATE         failed one; NULL when missing)
--   fetched_at     TIMESTAMPTZ  when the visible fetch was received (NULL unless held)
--   reason         VARCHAR      why the latest attempt failed (NULL unless it did)
--
-- How: ledger_current (latest done record per job) and ledger_latest (latest record per job),
-- each window expanded into its days; query_range holds the --from/--to bounds.
CREATE OR REPLACE VIEW coverage_days AS
WITH span AS (
    SELECT
        coalesce(any_value(q.date_from), min(l.window_start)) AS first_day,
        coalesce(any_value(q.date_to), max(l.window_end)) AS last_day
    FROM ledger_files AS l, query_range AS q
),
days AS (
    SELECT CAST(unnest(generate_series(first_day, last_day, INTERVAL 1 DAY)) AS DATE) AS day
    FROM span
    WHERE first_day <= last_day
),
phones AS (
    SELECT DISTINCT phone FROM ledger_files
),
held AS (
    SELECT phone, window_start, window_end, fetched_at,
           CAST(unnest(generate_series(window_start, window_end, INTERVAL 1 DAY)) AS DATE) AS day
    FROM ledger_current
),
latest AS (
    SELECT phone, window_start, window_end, state, reason,
           CAST(unnest(generate_series(window_start, window_end, INTERVAL 1 DAY)) AS DATE) AS day
    FROM ledger_latest
)
SELECT
    CASE WHEN p.phone = 'ALL' THEN 'all' ELSE 'number' END AS scope,
    p.phone,
    d.day,
    CASE
        WHEN h.day IS NOT NULL THEN 'held'
        WHEN t.state = 'failed' THEN 'failed'
        ELSE 'missing'
    END AS state,
    h.day IS NOT NULL AND coalesce(t.state = 'failed', false) AS retry_failed,
    coalesce(h.window_start, CASE WHEN t.state = 'failed' THEN t.window_start END)
        AS window_start,
    coalesce(h.window_end, CASE WHEN t.state = 'failed' THEN t.window_end END) AS window_end,
    h.fetched_at,
    CASE WHEN t.state = 'failed' THEN t.reason END AS reason
FROM phones AS p
CROSS JOIN days AS d
LEFT JOIN held AS h ON h.phone = p.phone AND h.day = d.day
LEFT JOIN latest AS t ON t.phone = p.phone AND t.day = d.day
ORDER BY p.phone, d.day;
