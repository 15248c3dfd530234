-- daily_trend: per application and day (window), every harvested phone number added up (never
-- the ALL rows; the merged number is daily_trend_all). Oldest day first, for charts.
--
-- Answers: "how do volume, transfers, self-service, abandonment and recognition errors move
-- from day to day?"
--
-- Columns: those of daily_trend_by_scope without scope:
--   application, day, window_start, window_end, days, phones,
--   calls, transferred, transfer_failed, self_service, abandoned, visits, errors,
--   transfer_rate, transfer_failed_rate, self_service_rate, abandon_rate, errors_per_call
CREATE OR REPLACE VIEW daily_trend AS
SELECT * EXCLUDE (scope)
FROM daily_trend_by_scope
WHERE scope = 'number'
ORDER BY day, application;
