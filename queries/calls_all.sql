-- calls_all: calls for the merged number ALL (every number of the account, as VoiceTrends adds
-- them up), per application and day (window). No phone column: there is only one.
--
-- Answers: "account-wide, per application and day, how many calls and how did they end?"
--
-- Columns: those of calls_by_scope without scope and phone:
--   day, window_start, window_end, days, application,
--   calls, transferred, transfer_failed, self_service, abandoned, visits, errors,
--   transfer_rate, transfer_failed_rate, self_service_rate, abandon_rate, errors_per_call
CREATE OR REPLACE VIEW calls_all AS
SELECT * EXCLUDE (scope, phone)
FROM calls_by_scope
WHERE scope = 'all'
ORDER BY day, application;
