-- coverage: per phone (numbers and ALL), how much of the span the store holds, from the job
-- ledger (see coverage_days for the span: the --from/--to range, else the store's span).
--
-- Answers: "is the data complete enough to trust the trends, and what should I re-fetch?"
-- (`harvester pull --retry-failed` for failed days, a pull over the range for missing ones).
--
-- Columns:
--   scope             VARCHAR      'number' | 'all' (phone = ALL)
--   phone             VARCHAR      the number, or ALL
--   first_day         DATE         first day of the span
--   last_day          DATE         last day of the span
--   days              BIGINT       days in the span
--   days_held         BIGINT       days whose data is stored (state 'held' in coverage_days)
--   days_failed       BIGINT       days whose job failed with nothing stored
--   days_missing      BIGINT       days no job ever covered
--   days_retry_failed BIGINT       held days whose latest re-fetch failed (older data kept)
--   held_share        DOUBLE       days_held / days (NULL when the span is empty)
--   first_held        DATE         first held day (NULL when none)
--   last_held         DATE         last held day (NULL when none)
--   last_fetched_at   TIMESTAMPTZ  the newest visible fetch covering the span
CREATE OR REPLACE VIEW coverage AS
SELECT
    scope,
    phone,
    min(day) AS first_day,
    max(day) AS last_day,
    count(*) AS days,
    count(*) FILTER (WHERE state = 'held') AS days_held,
    count(*) FILTER (WHERE state = 'failed') AS days_failed,
    count(*) FILTER (WHERE state = 'missing') AS days_missing,
    count(*) FILTER (WHERE retry_failed) AS days_retry_failed,
    count(*) FILTER (WHERE state = 'held') / nullif(count(*), 0) AS held_share,
    min(day) FILTER (WHERE state = 'held') AS first_held,
    max(day) FILTER (WHERE state = 'held') AS last_held,
    max(fetched_at) AS last_fetched_at
FROM coverage_days
GROUP BY scope, phone
ORDER BY phone;
