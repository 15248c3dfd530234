-- calls_summary_by_scope: calls_by_scope added up over every window in scope (all of the store,
-- or the --from/--to range), per phone (numbers AND ALL) and application. A building block:
-- query calls_summary (numbers) or calls_all_summary (the merged number) instead.
--
-- Answers: "over the period, how many calls did each line/application take, and how did they
-- end?"
--
-- Columns:
--   scope                  VARCHAR  'number' | 'all'
--   phone                  VARCHAR  the number, or ALL
--   application            VARCHAR  application URL
--   first_day              DATE     first day of the earliest window with data
--   last_day               DATE     last day of the latest window with data
--   days                   BIGINT   days with data (sum of the windows' lengths)
--   calls, transferred, transfer_failed, self_service, abandoned, errors
--                          BIGINT   sums of the columns of calls_by_scope
--   calls_per_day          DOUBLE   calls / days
--   transfer_rate, transfer_failed_rate, self_service_rate, abandon_rate, errors_per_call
--                          DOUBLE   as in calls_by_scope, over the period (NULL when calls = 0)
CREATE OR REPLACE VIEW calls_summary_by_scope AS
WITH sums AS (
    SELECT
        scope,
        phone,
        application,
        min(window_start) AS first_day,
        max(window_end) AS last_day,
        CAST(sum(days) AS BIGINT) AS days,
        CAST(sum(calls) AS BIGINT) AS calls,
        CAST(sum(transferred) AS BIGINT) AS transferred,
        CAST(sum(transfer_failed) AS BIGINT) AS transfer_failed,
        CAST(sum(self_service) AS BIGINT) AS self_service,
        CAST(sum(abandoned) AS BIGINT) AS abandoned,
        CAST(sum(errors) AS BIGINT) AS errors
    FROM calls_by_scope
    GROUP BY scope, phone, application
)
SELECT
    *,
    calls / nullif(days, 0) AS calls_per_day,
    transferred / nullif(calls, 0) AS transfer_rate,
    transfer_failed / nullif(calls, 0) AS transfer_failed_rate,
    self_service / nullif(calls, 0) AS self_service_rate,
    abandoned / nullif(calls, 0) AS abandon_rate,
    errors / nullif(calls, 0) AS errors_per_call
FROM sums;
