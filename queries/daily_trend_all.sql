-- daily_trend_all: per application and day (window), the merged number ALL as VoiceTrends adds
-- up every number of the account. Oldest day first, for charts.
--
-- Answers: "account-wide, how do volume, transfers, self-service, abandonment and recognition
-- errors move from day to day?"
--
-- Columns: those of daily_trend_by_scope without scope:
--   application, day, window_start, window_end, days, phones,
--   calls, transferred, transfer_failed, self_service, abandoned, visits, errors,
--   transfer_rate, transfer_failed_rate, self_service_rate, abandon_rate, errors_per_call
CREATE OR REPLACE VIEW daily_trend_all AS
SELECT * EXCLUDE (scope)
FROM daily_trend_by_scope
WHERE scope = 'all'
ORDER BY day, application;
