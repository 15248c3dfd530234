-- daily_trend_by_scope: per application and day (window), the calls of every phone in a scope
-- added up: the harvested numbers ('number') or the merged number ALL ('all'). A building
-- block: query daily_trend or daily_trend_all instead.
--
-- Answers: "how do volume, transfers, self-service, abandonment and recognition errors move
-- from day to day?" (the report's charts read it).
--
-- Columns:
--   scope                  VARCHAR  'number' | 'all'
--   application            VARCHAR  application URL
--   day                    DATE     window_start: the day itself in a daily store
--   window_start           DATE     first day of the window (inclusive)
--   window_end             DATE     last day of the window (inclusive)
--   days                   INTEGER  days in the window
--   phones                 BIGINT   phones with data in the window ('all': 1)
--   calls, transferred, transfer_failed, self_service, abandoned, visits, errors
--                          BIGINT   sums of calls_by_scope over the phones
--   transfer_rate, transfer_failed_rate, self_service_rate, abandon_rate, errors_per_call
--                          DOUBLE   as in calls_by_scope (NULL when calls = 0)
CREATE OR REPLACE VIEW daily_trend_by_scope AS
WITH sums AS (
    SELECT
        scope,
        application,
        day,
        window_start,
        window_end,
        days,
        count(DISTINCT phone) AS phones,
        CAST(sum(calls) AS BIGINT) AS calls,
        CAST(sum(transferred) AS BIGINT) AS transferred,
        CAST(sum(transfer_failed) AS BIGINT) AS transfer_failed,
        CAST(sum(self_service) AS BIGINT) AS self_service,
        CAST(sum(abandoned) AS BIGINT) AS abandoned,
        CAST(sum(visits) AS BIGINT) AS visits,
        CAST(sum(errors) AS BIGINT) AS errors
    FROM calls_by_scope
    GROUP BY scope, application, day, window_start, window_end, days
)
SELECT
    *,
    transferred / nullif(calls, 0) AS transfer_rate,
    transfer_failed / nullif(calls, 0) AS transfer_failed_rate,
    self_service / nullif(calls, 0) AS self_service_rate,
    abandoned / nullif(calls, 0) AS abandon_rate,
    errors / nullif(calls, 0) AS errors_per_call
FROM sums;
